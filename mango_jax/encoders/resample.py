"""Resampling a token sequence to a fixed count, so both modalities bring equal counts."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from mango_jax.nn import MultiHeadAttention


class TokenResampler(nnx.Module):
    """`[B, T, D] -> [B, T', D]` by T' learned queries attending over the T tokens.

    Perceiver-style resampling (Jaegle et al. 2021): MMCA pairs token i of A with token i of B,
    so an image (e.g. 160 patches) and a text (e.g. 256 ids) are brought to the same count.
    """

    def __init__(self, dim: int, num_tokens: int, *, num_heads: int, rngs: nnx.Rngs):
        self.queries = nnx.Param(0.02 * jax.random.normal(rngs.params(), (num_tokens, dim)))
        self.norm = nnx.LayerNorm(dim, rngs=rngs)
        self.attention = MultiHeadAttention(dim, num_heads, dropout=0.0, rngs=rngs)

    def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        queries = jnp.broadcast_to(self.queries[...], (x.shape[0], *self.queries.shape))
        return queries + self.attention(queries, self.norm(x), key_mask=mask)
