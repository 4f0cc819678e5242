"""ViT patch encoder for images (the paper's latent model is an MAE ViT, He et al. 2022)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mango_jax.fusion.layers import TransformerBlock


def sincos_2d(grid: tuple[int, int], dim: int) -> np.ndarray:
    """MAE's fixed 2-D sine-cosine position embedding, `[h·w, D]` (D divisible by 4)."""
    if dim % 4:
        raise ValueError(f"2-D sin-cos embedding needs dim divisible by 4, got {dim}")
    h, w = grid
    omega = 1.0 / 10000 ** (np.arange(dim // 4) / (dim // 4))
    ys, xs = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    parts = [f(c.reshape(-1)[:, None] * omega) for c in (xs, ys) for f in (np.sin, np.cos)]
    return np.concatenate(parts, axis=1).astype(np.float32)


class ViTEncoder(nnx.Module):
    """`[B, H, W, C] -> [B, (H/p)·(W/p), D]` patch tokens (no class token), final LayerNorm.

    `depth = 0` leaves the linear patch embedding alone: the "without latent model" ablation.
    """

    def __init__(self, channels: int, *, dim: int, patch_size: int, depth: int, num_heads: int,
                 mlp_ratio: float, dropout: float, rngs: nnx.Rngs):
        self.patch_size = patch_size
        self.dim = dim
        self.patch = nnx.Conv(channels, dim, kernel_size=(patch_size, patch_size),
                              strides=(patch_size, patch_size), padding="VALID", rngs=rngs)
        self.blocks = nnx.List([
            TransformerBlock(dim, num_heads=num_heads, mlp_ratio=mlp_ratio, dropout=dropout,
                             rngs=rngs) for _ in range(depth)])
        self.norm = nnx.LayerNorm(dim, rngs=rngs)

    def grid(self, image_hw: tuple[int, int]) -> tuple[int, int]:
        h, w = image_hw
        if h % self.patch_size or w % self.patch_size:
            raise ValueError(f"image size {h}×{w} is not a multiple of patch_size "
                             f"{self.patch_size}; resize the input or change the patch size")
        return h // self.patch_size, w // self.patch_size

    def __call__(self, images: jax.Array, *, deterministic: bool = True) -> jax.Array:
        grid = self.grid(images.shape[1:3])
        x = self.patch(images).reshape(images.shape[0], -1, self.dim)
        x = x + jnp.asarray(sincos_2d(grid, self.dim), x.dtype)
        for block in self.blocks:
            x = block(x, deterministic=deterministic)
        return self.norm(x)


def load_mae_weights(encoder: ViTEncoder, path: str) -> None:
    """Loads an MAE/timm ViT state dict saved as `.npz` (PyTorch names and layouts) in place.

    Export on a machine with PyTorch: `np.savez(path, **{k: v.numpy() for k, v in
    torch.load('mae_pretrain_vit_base.pth')['model'].items()})`. Fused `qkv` weights are split;
    `cls_token`, `pos_embed` (we use the same fixed sin-cos) and decoder weights are ignored. A
    single-channel encoder (depth maps) gets the RGB patch kernel summed over colours, as in
    TokenFusion's depth branch.
    """
    with np.load(path) as f:
        weights = {k: f[k] for k in f.files}

    def take(key):
        if key not in weights:
            raise KeyError(f"{path} has no tensor {key!r}; expected an MAE/timm ViT state dict "
                           "(keys like 'patch_embed.proj.weight', 'blocks.0.attn.qkv.weight')")
        return weights[key]

    def assign(variable, value, key):
        if variable[...].shape != value.shape:
            raise ValueError(f"{path}: {key} has shape {value.shape}, the encoder expects "
                             f"{variable[...].shape}; match dim/patch_size/depth to the file")
        variable[...] = jnp.asarray(value, variable[...].dtype)

    def linear(module, prefix, weight=None, bias=None):
        assign(module.kernel, (take(f"{prefix}.weight") if weight is None else weight).T,
               f"{prefix}.weight")
        assign(module.bias, take(f"{prefix}.bias") if bias is None else bias, f"{prefix}.bias")

    def norm(module, prefix):
        assign(module.scale, take(f"{prefix}.weight"), f"{prefix}.weight")
        assign(module.bias, take(f"{prefix}.bias"), f"{prefix}.bias")

    kernel = np.transpose(take("patch_embed.proj.weight"), (2, 3, 1, 0))
    channels = encoder.patch.kernel[...].shape[2]
    if kernel.shape[2] != channels:
        kernel = np.repeat(kernel.sum(axis=2, keepdims=True) / channels, channels, axis=2)
    assign(encoder.patch.kernel, kernel, "patch_embed.proj.weight")
    assign(encoder.patch.bias, take("patch_embed.proj.bias"), "patch_embed.proj.bias")
    stored = len({k.split(".")[1] for k in weights if k.startswith("blocks.")})
    if stored != len(encoder.blocks):
        raise ValueError(f"{path} holds {stored} transformer blocks, the encoder has "
                         f"{len(encoder.blocks)}; set the encoder depth to {stored}")
    for i, block in enumerate(encoder.blocks):
        p = f"blocks.{i}"
        norm(block.norm1, f"{p}.norm1")
        norm(block.norm2, f"{p}.norm2")
        qkv_w, qkv_b = take(f"{p}.attn.qkv.weight"), take(f"{p}.attn.qkv.bias")
        for name, w, b in zip(("query", "key", "value"), np.split(qkv_w, 3),
                              np.split(qkv_b, 3), strict=True):
            linear(getattr(block.attention, name), f"{p}.attn.qkv", w, b)
        linear(block.attention.out, f"{p}.attn.proj")
        linear(block.mlp.fc1, f"{p}.mlp.fc1")
        linear(block.mlp.fc2, f"{p}.mlp.fc2")
    norm(encoder.norm, "norm" if "norm.weight" in weights else "fc_norm")
