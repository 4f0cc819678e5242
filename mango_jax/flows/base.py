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


TRIANGULAR_LEAF = 16


def solve_upper_triangular(a: jax.Array, b: jax.Array, *,
                           leaf: int = TRIANGULAR_LEAF) -> jax.Array:
    """`a⁻¹ b` for batches of upper-triangular `a: [..., n, n]` and `b: [..., n, k]`.

    Recursive block back-substitution (the blocked algorithm of LAPACK's trsm) at full
    precision: off-diagonal blocks are applied by matrix products and only diagonal blocks of
    ≤ `leaf` rows go to `triangular_solve`. Same result to rounding as one solve, but XLA's CPU
    solve of a batch runs at about 1 GFLOP/s once n ≥ 32, while this form runs at matmul speed
    (measured 10-30× faster for `[16, 256, 256]` matrices with 48 right-hand sides).
    """
    n = a.shape[-1]
    if n <= leaf:
        with jax.default_matmul_precision("highest"):
            return jax.lax.linalg.triangular_solve(a, b, left_side=True, lower=False)
    h = n // 2
    x2 = solve_upper_triangular(a[..., h:, h:], b[..., h:, :], leaf=leaf)
    rest = b[..., :h, :] - jnp.matmul(a[..., :h, h:], x2, precision=HIGHEST)
    x1 = solve_upper_triangular(a[..., :h, :h], rest, leaf=leaf)
    return jnp.concatenate([x1, x2], axis=-2)


def invert_upper_triangular(a: jax.Array) -> jax.Array:
    """`a⁻¹` for batches of upper-triangular `a: [..., n, n]`, by recursive block inversion.

    `[[A, B], [0, D]]⁻¹ = [[A⁻¹, −A⁻¹ B D⁻¹], [0, D⁻¹]]`, recursing down to 1 × 1 blocks
    (reciprocals), with both diagonal halves of every level inverted in one batched call: about
    log₂ n pairs of matrix products and no LAPACK call. On XLA:CPU that is several times faster
    than a triangular solve against the identity (5.5 ms for n = 512), and it avoids a jaxlib
    deadlock: two batched LAPACK solves that XLA runs concurrently each wait for the other's
    threads (seen with 2 CPU threads). Same result to rounding for well-conditioned `a`.
    """
    n = a.shape[-1]
    if n == 1:
        return 1.0 / a
    h = n // 2
    top, bottom = a[..., :h, :h], a[..., h:, h:]
    if n % 2:
        top_inv, bottom_inv = invert_upper_triangular(top), invert_upper_triangular(bottom)
    else:
        top_inv, bottom_inv = invert_upper_triangular(jnp.stack([top, bottom]))
    corner = -jnp.matmul(jnp.matmul(top_inv, a[..., :h, h:], precision=HIGHEST), bottom_inv,
                         precision=HIGHEST)
    zeros = jnp.zeros(a.shape[:-2] + (n - h, h), a.dtype)
    return jnp.concatenate([jnp.concatenate([top_inv, corner], axis=-1),
                            jnp.concatenate([zeros, bottom_inv], axis=-1)], axis=-2)


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


def rematerialised(fn, layer, x):
    """`fn(layer, x)`, keeping only `x` for the backward pass, which recomputes the rest.

    Unlike `jax.checkpoint` / `nnx.remat`, this saves memory on XLA:CPU too: there the
    optimisation barriers that keep the recomputation in place are removed before scheduling,
    and the recomputation of every block is hoisted to the start of the backward pass, so a
    remat step measured the same peak memory as a plain one. Here the recomputation reads `x`
    through an exact `+ 0` that depends on the incoming cotangent (whether it holds a NaN), so
    it cannot start before the backward pass reaches this layer, on any backend.

    Gradients flow to `x` and the layer's `nnx.Param`s; `fn` may not update other state (flow
    layers only read their parameters).
    """
    graphdef, params, rest = nnx.split(layer, nnx.Param, ...)

    def apply(params, x):
        return fn(nnx.merge(graphdef, params, rest), x)

    @jax.custom_vjp
    def run(params, x):
        return apply(params, x)

    def forward(params, x):
        return apply(params, x), (params, x)

    def backward(saved, cotangent):
        params, x = saved
        probe = sum(jnp.sum(c.astype(jnp.float32)) for c in jax.tree.leaves(cotangent))
        x = x + jnp.isnan(probe).astype(x.dtype) * 0
        return jax.vjp(apply, params, x)[1](cotangent)

    run.defvjp(forward, backward)
    return run(params, x)


class Sequential(InvertibleLayer):
    """Composition `layers[-1] ∘ … ∘ layers[0]`; the inverse runs the layers in reverse.

    With `remat=True` each child is rematerialised (`rematerialised`), so a training step keeps
    only the child boundaries alive and recomputes the inside during the backward pass.
    """

    def __init__(self, layers, *, remat: bool = False):
        self.layers = nnx.List(layers)
        self.remat = remat

    def _run(self, fn, layers, x):
        total = zero_logdet(x)
        for layer in layers:
            x, logdet = rematerialised(fn, layer, x) if self.remat else fn(layer, x)
            total = total + logdet.astype(total.dtype)
        return x, total

    def __call__(self, x):
        return self._run(_call, self.layers, x)

    def inverse(self, y):
        return self._run(_inverse, list(self.layers)[::-1], y)
