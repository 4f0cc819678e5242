"""Invertible cross-attention (ICA), paper eqs. (3)-(5), with bounded conditioning.

Paper: ``Q, K = LN(Linear(X1))``, ``A = softmax(mask(Q Kᵀ / τ))`` upper-triangular, ``Y1 = X1``,
``Y2 = A X2``. The plain masked softmax is not numerically invertible: its diagonal falls to
1e-20 at a few hundred tokens and back-substitution then amplifies rounding without bound
(measured by `python -m experiments.flow_check`). We therefore use, per head h,

    Ã = a·I + (1 − a)·S,   S = softmax(mask(Q Kᵀ · t)),   a = a_min + (1 − a_min)·σ(θ)
    A = diag(r)⁻¹ Ã,       r_i = ‖Ã_i‖₂  (row 2-norms)

Conditioning bound, valid for every parameter value: Ã is row-stochastic with Ã_ii ≥ a and
off-diagonal row mass ≤ 1 − a, so it is row-diagonally dominant and ‖Ã⁻¹‖_∞ ≤ 1/(2a − 1),
‖Ã‖_∞ = 1. Since a ≤ r_i ≤ 1, ``κ_∞(A) ≤ 1 / (a_min (2 a_min − 1))`` (needs a_min > 1/2).
The row normalisation keeps the forward pass from collapsing the data: for uncorrelated tokens
``Var(y_i) = ‖A_i‖₂² Var(x) = Var(x)``, whereas plain averaging shrinks every layer's output.

A depends on X1 only and is triangular with a positive diagonal, so
``log|det| = (D/H) Σ_h Σ_i log A_h,ii`` exactly and ``X2 = A⁻¹ Y2`` by triangular back-substitution.
The floor ``a_min`` is set for the whole flow by `mango_jax.flows.build` from a mixing budget
(see `min_identity_for_depth`), so that depth does not compound the error without bound.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mango_jax.flows.base import HIGHEST, InvertibleLayer, logdet_dtype, solve_upper_triangular


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


def mix_identity(probs: jax.Array, a: jax.Array) -> jax.Array:
    """`Ã = a I + (1 − a) S` for `S: [B, H, n, n]`, `a: [H]`."""
    eye = jnp.eye(probs.shape[-1], dtype=probs.dtype)
    return (1.0 - a)[:, None, None] * probs + a[:, None, None] * eye


def normalize_rows(mixed: jax.Array) -> jax.Array:
    """`A = diag(r)⁻¹ Ã` with `r_i = ‖Ã_i‖₂`."""
    return mixed / jnp.sqrt(jnp.sum(mixed * mixed, axis=-1, keepdims=True))


class BoundedAttention(InvertibleLayer):
    """The bounded-attention core of ICA and AttnFlow's iTrans: per head h, the logits
    `LN(Q) LN(K)ᵀ · e^{τ_h}` and the identity weight `a_h = a_min + (1 − a_min) σ(θ_h)` of
    `Ã = a I + (1 − a) S` (the conditioning bound in the module docstring). Subclasses choose the
    tokens it attends over, the mask on S and how the matrix is applied and inverted.
    """

    def __init__(self, dim: int, num_heads: int, *, min_identity: float, rngs: nnx.Rngs,
                 param_dtype=jnp.float32):
        if dim % num_heads:
            raise ValueError(f"dim={dim} must be divisible by num_heads={num_heads}")
        if not 0.5 < min_identity < 1.0:
            raise ValueError(f"min_identity must lie in (0.5, 1), got {min_identity}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.min_identity = float(min_identity)
        self.query = nnx.Linear(dim, dim, rngs=rngs, param_dtype=param_dtype)
        self.key = nnx.Linear(dim, dim, rngs=rngs, param_dtype=param_dtype)
        self.query_norm = nnx.LayerNorm(self.head_dim, rngs=rngs, param_dtype=param_dtype)
        self.key_norm = nnx.LayerNorm(self.head_dim, rngs=rngs, param_dtype=param_dtype)
        self.log_temperature = nnx.Param(
            jnp.full((num_heads,), -0.5 * math.log(self.head_dim), param_dtype))
        self.mix_logit = nnx.Param(jnp.zeros((num_heads,), param_dtype))

    def _heads(self, x):
        return x.reshape(*x.shape[:2], self.num_heads, self.head_dim)

    def queries_keys(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """`(LN(Q) · t, LN(K))`, each `[B, n, H, d]` in ≥ float32, for `x: [B, n, D]`."""
        acc = logdet_dtype(x.dtype)
        q = self.query_norm(self._heads(self.query(x))).astype(acc)
        k = self.key_norm(self._heads(self.key(x))).astype(acc)
        return q * jnp.exp(self.log_temperature[...].astype(acc))[:, None], k

    @staticmethod
    def logits(q: jax.Array, k: jax.Array) -> jax.Array:
        """`[B, H, n_q, n_k]` for `q: [B, n_q, H, d]`, `k: [B, n_k, H, d]`."""
        return jnp.einsum("bihd,bjhd->bhij", q, k, precision=HIGHEST)

    def query_key_logits(self, x: jax.Array) -> jax.Array:
        """`LN(Q) LN(K)ᵀ · t` per head, `[B, H, n, n]` in ≥ float32, for `x: [B, n, D]`."""
        return self.logits(*self.queries_keys(x))

    def identity_weight(self, dtype) -> jax.Array:
        """`a: [H]` in `dtype`, in `[a_min, 1)` for every parameter value."""
        floor = self.min_identity
        return floor + (1.0 - floor) * jax.nn.sigmoid(self.mix_logit[...].astype(dtype))


MAX_TOKEN_RUNS = 8

# Rows per block of the triangular attention. Row block [s, e) of the upper-triangular S only
# meets columns ≥ s, so with k blocks the logits, softmax and products touch (k + 1) / 2k of
# the n × n entries (3/4 at n = 256, 5/8 at n = 512); halves of fewer rows than this are not
# worth their extra operations.
ROW_BLOCK = 128


def _concat(parts: list[jax.Array], axis: int) -> jax.Array:
    return parts[0] if len(parts) == 1 else jnp.concatenate(parts, axis=axis)


def row_blocks(n: int) -> list[tuple[int, int]]:
    """The row blocks `[(start, stop), ...]` of an `n × n` upper-triangular attention."""
    if n < 2 * ROW_BLOCK:
        return [(0, n)]
    return [(start, min(start + ROW_BLOCK, n)) for start in range(0, n, ROW_BLOCK)]


def _runs(idx) -> list[tuple[int, int, int]]:
    """A static index list as maximal strided runs `(start, stop, step)`, in order."""
    idx = [int(i) for i in idx]
    runs, i = [], 0
    while i < len(idx):
        j, step = i + 1, 1
        if j < len(idx) and idx[j] > idx[i]:
            step = idx[j] - idx[i]
            while j < len(idx) and idx[j] - idx[j - 1] == step:
                j += 1
        runs.append((idx[i], idx[j - 1] + 1, step))
        i = j
    return runs


def take_tokens(x: jax.Array, idx) -> jax.Array:
    """`x[:, idx]` for a static index list `idx` into `x: [B, N, D]`.

    The paper's partitions are a few contiguous (or even/odd) runs, which become slices and a
    concatenation: free for XLA to fuse, and their gradient is a pad rather than the scatter-add
    a gather turns into. Other index lists fall back to a gather.
    """
    runs = _runs(idx)
    if len(runs) > MAX_TOKEN_RUNS:
        return x[:, np.asarray(idx)]
    parts = [x[:, start:stop:step] for start, stop, step in runs]
    return parts[0] if len(parts) == 1 else jnp.concatenate(parts, axis=1)


class ICA(BoundedAttention):
    """ICA on a fixed token partition of `x: [B, N, D]`.

    `idx1` (conditioning tokens, `X1`) and `idx2` (transformed tokens, `X2`) are static index
    tuples of equal length n; the merge writes every token back to its own position.
    """

    def __init__(self, dim: int, num_heads: int, idx1, idx2, *, min_identity: float,
                 rngs: nnx.Rngs, param_dtype=jnp.float32):
        if len(idx1) != len(idx2):
            raise ValueError(f"ICA needs equal halves, got {len(idx1)} and {len(idx2)} tokens")
        super().__init__(dim, num_heads, min_identity=min_identity, rngs=rngs,
                         param_dtype=param_dtype)
        self.idx1 = tuple(int(i) for i in idx1)
        self.idx2 = tuple(int(i) for i in idx2)

    def _split(self, x):
        return take_tokens(x, self.idx1), take_tokens(x, self.idx2)

    def _merge(self, x1, x2):
        order = np.argsort(np.concatenate([self.idx1, self.idx2]))
        return take_tokens(jnp.concatenate([x1, x2], axis=1), order)

    def _exp_blocks(self, x1: jax.Array):
        """The softmax `S` by row blocks (`row_blocks`), unnormalised: for block `[s, e)`,
        `E = exp(L − max_j L)` on its non-zero part `S[:, :, s:e, s:]: [B, H, e − s, n − s]` and
        `1 / Σ_j E: [B, H, e − s]`, so that `S = E / Σ_j E` (≥ float32); and the identity weight
        `a: [H]`. The forward pass scales rows after its product with `E` instead of dividing
        `E` first, one pass fewer over every block."""
        q, k = self.queries_keys(x1)
        n, blocks = x1.shape[1], []
        for start, stop in row_blocks(n):
            logits = self.logits(q[:, start:stop], k[:, start:])
            # The mask as an added constant (0 or −inf): XLA:CPU fuses the add into the max and
            # the exponential that follow, where a select took a pass of its own.
            upper = np.triu(np.ones((stop - start, n - start), bool))
            logits = logits + np.where(upper, 0.0, -np.inf).astype(logits.dtype)
            exp = jnp.exp(logits - jax.lax.stop_gradient(jnp.max(logits, axis=-1, keepdims=True)))
            blocks.append((exp, 1.0 / jnp.sum(exp, axis=-1)))
        return blocks, self.identity_weight(logdet_dtype(x1.dtype))

    def _softmax(self, x1: jax.Array):
        """`S: [B, H, n, n]` (≥ float32) and the identity weight `a: [H]`."""
        blocks, a = self._exp_blocks(x1)
        n = x1.shape[1]
        return jnp.concatenate([
            jnp.pad(exp * inv_sum[..., None], ((0, 0), (0, 0), (0, 0), (n - exp.shape[-1], 0)))
            for exp, inv_sum in blocks], axis=2), a

    def attention(self, x1: jax.Array) -> jax.Array:
        """The triangular matrices `A: [B, H, n, n]` (computed in ≥ float32) for `X1: [B, n, D]`."""
        return normalize_rows(mix_identity(*self._softmax(x1)))

    def _row_stats(self, exp, inv_sum, a):
        """Squared row norms `r²: [B, H, rows]` of Ã and `log A_ii`, from the rows of a row block
        of S given as `S = exp · inv_sum` (`_exp_blocks`; its diagonal entries `S_ii` lead each
        row), without forming Ã.

        `r_i² = Σ_j ((1 − a) S_ij + a δ_ij)² = (1 − a)² Σ_j S_ij² + 2a(1 − a) S_ii + a²`, a sum
        of non-negative terms (no cancellation), and `A_ii = ((1 − a) S_ii + a) / r_i`.
        """
        a, b = a[:, None], (1.0 - a)[:, None]
        diag = jnp.diagonal(exp[..., :exp.shape[-2]], axis1=-2, axis2=-1) * inv_sum
        # Without the barrier XLA rewrites `E · E` as `exp(2 (L − max L))`, a second
        # exponential over the block instead of a read of E.
        held = jax.lax.optimization_barrier(exp)
        sq_norm = (b * b * jnp.sum(held * held, axis=-1) * (inv_sum * inv_sum)
                   + 2.0 * a * b * diag + a * a)
        return sq_norm, jnp.log(b * diag + a) - 0.5 * jnp.log(sq_norm)

    def _logdet(self, log_diag, dtype):
        return self.head_dim * jnp.sum(log_diag, axis=(1, 2)).astype(logdet_dtype(dtype))

    def __call__(self, x):
        """`Y2 = A X2` as `((1 − a) (E X2) / Σ_j E + a X2) / r`, row block by row block: the n×n
        matrix A is never formed, which saves several passes over `[B, H, n, n]` in the forward
        and the backward pass.

        `E X2` contracts over the tokens, and XLA:CPU transposes one operand to put the heads
        first. With the heads leading in `X2` we transpose `X2` and the product's rows; otherwise
        XLA transposes E. We pick the smaller: per head, `rows · keys` entries of E against
        `d · (rows + keys)`: the first at the paper's 2 × 256 tokens and 8 heads of 48, the
        second at 2 × 8 tokens and 4 heads of 16."""
        x1, x2 = self._split(x)
        blocks, a = self._exp_blocks(x1)
        x2h = self._heads(x2)
        rows, keys = blocks[0][0].shape[-2:]
        head_major = rows * keys > self.head_dim * (rows + keys)
        tokens = 2 if head_major else 1
        if head_major:
            x2h = jnp.transpose(x2h, (0, 2, 1, 3))
        spec = "bhij,bhjd->bhid" if head_major else "bhij,bjhd->bihd"

        def per_row(v):  # `[B, H, rows]` -> broadcast over the product's layout
            return (v if head_major else jnp.transpose(v, (0, 2, 1)))[..., None]

        n, parts, log_diags = x2.shape[1], [], []
        for exp, inv_sum in blocks:
            rows, start = exp.shape[-2], n - exp.shape[-1]
            sq_norm, log_diag = self._row_stats(exp, inv_sum, a)
            attended = jnp.einsum(spec, exp.astype(x2.dtype),
                                  jax.lax.slice_in_dim(x2h, start, n, axis=tokens),
                                  precision=HIGHEST)
            own = jax.lax.slice_in_dim(x2h, start, start + rows, axis=tokens)
            inv_norm = jax.lax.rsqrt(sq_norm)
            parts.append((attended * per_row((1.0 - a)[:, None] * inv_sum * inv_norm)
                          + own * per_row(a[:, None] * inv_norm)).astype(x2.dtype))
            log_diags.append(log_diag)
        y2 = _concat(parts, tokens)
        if head_major:
            y2 = jnp.transpose(y2, (0, 2, 1, 3))
        return self._merge(x1, y2.reshape(x2.shape)), self._logdet(_concat(log_diags, -1),
                                                                   x.dtype)

    def inverse(self, y):
        """`X2 = Ã⁻¹ (r ⊙ Y2)` by blocked back-substitution at full precision, over the row
        blocks of `_exp_blocks`, from the last: each block's rows subtract what the solved later
        tokens contribute and solve their triangular square.

        With `Σ = Σ_j E_ij` per row, `Ã = diag(Σ)⁻¹ ((1 − a) E + a diag(Σ))`, so the rows solve
        `((1 − a) E_kk + a diag(Σ)) X_k = Σ r Y_k − (1 − a) E_k,>k X_>k`: the exponentials are
        used as they are, as in the forward pass, and not normalised first (a pass fewer over
        every block). Scaling rows leaves back-substitution's rounding as it was."""
        y1, y2 = self._split(y)
        blocks, a = self._exp_blocks(y1)
        rhs = jnp.transpose(self._heads(y2), (0, 2, 1, 3)).astype(blocks[0][0].dtype)
        n, solved, log_diags = y2.shape[1], [], []
        for exp, inv_sum in reversed(blocks):
            rows, start = exp.shape[-2], n - exp.shape[-1]
            sq_norm, log_diag = self._row_stats(exp, inv_sum, a)
            part = rhs[:, :, start:start + rows] * (jnp.sqrt(sq_norm) / inv_sum)[..., None]
            if solved:
                part = part - (1.0 - a)[:, None, None] * jnp.matmul(
                    exp[..., rows:], _concat(solved, 2), precision=HIGHEST)
            square = ((1.0 - a)[:, None, None] * exp[..., :rows]
                      + (a[:, None] / inv_sum)[..., None] * jnp.eye(rows, dtype=exp.dtype))
            solved.insert(0, solve_upper_triangular(square, part))
            log_diags.insert(0, log_diag)
        x2 = jnp.transpose(_concat(solved, 2), (0, 2, 1, 3)).reshape(y2.shape).astype(y2.dtype)
        return self._merge(y1, x2), -self._logdet(_concat(log_diags, -1), y.dtype)
