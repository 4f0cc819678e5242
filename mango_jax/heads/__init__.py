"""Task heads on the fused tokens Z: pooled classifier, dense decoder (segmentation, images)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx


class ClassificationHead(nnx.Module):
    """`[B, T, D] -> [B, C]` logits from mean-pooled tokens (multi-class or multi-label)."""

    def __init__(self, dim: int, num_classes: int, *, dropout: float, rngs: nnx.Rngs):
        self.norm = nnx.LayerNorm(dim, rngs=rngs)
        self.dropout = nnx.Dropout(dropout, rngs=rngs)
        self.out = nnx.Linear(dim, num_classes, rngs=rngs)

    def __call__(self, tokens: jax.Array, *, deterministic: bool = True) -> jax.Array:
        pooled = self.norm(jnp.mean(tokens, axis=1))
        return self.out(self.dropout(pooled, deterministic=deterministic))


class DenseHead(nnx.Module):
    """`[B, T, D] -> [B, H, W, out]`: tokens to a patch grid, then an upsampling decoder.

    T must be a multiple of the grid size h·w: each group of h·w tokens (one per modality for
    MANGO's Z = [Z_A, Z_B]) is laid out as a grid and the groups are stacked on channels. The
    decoder doubles the resolution `log2(patch)` times (bilinear resize, 3×3 conv, GELU) and
    ends in a 1×1 conv; translation outputs pass through tanh into [-1, 1].
    """

    def __init__(self, dim: int, tokens: int, grid: tuple[int, int], patch_size: int,
                 out_channels: int, *, width: int, squash: bool, rngs: nnx.Rngs):
        cells = grid[0] * grid[1]
        if tokens % cells:
            raise ValueError(f"{tokens} fused tokens do not tile the {grid[0]}×{grid[1]} patch "
                             "grid; dense heads need a fusion that keeps the image tokens")
        stages = int(round(math.log2(patch_size)))
        if 2 ** stages != patch_size:
            raise ValueError(f"patch_size={patch_size} must be a power of two for the decoder")
        self.grid, self.groups, self.squash = grid, tokens // cells, squash
        self.norm = nnx.LayerNorm(dim, rngs=rngs)
        self.stem = nnx.Conv(dim * self.groups, width, kernel_size=(1, 1), rngs=rngs)
        channels = [max(width >> i, 16) for i in range(stages + 1)]
        self.ups = nnx.List([nnx.Conv(c_in, c_out, kernel_size=(3, 3), rngs=rngs)
                             for c_in, c_out in zip(channels[:-1], channels[1:], strict=True)])
        self.out = nnx.Conv(channels[-1], out_channels, kernel_size=(1, 1), rngs=rngs)

    def __call__(self, tokens: jax.Array, *, deterministic: bool = True) -> jax.Array:
        del deterministic
        b, (h, w) = tokens.shape[0], self.grid
        x = self.norm(tokens).reshape(b, self.groups, h, w, -1)
        x = jnp.moveaxis(x, 1, 3).reshape(b, h, w, -1)
        x = jax.nn.gelu(self.stem(x))
        for conv in self.ups:
            x = jax.image.resize(x, (b, 2 * x.shape[1], 2 * x.shape[2], x.shape[3]), "bilinear")
            x = jax.nn.gelu(conv(x))
        x = self.out(x)
        return jnp.tanh(x) if self.squash else x
