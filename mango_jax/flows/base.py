"""The contract every invertible layer in mango_jax keeps.

    y, logdet = layer(x)              # x, y: [B, N, D]; logdet: [B]
    x, logdet_inv = layer.inverse(y)  # logdet_inv == -logdet

Tokens are laid out modality A first, then modality B (N = M + K). Layers compute in the
dtype of their inputs and parameters (float64 works under x64); log-determinants are
accumulated in at least float32 so that bf16 activations never round the likelihood.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

HIGHEST = jax.lax.Precision.HIGHEST


def logdet_dtype(dtype) -> jnp.dtype:
    """float32 for low-precision activations, float64 when the data is float64."""
    return jnp.promote_types(dtype, jnp.float32)


def zero_logdet(x: jax.Array) -> jax.Array:
    """A `[B]` zero log-det in the accumulation dtype of `x`."""
    return jnp.zeros(x.shape[:1], logdet_dtype(x.dtype))


class InvertibleLayer(nnx.Module):
    """Base class: subclasses implement `__call__` and `inverse` with the contract above."""

    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        raise NotImplementedError(f"{type(self).__name__} must implement __call__")

    def inverse(self, y: jax.Array) -> tuple[jax.Array, jax.Array]:
        raise NotImplementedError(f"{type(self).__name__} must implement inverse")


def _call(layer, x):
    return layer(x)


def _inverse(layer, y):
    return layer.inverse(y)


class Sequential(InvertibleLayer):
    """Composition `layers[-1] ∘ … ∘ layers[0]`; the inverse runs the layers in reverse.

    With `remat=True` each child is rematerialised (`nnx.remat`), so a training step keeps
    only the child boundaries alive and recomputes the inside during the backward pass.
    """

    def __init__(self, layers, *, remat: bool = False):
        self.layers = nnx.List(layers)
        self.remat = remat

    def _run(self, fn, layers, x):
        if self.remat:
            fn = nnx.remat(fn)
        total = zero_logdet(x)
        for layer in layers:
            x, logdet = fn(layer, x)
            total = total + logdet.astype(total.dtype)
        return x, total

    def __call__(self, x):
        return self._run(_call, self.layers, x)

    def inverse(self, y):
        return self._run(_inverse, list(self.layers)[::-1], y)
