"""Per-modality latent encoders E: images (ViT), token ids (transformer), vectors (MLP).

As in the paper, E can be pretrained: MAE's ViT (He et al. 2022) for images and depth, CLIP's
text transformer (Radford et al. 2021) for text, loaded by `load_pretrained` from the files the
model hubs distribute. Each modality becomes `[B, T, D]` tokens. Where the flow's partitions
need equal counts per modality and the natural counts differ (160 poster patches vs 256 words),
a learned-query resampler (`TokenResampler`) brings both to `model.tokens_per_modality`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from mango_jax.encoders.pretrained import load_pretrained
from mango_jax.encoders.resample import TokenResampler
from mango_jax.encoders.text import TextEncoder, keep_first
from mango_jax.encoders.vector import VectorTokenizer
from mango_jax.encoders.vit import ViTEncoder

__all__ = ["ModalityEncoder", "TextEncoder", "TokenResampler", "VectorTokenizer",
           "ViTEncoder", "default_config", "load_pretrained", "natural_tokens"]


def default_config() -> ml_collections.ConfigDict:
    """Encoder fields (shared by both modalities of a model).

    patch_size, depth, num_heads, mlp_ratio: ViT and text transformer shape.
    vector_tokens, vector_hidden: tokens and hidden width of the MLP tokenizer.
    text_max_len: longest token-id sequence. dropout: inside the encoders.
    pretrained: {modality: checkpoint path} (see load_pretrained); the checkpoint then fixes
      that encoder's shape, and patch_size must equal its patch size.
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
    """E for one modality: input -> `[B, T, D]`, resampled to `num_tokens` if T differs.

    With `pretrained` (a checkpoint path) the encoder is `load_pretrained`'s; where its width is
    not `dim`, a learned linear map `project` takes it to `dim`. One-channel images through an
    RGB checkpoint use its patch kernel summed over colours.
    """

    def __init__(self, kind: str, shape: tuple[int, ...], *, dim: int, num_tokens: int,
                 latent: bool, config, rngs: nnx.Rngs, vocab_size: int | None = None,
                 pretrained: str | None = None):
        depth = config.depth if latent else 0
        common = dict(dim=dim, depth=depth, num_heads=config.num_heads,
                      mlp_ratio=config.mlp_ratio, dropout=config.dropout, rngs=rngs)
        if kind == "vector" and pretrained:
            raise ValueError(f"pretrained={pretrained!r} is set for a feature-vector modality; "
                             "checkpoints serve image and token-id modalities only")
        if pretrained:
            self.net = load_pretrained(pretrained, latent=latent)
            self._check(kind, shape, config, vocab_size, pretrained)
        elif kind == "image":
            grid = (shape[0] // config.patch_size, shape[1] // config.patch_size)
            self.net = ViTEncoder(shape[-1], patch_size=config.patch_size, grid=grid, **common)
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
        width = getattr(self.net, "width", dim)
        self.project = nnx.Linear(width, dim, rngs=rngs) if width != dim else None
        natural = num_tokens if kind == "vector" else natural_tokens(kind, shape, config)
        self.resample = (TokenResampler(dim, num_tokens, num_heads=config.num_heads, rngs=rngs)
                         if natural != num_tokens else None)

    def _check(self, kind, shape, config, vocab_size, path) -> None:
        """The checkpoint must fit the modality; depth maps get the summed RGB kernel."""
        net = self.net
        found = "image" if isinstance(net, ViTEncoder) else "tokens"
        if found != kind:
            raise ValueError(f"{path} holds an encoder for {found} inputs, but this modality's "
                             f"inputs are {kind}")
        if kind == "image":
            if net.patch_size != config.patch_size:
                raise ValueError(f"{path} has patch size {net.patch_size}; set "
                                 f"model.encoder.patch_size={net.patch_size}")
            if shape[-1] != net.in_channels:
                if shape[-1] != 1:
                    raise ValueError(f"{path} takes {net.in_channels}-channel images, these "
                                     f"have {shape[-1]}; only one-channel inputs are adapted")
                net.sum_colours()
        else:
            if shape[0] > net.context_length:
                raise ValueError(f"texts of {shape[0]} tokens exceed {path}'s context of "
                                 f"{net.context_length}; truncate them in the data config")
            if vocab_size is not None and vocab_size > net.vocab_size:
                raise ValueError(f"the dataset's vocabulary ({vocab_size} ids) exceeds {path}'s "
                                 f"({net.vocab_size}); tokenize the text with its tokenizer")

    def __call__(self, x: jax.Array, *, mask: jax.Array | None = None,
                 deterministic: bool = True) -> jax.Array:
        """`mask [B, T]` (token ids only, True on real tokens) keeps padding out of the
        resampler and the fusion; without one the text encoder derives it from the ids."""
        if self.kind == "tokens":
            mask = self.net.padding_mask(x) if mask is None else keep_first(jnp.asarray(mask))
            tokens = self.net(x, mask=mask, deterministic=deterministic)
        else:
            mask = None
            tokens = self.net(x, deterministic=deterministic)
        if self.project is not None:
            tokens = self.project(tokens)
        if mask is not None:
            tokens = tokens * mask[..., None].astype(tokens.dtype)
        if self.resample is not None:
            tokens = self.resample(tokens, mask)
        return tokens
