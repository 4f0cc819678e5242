"""Transformer text encoder over token ids: CLIP's text transformer (Radford et al. 2021) when
loaded by `mango_jax.encoders.load_pretrained`, else a randomly initialised one."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from mango_jax.nn import TransformerBlock

PAD_ID = 0


def keep_first(mask: jax.Array) -> jax.Array:
    """A padding mask with position 0 always kept, so an empty text still attends somewhere."""
    return mask.astype(bool).at[:, 0].set(True)


class TextEncoder(nnx.Module):
    """`[B, T]` int ids -> tokens `[B, T, D]` after the final LayerNorm.

    Learned positions (the first T are used), pre-LN blocks, final LayerNorm. `causal` (CLIP)
    lets each token see only those before it; otherwise the encoder attends over every
    unpadded token (`padding_mask`). `depth = 0` keeps only the embedding ("without latent
    model"). Randomly initialised ones pad with id 0; CLIP pads with its end token
    (`eos_token_id`), so the first end token closes the text.
    """

    def __init__(self, vocab_size: int, max_len: int, *, dim: int, depth: int, num_heads: int,
                 mlp_ratio: float, dropout: float, rngs: nnx.Rngs, causal: bool = False,
                 act: str = "gelu_tanh", eps: float = 1e-6, eos_token_id: int | None = None):
        self.width, self.vocab_size, self.context_length = dim, vocab_size, max_len
        self.causal, self.eos_token_id = causal, eos_token_id
        self.embed = nnx.Embed(vocab_size, dim, rngs=rngs)
        self.position = nnx.Param(0.02 * jax.random.normal(rngs.params(), (max_len, dim)))
        self.blocks = nnx.List([
            TransformerBlock(dim, num_heads=num_heads, mlp_ratio=mlp_ratio, dropout=dropout,
                             rngs=rngs, act=act, eps=eps) for _ in range(depth)])
        self.norm = nnx.LayerNorm(dim, epsilon=eps, rngs=rngs)

    def padding_mask(self, ids: jax.Array) -> jax.Array:
        """`[B, T]` bool, True on real tokens, for batches that carry no mask of their own:
        up to and including the first end token when padding with it, else ids != 0."""
        ids = jnp.asarray(ids)
        if self.eos_token_id is None:
            mask = ids != PAD_ID
        else:
            is_end = ids == self.eos_token_id
            last = jnp.where(is_end.any(axis=1), jnp.argmax(is_end, axis=1), ids.shape[1] - 1)
            mask = jnp.arange(ids.shape[1])[None, :] <= last[:, None]
        return keep_first(mask)

    def __call__(self, ids: jax.Array, *, mask: jax.Array | None = None,
                 deterministic: bool = True) -> jax.Array:
        """`mask [B, T]` (True on real tokens) hides padded keys; a causal encoder needs none
        (padding comes last), without one a bidirectional encoder derives it."""
        if ids.shape[1] > self.context_length:
            raise ValueError(f"text of {ids.shape[1]} tokens exceeds the encoder's context of "
                             f"{self.context_length}; lower data.max_text_len (or raise "
                             "model.encoder.text_max_len for a randomly initialised encoder)")
        if mask is None and not self.causal:
            mask = self.padding_mask(ids)
        x = self.embed(ids) + self.position[: ids.shape[1]]
        for block in self.blocks:
            x = block(x, key_mask=mask, causal=self.causal, deterministic=deterministic)
        return self.norm(x)
