"""Learnable inter-modality cross-attention (LICA), paper section 3.2.

Tokens are mixed by a learnable invertible `N × N` matrix in Glow's LU form
`W = P L (U + diag(s))`, split in halves, passed through ICA and merged by `W⁻¹`:
`f(x) = W⁻¹ ICA(W x)`. Its Jacobian is `W⁻¹ J_ICA W`, so `log|det f'| = log|det J_ICA|`: the
`D·Σ log|s|` terms of `W` and `W⁻¹` cancel exactly and are not added.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mango_jax.flows.base import HIGHEST, InvertibleLayer
from mango_jax.flows.ica import ICA


def _dominant(raw: jax.Array, strict_mask: jax.Array, bound: float) -> jax.Array:
    """Off-diagonal entries whose absolute row sums stay below `bound` for any `raw`."""
    masked = jnp.where(strict_mask, raw, 0.0)
    return bound * masked / (1.0 + jnp.sum(jnp.abs(masked), axis=-1, keepdims=True))


class TokenMixLU(nnx.Module):
    """`W = P L (U + diag(s))` acting on one axis of `[B, N, D]`: the tokens (`axis=1`, LICA) or
    the channels (`axis=2`, Glow's invertible 1×1 convolution, `mango_jax.flows.glow`).

    Conditioning bound for every parameter value: `L = I + L₀` and `U + diag(s) =
    diag(s)(I + U₀)` with off-diagonal row sums of |L₀|, |U₀| below γ < 1 and
    `|log s| ≤ c`, so `κ_∞(W) ≤ ((1 + γ)/(1 − γ))² e^{2c}`. It starts as the permutation P
    (a fixed, seeded shuffle of the tokens), perfectly conditioned.
    """

    def __init__(self, num_tokens: int, *, seed: int, dominance: float = 0.5,
                 max_log_scale: float = 1.0, axis: int = 1, param_dtype=jnp.float32):
        if not 0.0 < dominance < 1.0:
            raise ValueError(f"dominance must lie in (0, 1), got {dominance}")
        if axis not in (1, 2):
            raise ValueError(f"axis must be 1 (tokens) or 2 (channels) of [B, N, D], got {axis}")
        self.axis = axis
        self.perm = tuple(int(i) for i in np.random.default_rng(seed).permutation(num_tokens))
        self.dominance = dominance
        self.max_log_scale = max_log_scale
        self.lower = nnx.Param(jnp.zeros((num_tokens, num_tokens), param_dtype))
        self.upper = nnx.Param(jnp.zeros((num_tokens, num_tokens), param_dtype))
        self.log_scale = nnx.Param(jnp.zeros((num_tokens,), param_dtype))

    def factors(self):
        """`(L, S)` with `W = P L S`: L unit lower-, S upper-triangular."""
        n = self.lower[...].shape[0]
        rows, cols = np.indices((n, n))
        eye = jnp.eye(n, dtype=self.lower[...].dtype)
        lower = eye + _dominant(self.lower[...], rows > cols, self.dominance)
        c = self.max_log_scale
        scale = jnp.exp(c * jnp.tanh(self.log_scale[...] / c))
        upper = scale[:, None] * (eye + _dominant(self.upper[...], rows < cols, self.dominance))
        return lower, upper

    def matrix(self) -> jax.Array:
        lower, upper = self.factors()
        return jnp.matmul(lower, upper, precision=HIGHEST)[np.asarray(self.perm)]

    def _spec(self) -> str:
        return "ij,bjd->bid" if self.axis == 1 else "ij,bnj->bni"

    def apply(self, x: jax.Array) -> jax.Array:
        """`W x` along `axis` of `x: [B, N, D]`."""
        return jnp.einsum(self._spec(), self.matrix().astype(x.dtype), x, precision=HIGHEST)

    def inverse_matrix(self) -> jax.Array:
        """`W⁻¹ = S⁻¹ L⁻¹ Pᵀ`, by triangular solves against the identity.

        Solving for the N×N inverse once and applying it as one matrix product is far faster
        than solving with the B·D columns of a batch (XLA's CPU triangular solve is slow with
        many right-hand sides), and exact up to rounding: `κ(W)` is bounded (class docstring).
        """
        lower, upper = self.factors()
        eye = jnp.eye(lower.shape[0], dtype=lower.dtype)
        with jax.default_matmul_precision("highest"):
            inv = jax.lax.linalg.triangular_solve(lower, eye, left_side=True, lower=True,
                                                  unit_diagonal=True)
            inv = jax.lax.linalg.triangular_solve(upper, inv, left_side=True, lower=False)
        return inv[:, np.asarray(self.perm)]

    def solve(self, y: jax.Array) -> jax.Array:
        """`W⁻¹ y` along `axis` of `y: [B, N, D]`."""
        return jnp.einsum(self._spec(), self.inverse_matrix().astype(y.dtype), y,
                          precision=HIGHEST)


class LICA(InvertibleLayer):
    """`y = W⁻¹ ICA(W x)` on `[B, N, D]`; ICA conditions on the first half of the mixed tokens."""

    def __init__(self, dim: int, num_heads: int, num_tokens: int, *, min_identity: float,
                 seed: int, rngs: nnx.Rngs, param_dtype=jnp.float32):
        if num_tokens % 2:
            raise ValueError(f"LICA splits the mixed tokens in halves; N={num_tokens} is odd")
        half = num_tokens // 2
        self.mix = TokenMixLU(num_tokens, seed=seed, param_dtype=param_dtype)
        self.ica = ICA(dim, num_heads, range(half), range(half, num_tokens),
                       min_identity=min_identity, rngs=rngs, param_dtype=param_dtype)

    def __call__(self, x):
        y, logdet = self.ica(self.mix.apply(x))
        return self.mix.solve(y), logdet

    def inverse(self, y):
        x, logdet = self.ica.inverse(self.mix.apply(y))
        return self.mix.solve(x), logdet
