"""Encoders: padding invariance of the text encoder, resampling, the random-init ViT."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from mango_jax import encoders
from mango_jax.encoders import TextEncoder, TokenResampler, ViTEncoder

run = nnx.jit(lambda module, x, mask=None: module(x) if mask is None else module(x, mask=mask))


def test_text_encoder_ignores_padding():
    enc = TextEncoder(50, 12, dim=16, depth=2, num_heads=2, mlp_ratio=2.0, dropout=0.0,
                      rngs=nnx.Rngs(0))
    ids = jnp.array([[5, 7, 9, 0, 0, 0], [3, 4, 0, 0, 0, 0]])
    tokens = run(enc, ids)
    longer = run(enc, jnp.pad(ids, ((0, 0), (0, 4))))
    real = np.asarray(ids != 0)
    np.testing.assert_allclose(np.asarray(longer[:, :6])[real], np.asarray(tokens)[real],
                               atol=1e-5)
    np.testing.assert_array_equal(enc.padding_mask(ids), ids != 0)
    # The batch's own mask, where the data pipeline writes one, replaces the derived one.
    np.testing.assert_allclose(run(enc, ids, ids != 0), tokens, atol=1e-6)
    with pytest.raises(ValueError, match="text_max_len"):
        enc(jnp.ones((1, 13), jnp.int32))


def test_modality_encoder_zeroes_padding_and_takes_the_batch_mask():
    config = encoders.default_config()
    config.update(depth=1, num_heads=2, text_max_len=8)
    enc = encoders.ModalityEncoder("tokens", (6,), dim=16, num_tokens=6, latent=True,
                                   config=config, rngs=nnx.Rngs(0), vocab_size=50)
    ids = jnp.array([[5, 7, 9, 0, 0, 0], [3, 4, 0, 0, 0, 0]])
    tokens = np.asarray(run(enc, ids))
    assert np.all(tokens[np.asarray(ids == 0)] == 0) and np.all(tokens[np.asarray(ids != 0)] != 0)
    mask = jnp.arange(6)[None] < 2
    assert np.all(np.asarray(run(enc, ids, jnp.broadcast_to(mask, (2, 6))))[:, 2:] == 0)


def test_random_vit_has_class_token_and_resamples_its_positions():
    vit = ViTEncoder(3, dim=16, patch_size=4, depth=1, num_heads=2, mlp_ratio=2.0, dropout=0.0,
                     rngs=nnx.Rngs(0), grid=(2, 3))
    assert vit.position.shape == (7, 16) and vit.cls_token.shape == (1, 16)
    np.testing.assert_allclose(vit.position[1:], encoders.vit.sincos_2d((2, 3), 16))
    images = jax.random.normal(jax.random.key(0), (2, 8, 12, 3))
    before = run(vit, images)
    assert before.shape == (2, 6, 16)
    assert run(vit, jax.random.normal(jax.random.key(0), (2, 12, 8, 3))).shape == (2, 6, 16)
    # The class token takes part in attention: changing it changes every patch token.
    vit.cls_token[...] = vit.cls_token[...] + 10.0
    assert np.all(np.abs(np.asarray(run(vit, images) - before)).max(-1) > 1e-5)


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
