"""Numerical checks of invertible layers, shared by the tests and `experiments/flow_check.py`.

The references are independent of the layers' own log-det code: a float64 Jacobian from
`jax.jacfwd` and its `slogdet`, and the plain round trip `G⁻¹(G(x))`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


def cast_floats(module: nnx.Module, dtype) -> nnx.Module:
    """A copy of `module` whose floating-point parameters are `dtype` (float64 needs x64)."""
    graph, state = nnx.split(module)
    state = jax.tree.map(
        lambda v: v.astype(dtype) if jnp.issubdtype(v.dtype, jnp.floating) else v, state)
    return nnx.merge(graph, state)


def perturb(module: nnx.Module, key: jax.Array, *, relative: float = 0.5,
            zero_std: float = 0.05) -> nnx.Module:
    """A copy of `module` with Gaussian noise of `relative` × each parameter tensor's RMS
    added to it (`zero_std` where the tensor is all zero, e.g. zero-initialised layers)."""
    graph, params, rest = nnx.split(module, nnx.Param, ...)
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(key, len(leaves))
    noisy = []
    for leaf, k in zip(leaves, keys, strict=True):
        rms = jnp.sqrt(jnp.mean(jnp.square(leaf)))
        std = jnp.where(rms > 0, relative * rms, zero_std)
        noisy.append(leaf + std * jax.random.normal(k, leaf.shape, leaf.dtype))
    return nnx.merge(graph, jax.tree.unflatten(treedef, noisy), rest)


def brute_force_logdet(layer: nnx.Module, x: jax.Array) -> np.ndarray:
    """`log|det ∂layer(x)_b/∂x_b|` per example from a float64 Jacobian: `[B]` NumPy.

    Runs the whole layer in float64 (parameters included), so the reference carries none of
    the layer's float32 rounding. One compiled program serves every example. Cost
    O(B (N D)³): small sizes only.
    """
    with jax.enable_x64(True):
        graph, state = nnx.split(cast_floats(layer, jnp.float64))
        x64 = jnp.asarray(np.asarray(x, np.float64))

        @jax.jit
        def slogdet(state, b):
            layer64 = nnx.merge(graph, state)

            def f(flat):
                xb = x64.at[b].set(flat.reshape(x64.shape[1:]))
                return layer64(xb)[0][b].reshape(-1)

            return jnp.linalg.slogdet(jax.jacfwd(f)(x64[b].reshape(-1)))

        out = []
        for b in range(x64.shape[0]):
            sign, logabs = slogdet(state, b)
            if sign == 0:
                raise FloatingPointError(f"singular Jacobian for batch element {b}")
            out.append(float(logabs))
        return np.asarray(out)


def relative_reconstruction_error(layer: nnx.Module, x: jax.Array, *, jit: bool = True) -> float:
    """`‖G⁻¹(G(x)) − x‖ / ‖x‖`, computed in the dtype of `x` and of the layer."""
    graph, state = nnx.split(layer)

    def round_trip(state, x):
        model = nnx.merge(graph, state)
        return model.inverse(model(x)[0])[0]

    fn = jax.jit(round_trip) if jit else round_trip
    x_rec = fn(state, x)
    return float(jnp.linalg.norm((x_rec - x).astype(jnp.float64 if x.dtype == jnp.float64
                                                      else jnp.float32))
                 / jnp.linalg.norm(x.astype(jnp.float32)))
