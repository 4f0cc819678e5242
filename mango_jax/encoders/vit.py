"""ViT patch encoder for images: MAE's encoder (He et al. 2022), the paper's latent model E.

The architecture is MAE's (timm's `VisionTransformer`): a class token that takes part in every
attention layer, learned position embeddings with a row for it, pre-LN blocks with exact GELU,
final LayerNorm. Randomly initialised, the position table starts as MAE's fixed 2-D sin-cos;
`mango_jax.encoders.load_pretrained` fills every tensor from a checkpoint instead.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mango_jax.nn import TransformerBlock


def sincos_2d(grid: tuple[int, int], dim: int) -> np.ndarray:
    """MAE's fixed 2-D sine-cosine position embedding, `[h·w, D]` (D divisible by 4)."""
    if dim % 4:
        raise ValueError(f"2-D sin-cos embedding needs dim divisible by 4, got {dim}")
    h, w = grid
    omega = 1.0 / 10000 ** (np.arange(dim // 4) / (dim // 4))
    ys, xs = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    parts = [f(c.reshape(-1)[:, None] * omega) for c in (xs, ys) for f in (np.sin, np.cos)]
    return np.concatenate(parts, axis=1).astype(np.float32)


def resample_positions(table: jax.Array, grid: tuple[int, int],
                       new_grid: tuple[int, int]) -> jax.Array:
    """`[h·w, D]` patch position embeddings -> `[h'·w', D]` for another patch grid.

    PyTorch's bicubic (a = −0.75, align_corners=False, no antialiasing), as MAE's
    `interpolate_pos_embed` and transformers' `interpolate_pos_encoding` resample.
    """
    if tuple(grid) == tuple(new_grid):
        return table
    table = table.reshape(*grid, table.shape[-1])
    out = jax.image.resize(table, (*new_grid, table.shape[-1]), "bicubic-pytorch",
                           antialias=False)
    return out.reshape(-1, table.shape[-1])


class ViTEncoder(nnx.Module):
    """`[B, H, W, C] -> [B, (H/p)·(W/p), D]` patch tokens after the final norm.

    `grid` is the patch grid of the position table; inputs of another size get it resampled
    (`resample_positions`). The class token attends with the patches and is dropped from the
    output. `depth = 0` leaves the linear patch embedding (and positions) alone, with no class
    token: the "without latent model" ablation. Parameter names (`patch`, `cls_token`,
    `position`, `blocks`, `norm`) are what the optimiser's partitions select on.
    """

    def __init__(self, channels: int, *, dim: int, patch_size: int, depth: int, num_heads: int,
                 mlp_ratio: float, dropout: float, rngs: nnx.Rngs,
                 grid: tuple[int, int] = (14, 14), act: str = "gelu", eps: float = 1e-6):
        self.patch_size = patch_size
        self.width = dim
        self.grid_size = tuple(grid)
        self.patch = nnx.Conv(channels, dim, kernel_size=(patch_size, patch_size),
                              strides=(patch_size, patch_size), padding="VALID", rngs=rngs)
        self.cls_token = (nnx.Param(0.02 * jax.random.normal(rngs.params(), (1, dim)))
                          if depth else None)
        table = np.concatenate([np.zeros((1, dim), np.float32), sincos_2d(self.grid_size, dim)])
        self.position = nnx.Param(jnp.asarray(table))
        self.blocks = nnx.List([
            TransformerBlock(dim, num_heads=num_heads, mlp_ratio=mlp_ratio, dropout=dropout,
                             rngs=rngs, act=act, eps=eps) for _ in range(depth)])
        self.norm = nnx.LayerNorm(dim, epsilon=eps, rngs=rngs)

    @property
    def in_channels(self) -> int:
        return self.patch.kernel.shape[2]

    def grid(self, image_hw: tuple[int, int]) -> tuple[int, int]:
        h, w = image_hw
        if h % self.patch_size or w % self.patch_size:
            raise ValueError(f"image size {h}×{w} is not a multiple of patch_size "
                             f"{self.patch_size}; resize the input or change the patch size")
        return h // self.patch_size, w // self.patch_size

    def sum_colours(self) -> None:
        """Makes the encoder take one-channel images (depth) with the patch kernel summed over
        its input channels: equal to feeding the channel repeated, as TokenFusion feeds depth."""
        kernel = self.patch.kernel[...]
        self.patch.in_features = 1
        self.patch.kernel = nnx.Param(kernel.sum(axis=2, keepdims=True))

    def __call__(self, images: jax.Array, *, deterministic: bool = True) -> jax.Array:
        if images.shape[-1] != self.in_channels:
            raise ValueError(f"images have {images.shape[-1]} channels, the encoder takes "
                             f"{self.in_channels}")
        grid = self.grid(images.shape[1:3])
        x = self.patch(images).reshape(images.shape[0], -1, self.width)
        table = self.position[...].astype(x.dtype)
        x = x + resample_positions(table[1:], self.grid_size, grid)
        if self.cls_token is not None:
            cls = jnp.broadcast_to(self.cls_token[...].astype(x.dtype) + table[:1],
                                   (x.shape[0], 1, self.width))
            x = jnp.concatenate([cls, x], axis=1)
        for block in self.blocks:
            x = block(x, deterministic=deterministic)
        x = self.norm(x)
        return x[:, 1:] if self.cls_token is not None else x
