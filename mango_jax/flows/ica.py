"""Invertible cross-attention (ICA), paper eqs. (3)-(5), with bounded conditioning.

Paper: ``Q, K = LN(Linear(X1))``, ``A = softmax(mask(Q Kᵀ / τ))`` upper-triangular, ``Y1 = X1``,
``Y2 = A X2``. The plain masked softmax is not numerically invertible: its diagonal falls to
1e-20 at a few hundred tokens and back-substitution then amplifies rounding without bound
(MANGO_SPEC.md). We therefore use, per head h,

    Ã = a·I + (1 − a)·S,   S = softmax(mask(Q Kᵀ · t)),   a = a_min + (1 − a_min)·σ(θ)
    A = diag(r)⁻¹ Ã,       r_i = ‖Ã_i‖₂  (row 2-norms)

Conditioning bound, valid for every parameter value: Ã is row-stochastic with Ã_ii ≥ a and
off-diagonal row mass ≤ 1 − a, so it is row-diagonally dominant and ‖Ã⁻¹‖_∞ ≤ 1/(2a − 1),
‖Ã‖_∞ = 1. Since a ≤ r_i ≤ 1, ``κ_∞(A) ≤ 1 / (a_min (2 a_min − 1))`` (needs a_min > 1/2).
The row normalisation keeps the forward pass from collapsing the data: for uncorrelated tokens
``Var(y_i) = ‖A_i‖₂² Var(x) = Var(x)``, whereas plain averaging shrinks every layer's output.

A depends on X1 only and is triangular with a positive diagonal, so
``log|det| = (D/H) Σ_h Σ_i log A_h,ii`` exactly and ``X2 = A⁻¹ Y2`` by one triangular solve.
The floor ``a_min`` is set for the whole flow by `mango_jax.flows.build` from a mixing budget
(see `min_identity_for_depth`), so that depth does not compound the error without bound.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mango_jax.flows.base import HIGHEST, InvertibleLayer, logdet_dtype


def min_identity_for_depth(mixing_budget: float, num_ica_layers: int,
                           shallow_floor: float = 0.75) -> float:
    """Per-layer floor `a_min = max(shallow_floor, 1 − b / n)` for budget b over n ICA layers.

    The whole flow's attention mass is then at most b, and the product of per-layer bounds is
    ``Π κ_l ≤ ((1 − 2b/n)(1 − b/n))^-n → e^{3b}``, independent of depth, instead of growing
    geometrically with n. Shallow flows (n < 4b) use `shallow_floor`, where one layer's bound
    is 1/(0.75 · 0.5) ≈ 2.7.
    """
    if mixing_budget <= 0:
        raise ValueError(f"ica_mixing_budget must be positive, got {mixing_budget}")
    return max(shallow_floor, 1.0 - mixing_budget / max(num_ica_layers, 1))


class ICA(InvertibleLayer):
    """ICA on a fixed token partition of `x: [B, N, D]`.

    `idx1` (conditioning tokens, `X1`) and `idx2` (transformed tokens, `X2`) are static index
    tuples of equal length n; the merge writes every token back to its own position.
    """

    def __init__(self, dim: int, num_heads: int, idx1, idx2, *, min_identity: float,
                 rngs: nnx.Rngs, param_dtype=jnp.float32):
        if dim % num_heads:
            raise ValueError(f"dim={dim} must be divisible by num_heads={num_heads}")
        if len(idx1) != len(idx2):
            raise ValueError(f"ICA needs equal halves, got {len(idx1)} and {len(idx2)} tokens")
        if not 0.5 < min_identity < 1.0:
            raise ValueError(f"min_identity must lie in (0.5, 1), got {min_identity}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.idx1 = tuple(int(i) for i in idx1)
        self.idx2 = tuple(int(i) for i in idx2)
        self.min_identity = float(min_identity)
        self.query = nnx.Linear(dim, dim, rngs=rngs, param_dtype=param_dtype)
        self.key = nnx.Linear(dim, dim, rngs=rngs, param_dtype=param_dtype)
        self.query_norm = nnx.LayerNorm(self.head_dim, rngs=rngs, param_dtype=param_dtype)
        self.key_norm = nnx.LayerNorm(self.head_dim, rngs=rngs, param_dtype=param_dtype)
        self.log_temperature = nnx.Param(
            jnp.full((num_heads,), -0.5 * math.log(self.head_dim), param_dtype))
        self.mix_logit = nnx.Param(jnp.zeros((num_heads,), param_dtype))

    def _split(self, x):
        return x[:, np.asarray(self.idx1)], x[:, np.asarray(self.idx2)]

    def _merge(self, x1, x2):
        order = np.argsort(np.concatenate([self.idx1, self.idx2]))
        return jnp.concatenate([x1, x2], axis=1)[:, order]

    def _heads(self, x):
        return x.reshape(*x.shape[:2], self.num_heads, self.head_dim)

    def attention(self, x1: jax.Array) -> jax.Array:
        """The triangular matrices `A: [B, H, n, n]` (computed in ≥ float32) for `X1: [B, n, D]`."""
        acc = logdet_dtype(x1.dtype)
        q = self.query_norm(self._heads(self.query(x1))).astype(acc)
        k = self.key_norm(self._heads(self.key(x1))).astype(acc)
        scale = jnp.exp(self.log_temperature[...].astype(acc))
        logits = jnp.einsum("bihd,bjhd->bhij", q, k, precision=HIGHEST) * scale[:, None, None]
        n = x1.shape[1]
        upper = jnp.triu(jnp.ones((n, n), bool))
        logits = jnp.where(upper, logits, -jnp.inf)
        probs = jax.nn.softmax(logits, axis=-1)
        floor = self.min_identity
        a = floor + (1.0 - floor) * jax.nn.sigmoid(self.mix_logit[...].astype(acc))
        mixed = (1.0 - a)[:, None, None] * probs + a[:, None, None] * jnp.eye(n, dtype=acc)
        row_norm = jnp.sqrt(jnp.sum(mixed * mixed, axis=-1, keepdims=True))
        return mixed / row_norm

    def _logdet(self, attn, dtype):
        diag = jnp.diagonal(attn, axis1=-2, axis2=-1)
        return self.head_dim * jnp.sum(jnp.log(diag), axis=(1, 2)).astype(logdet_dtype(dtype))

    def __call__(self, x):
        x1, x2 = self._split(x)
        attn = self.attention(x1)
        y2 = jnp.einsum("bhij,bjhd->bihd", attn.astype(x2.dtype), self._heads(x2),
                        precision=HIGHEST)
        return self._merge(x1, y2.reshape(x2.shape)), self._logdet(attn, x.dtype)

    def inverse(self, y):
        y1, y2 = self._split(y)
        attn = self.attention(y1)
        rhs = jnp.transpose(self._heads(y2), (0, 2, 1, 3)).astype(attn.dtype)
        with jax.default_matmul_precision("highest"):
            x2 = jax.lax.linalg.triangular_solve(attn, rhs, left_side=True, lower=False)
        x2 = jnp.transpose(x2, (0, 2, 1, 3)).reshape(y2.shape).astype(y2.dtype)
        return self._merge(y1, x2), -self._logdet(attn, y.dtype)
