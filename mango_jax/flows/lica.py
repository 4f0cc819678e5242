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

from mango_jax.flows.base import HIGHEST, InvertibleLayer, invert_upper_triangular
from mango_jax.flows.ica import ICA
from mango_jax.nn import Constant


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
        self.perm = Constant(
            jnp.asarray(np.random.default_rng(seed).permutation(num_tokens), jnp.int32))
        self.dominance = dominance
        self.max_log_scale = max_log_scale
        self.lower = nnx.Param(jnp.zeros((num_tokens, num_tokens), param_dtype))
        self.upper = nnx.Param(jnp.zeros((num_tokens, num_tokens), param_dtype))
        self.log_scale = nnx.Param(jnp.zeros((num_tokens,), param_dtype))
        self.precomputed = None  # `(W, W⁻¹)` in an inference copy (`nn.freeze`)

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
        """`W: [N, N]`."""
        if self.precomputed is not None:
            return self.precomputed[0]
        return _plu_product(self.perm[...], *self.factors())

    def precompute(self) -> tuple[jax.Array, jax.Array]:
        """`(W, W⁻¹)`, which `nn.freeze` stores for inference: two arrays rather than one
        stacked, whose halves XLA:CPU would copy out before every product."""
        return self.matrices()

    def matrices(self) -> tuple[jax.Array, jax.Array]:
        """`(W, W⁻¹)`. `W⁻¹` is built from the factors but differentiated through `W`
        (`_inverse_of_plu`), so a layer that uses both backpropagates once through `L S`."""
        if self.precomputed is not None:
            return self.precomputed[0], self.precomputed[1]
        lower, upper = self.factors()
        perm = self.perm[...]
        matrix = _plu_product(perm, lower, upper)
        return matrix, _inverse_of_plu(matrix, lower, upper, perm)

    def along_axis(self, matrix: jax.Array, x: jax.Array) -> jax.Array:
        """`matrix · x` along `axis` of `x: [B, N, D]`.

        Over the tokens the matrix is the left operand, giving `[N, B, D]`: at batch 1 that is
        `W · x[0]` with no transposes, where `einsum` computed `x[0]ᵀ Wᵀ` and transposed `x`
        and the product."""
        matrix = matrix.astype(x.dtype)
        if self.axis == 2:
            return jnp.einsum("ij,bnj->bni", matrix, x, precision=HIGHEST)
        return jnp.swapaxes(jax.lax.dot_general(matrix, x, (((1,), (1,)), ((), ())),
                                                precision=HIGHEST), 0, 1)

    def apply(self, x: jax.Array) -> jax.Array:
        """`W x` along `axis` of `x: [B, N, D]`."""
        return self.along_axis(self.matrix(), x)

    def solve(self, y: jax.Array) -> jax.Array:
        """`W⁻¹ y` along `axis` of `y: [B, N, D]`."""
        return self.along_axis(self.matrices()[1], y)


def _without_identity(unit: jax.Array) -> jax.Array:
    """`T − I` for a unit-diagonal triangular `T`.

    Products with `T` are taken as `X + (T − I) X` (or `X + X (T − I)`): otherwise each
    diagonal entry of the result sums one O(1) term with up to N small ones in float32, and
    depending on the kernel's summation order the small ones are rounded away, which spoils
    `W W⁻¹ = I` once training has moved W slightly off the permutation
    (`tests/flows/test_core.py`, near-identity test).
    """
    return unit - jnp.eye(unit.shape[-1], dtype=unit.dtype)


def _plu_product(perm: jax.Array, lower, upper):
    """`W = P L S`."""
    product = upper + jnp.matmul(_without_identity(lower), upper, precision=HIGHEST)
    return product[perm]


@jax.custom_jvp
def _inverse_of_plu(matrix, lower, upper, perm):
    """`W⁻¹ = S⁻¹ L⁻¹ Pᵀ` for `matrix = W = P L S`, differentiated as a function of `W` alone.

    The value comes from the factors: both triangular inverses in one batched block inversion
    (`invert_upper_triangular` on `S` and `Lᵀ`) and one product, all matrix products, where a
    triangular solve of the identity is slow on XLA:CPU and its derivative needs two more. The
    derivative is `d(W⁻¹) = −W⁻¹ dW W⁻¹`, two products, exact because `W = P L S` holds;
    tangents of `lower` and `upper` are therefore ignored (they reach `W⁻¹` through `matrix`).
    """
    inv_upper, inv_lower_t = invert_upper_triangular(jnp.stack([upper, lower.T]))
    inverse = inv_upper + jnp.matmul(inv_upper, _without_identity(inv_lower_t.T),
                                     precision=HIGHEST)
    return inverse[:, perm]


@_inverse_of_plu.defjvp
def _inverse_of_plu_jvp(primals, tangents):
    inverse = _inverse_of_plu(*primals)
    d_matrix = tangents[0]
    d_inverse = -jnp.matmul(jnp.matmul(inverse, d_matrix, precision=HIGHEST), inverse,
                            precision=HIGHEST)
    return inverse, d_inverse


class LICA(InvertibleLayer):
    """`y = W⁻¹ ICA(W x)` on `[B, N, D]`; ICA conditions on the first half of the mixed tokens.

    ICA passes that half through unchanged, so `W⁻¹ ICA(W x) = x + W⁻¹[:, N/2:] (ICA(W x) −
    W x)[N/2:]`: the way back multiplies by half of `W⁻¹` and adds `x` itself, not its
    reconstruction `W⁻¹ W x`. Likewise in the inverse.
    """

    def __init__(self, dim: int, num_heads: int, num_tokens: int, *, min_identity: float,
                 seed: int, rngs: nnx.Rngs, param_dtype=jnp.float32):
        if num_tokens % 2:
            raise ValueError(f"LICA splits the mixed tokens in halves; N={num_tokens} is odd")
        half = num_tokens // 2
        self.mix = TokenMixLU(num_tokens, seed=seed, param_dtype=param_dtype)
        self.ica = ICA(dim, num_heads, range(half), range(half, num_tokens),
                       min_identity=min_identity, rngs=rngs, param_dtype=param_dtype)

    def _run(self, x, ica):
        matrix, inverse = self.mix.matrices()
        mixed = self.mix.along_axis(matrix, x)
        out, logdet = ica(mixed)
        half = x.shape[1] // 2
        moved = self.mix.along_axis(inverse[:, half:], out[:, half:] - mixed[:, half:])
        return x + moved, logdet

    def __call__(self, x):
        return self._run(x, self.ica)

    def inverse(self, y):
        return self._run(y, self.ica.inverse)
