"""Transformer text encoder over token ids (the paper uses CLIP's text transformer)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from mango_jax.fusion.layers import TransformerBlock

PAD_ID = 0


class TextEncoder(nnx.Module):
    """`[B, L]` int ids (0 = padding) -> tokens `[B, L, D]` and the key mask `[B, L]` (bool).

    Learned positions, pre-LN blocks with padded keys masked, final LayerNorm. `depth = 0`
    keeps only the embedding ("without latent model").
    """

    def __init__(self, vocab_size: int, max_len: int, *, dim: int, depth: int, num_heads: int,
                 mlp_ratio: float, dropout: float, rngs: nnx.Rngs):
        self.embed = nnx.Embed(vocab_size, dim, rngs=rngs)
        self.position = nnx.Param(0.02 * jax.random.normal(rngs.params(), (max_len, dim)))
        self.blocks = nnx.List([
            TransformerBlock(dim, num_heads=num_heads, mlp_ratio=mlp_ratio, dropout=dropout,
                             rngs=rngs) for _ in range(depth)])
        self.norm = nnx.LayerNorm(dim, rngs=rngs)

    def __call__(self, ids: jax.Array, *, deterministic: bool = True):
        max_len = self.position.shape[0]
        if ids.shape[1] > max_len:
            raise ValueError(f"text of {ids.shape[1]} tokens exceeds max_len={max_len}; raise "
                             "model.text.max_len or truncate in the data config")
        mask = jnp.asarray(ids) != PAD_ID
        # An all-padding row would attend to nothing; let it attend to its first position.
        mask = mask.at[:, 0].set(True)
        x = self.embed(ids) + self.position[: ids.shape[1]]
        for block in self.blocks:
            x = block(x, key_mask=mask, deterministic=deterministic)
        return self.norm(x) * mask[..., None].astype(x.dtype), mask
