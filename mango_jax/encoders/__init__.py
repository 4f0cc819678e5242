"""Per-modality latent encoders E: images (ViT), token ids (transformer), vectors (MLP).

Each modality becomes `[B, T, D]` tokens. Where the flow's partitions need equal counts per
modality and the natural counts differ (160 poster patches vs 256 words), a learned-query
resampler (`TokenResampler`) brings both to `model.tokens_per_modality`.
"""

from __future__ import annotations

import jax
import ml_collections
from flax import nnx

from mango_jax.encoders.resample import TokenResampler
from mango_jax.encoders.text import TextEncoder
from mango_jax.encoders.vector import VectorTokenizer
from mango_jax.encoders.vit import ViTEncoder, load_mae_weights

__all__ = ["ModalityEncoder", "TextEncoder", "TokenResampler", "VectorTokenizer",
           "ViTEncoder", "default_config", "load_mae_weights", "natural_tokens"]


def default_config() -> ml_collections.ConfigDict:
    """Encoder fields (shared by both modalities of a model).

    patch_size, depth, num_heads, mlp_ratio: ViT and text transformer shape.
    vector_tokens, vector_hidden: tokens and hidden width of the MLP tokenizer.
    text_max_len: longest token-id sequence. dropout: inside the encoders.
    pretrained: {modality: path to an MAE .npz} for image modalities (see load_mae_weights).
    """
    config = ml_collections.ConfigDict()
    config.patch_size = 16
    config.depth = 4
    config.num_heads = 4
    config.mlp_ratio = 4.0
    config.vector_tokens = 8
    config.vector_hidden = 512
    config.text_max_len = 512
    config.dropout = 0.0
    config.pretrained = ml_collections.ConfigDict()
    return config


def natural_tokens(kind: str, shape: tuple[int, ...], config) -> int:
    """Tokens a modality yields before any resampling."""
    if kind == "image":
        return (shape[0] // config.patch_size) * (shape[1] // config.patch_size)
    if kind == "tokens":
        return shape[0]
    if kind == "vector":
        return config.vector_tokens
    raise ValueError(f"unknown modality kind {kind!r}; expected 'image', 'tokens' or 'vector'")


class ModalityEncoder(nnx.Module):
    """E for one modality: input -> `[B, T, D]`, resampled to `num_tokens` if T differs."""

    def __init__(self, kind: str, shape: tuple[int, ...], *, dim: int, num_tokens: int,
                 latent: bool, config, rngs: nnx.Rngs, vocab_size: int | None = None,
                 pretrained: str | None = None):
        depth = config.depth if latent else 0
        common = dict(dim=dim, depth=depth, num_heads=config.num_heads,
                      mlp_ratio=config.mlp_ratio, dropout=config.dropout, rngs=rngs)
        if kind == "image":
            self.net = ViTEncoder(shape[-1], patch_size=config.patch_size, **common)
            if pretrained:
                load_mae_weights(self.net, pretrained)
        elif kind == "tokens":
            if vocab_size is None:
                raise ValueError("a token-id modality needs the dataset's vocab_size")
            self.net = TextEncoder(vocab_size, max(config.text_max_len, shape[0]), **common)
        elif kind == "vector":
            self.net = VectorTokenizer(shape[0], dim=dim, num_tokens=num_tokens,
                                       hidden=config.vector_hidden, latent=latent,
                                       dropout=config.dropout, rngs=rngs)
        else:
            raise ValueError(f"unknown modality kind {kind!r}")
        self.kind = kind
        natural = num_tokens if kind == "vector" else natural_tokens(kind, shape, config)
        self.resample = (TokenResampler(dim, num_tokens, num_heads=config.num_heads, rngs=rngs)
                         if natural != num_tokens else None)

    def __call__(self, x: jax.Array, *, deterministic: bool = True) -> jax.Array:
        mask = None
        if self.kind == "tokens":
            tokens, mask = self.net(x, deterministic=deterministic)
        else:
            tokens = self.net(x, deterministic=deterministic)
        if self.resample is not None:
            tokens = self.resample(tokens, mask)
        return tokens
