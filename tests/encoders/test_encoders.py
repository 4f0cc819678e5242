"""Encoders: MAE weight import, padding invariance of the text encoder, resampling."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from mango_jax import encoders
from mango_jax.encoders import TextEncoder, TokenResampler, ViTEncoder, load_mae_weights


def vit(channels=3, depth=2, seed=0):
    return ViTEncoder(channels, dim=16, patch_size=4, depth=depth, num_heads=2, mlp_ratio=2.0,
                      dropout=0.0, rngs=nnx.Rngs(seed))


def to_timm(encoder):
    """Our ViT written out under MAE/timm names and PyTorch layouts (the inverse mapping)."""
    out = {"patch_embed.proj.weight": np.transpose(np.asarray(encoder.patch.kernel[...]),
                                                   (3, 2, 0, 1)),
           "patch_embed.proj.bias": np.asarray(encoder.patch.bias[...]),
           "norm.weight": np.asarray(encoder.norm.scale[...]),
           "norm.bias": np.asarray(encoder.norm.bias[...]),
           "cls_token": np.zeros((1, 1, 16), np.float32)}
    for i, block in enumerate(encoder.blocks):
        p, att = f"blocks.{i}", block.attention
        out[f"{p}.attn.qkv.weight"] = np.concatenate(
            [np.asarray(getattr(att, n).kernel[...]).T for n in ("query", "key", "value")])
        out[f"{p}.attn.qkv.bias"] = np.concatenate(
            [np.asarray(getattr(att, n).bias[...]) for n in ("query", "key", "value")])
        for ours, theirs in ((att.out, "attn.proj"), (block.mlp.fc1, "mlp.fc1"),
                             (block.mlp.fc2, "mlp.fc2")):
            out[f"{p}.{theirs}.weight"] = np.asarray(ours.kernel[...]).T
            out[f"{p}.{theirs}.bias"] = np.asarray(ours.bias[...])
        for ours, theirs in ((block.norm1, "norm1"), (block.norm2, "norm2")):
            out[f"{p}.{theirs}.weight"] = np.asarray(ours.scale[...])
            out[f"{p}.{theirs}.bias"] = np.asarray(ours.bias[...])
    return out


def test_mae_weights_round_trip(tmp_path):
    source, target = vit(seed=0), vit(seed=1)
    images = jax.random.normal(jax.random.key(0), (2, 8, 12, 3))
    assert not np.allclose(source(images), target(images))
    path = str(tmp_path / "mae.npz")
    np.savez(path, **to_timm(source))
    load_mae_weights(target, path)
    np.testing.assert_allclose(target(images), source(images), rtol=1e-5, atol=1e-5)


def test_mae_weights_errors_and_depth_maps(tmp_path):
    path = str(tmp_path / "mae.npz")
    weights = to_timm(vit())
    np.savez(path, **weights)
    with pytest.raises(ValueError, match="set the encoder depth to 2"):
        load_mae_weights(vit(depth=3), path)
    depth_encoder = vit(channels=1)
    load_mae_weights(depth_encoder, path)
    np.testing.assert_allclose(np.asarray(depth_encoder.patch.kernel[...])[:, :, 0],
                               weights["patch_embed.proj.weight"].sum(1).transpose(1, 2, 0),
                               rtol=1e-5)
    del weights["blocks.1.mlp.fc2.bias"]
    np.savez(path, **weights)
    with pytest.raises(KeyError, match="blocks.1.mlp.fc2.bias"):
        load_mae_weights(vit(), path)


def test_text_encoder_ignores_padding():
    enc = TextEncoder(50, 12, dim=16, depth=2, num_heads=2, mlp_ratio=2.0, dropout=0.0,
                      rngs=nnx.Rngs(0))
    ids = jnp.array([[5, 7, 9, 0, 0, 0], [3, 4, 0, 0, 0, 0]])
    tokens, mask = enc(ids)
    longer, _ = enc(jnp.pad(ids, ((0, 0), (0, 4))))
    np.testing.assert_allclose(longer[:, :6], tokens, atol=1e-5)
    np.testing.assert_array_equal(mask, ids != 0)
    assert np.all(np.asarray(tokens)[~np.asarray(mask)] == 0)
    with pytest.raises(ValueError, match="max_len"):
        enc(jnp.ones((1, 13), jnp.int32))


def test_resampler_and_natural_counts():
    config = encoders.default_config()
    config.patch_size = 16
    assert encoders.natural_tokens("image", (256, 160, 3), config) == 160
    assert encoders.natural_tokens("tokens", (64,), config) == 64
    res = TokenResampler(16, 5, num_heads=2, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(1), (2, 9, 16))
    mask = jnp.arange(9)[None, :] < jnp.array([[4], [9]])
    y = res(x, mask)
    assert y.shape == (2, 5, 16)
    y_changed = res(x.at[0, 6].set(100.0), mask)
    np.testing.assert_allclose(y_changed[0], y[0], atol=1e-5)  # masked keys are ignored
