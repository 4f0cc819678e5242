"""Every corruption at levels 0 (the identity) and 1 (its strongest form), against NumPy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mango_jax.data import corruptions

KEY = jax.random.key(0)
RNG = np.random.default_rng(0)
VEC = RNG.normal(size=(64, 12)).astype(np.float32)
IMG = RNG.uniform(-1, 1, size=(8, 6, 5, 3)).astype(np.float32)
STATS = corruptions.InputStats(mean=VEC.mean(0), std=VEC.std(0) + 0.5,
                               low=np.float32(VEC.min()), high=np.float32(VEC.max()))
IMG_STATS = corruptions.InputStats(mean=IMG.mean(0), std=IMG.std(0),
                                   low=np.float32(-1.0), high=np.float32(1.0))


@pytest.mark.parametrize("name", sorted(corruptions.FUNCTIONS))
def test_level_zero_is_identity(name):
    x, stats = (IMG, IMG_STATS) if name in ("salt_pepper", "contrast", "depth_noise") else (
        VEC, STATS)
    if name == "padding":
        x = RNG.integers(1, 50, size=(16, 10)).astype(np.int32)
    out, _ = corruptions.corrupt(name, jnp.asarray(x), 0.0, KEY, stats)
    np.testing.assert_array_equal(np.asarray(out), x)


def test_gaussian_scales_with_train_std():
    big = np.zeros((20000, 3), np.float32)
    stats = corruptions.InputStats(np.zeros(3, np.float32), np.array([0.5, 1.0, 2.0], np.float32),
                                   np.float32(0), np.float32(0))
    out = np.asarray(corruptions.corrupt("gaussian", jnp.asarray(big), 1.0, KEY, stats)[0])
    np.testing.assert_allclose(out.std(0), [0.5, 1.0, 2.0], rtol=0.03)
    half = np.asarray(corruptions.corrupt("gaussian", jnp.asarray(big), 0.5, KEY, stats)[0])
    np.testing.assert_allclose(half, out / 2, rtol=1e-6, atol=1e-7)  # Same seed, half the std.


def test_drop_at_one_is_the_train_mean_and_partial_fraction():
    out = np.asarray(corruptions.corrupt("drop", jnp.asarray(VEC), 1.0, KEY, STATS)[0])
    np.testing.assert_array_equal(out, np.broadcast_to(STATS.mean, VEC.shape))
    x = RNG.normal(size=(4000, 10)).astype(np.float32) + 10.0
    part = np.asarray(corruptions.corrupt("drop", jnp.asarray(x), 0.3, KEY, STATS._replace(
        mean=np.zeros(10, np.float32)))[0])
    assert abs(np.mean(part == 0.0) - 0.3) < 0.02


def test_salt_pepper_at_one_is_only_extremes():
    out = np.asarray(corruptions.corrupt("salt_pepper", jnp.asarray(IMG), 1.0, KEY, IMG_STATS)[0])
    assert set(np.unique(out)) == {-1.0, 1.0}
    assert abs(np.mean(out == 1.0) - 0.5) < 0.1


def test_contrast_at_one_is_flat_per_image_channel():
    out = np.asarray(corruptions.corrupt("contrast", jnp.asarray(IMG), 1.0, KEY, IMG_STATS)[0])
    np.testing.assert_allclose(out, np.broadcast_to(IMG.mean(axis=(1, 2), keepdims=True),
                                                    IMG.shape), rtol=1e-5, atol=1e-6)
    half = np.asarray(corruptions.corrupt("contrast", jnp.asarray(IMG), 0.5, KEY, IMG_STATS)[0])
    m = IMG.mean(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(half, m + 0.5 * (IMG - m), rtol=1e-5, atol=1e-6)


def test_depth_noise_is_dynmm_formula():
    depth = RNG.uniform(0, 5, size=(4, 6, 5, 1)).astype(np.float32)
    out = np.asarray(corruptions.corrupt("depth_noise", jnp.asarray(depth), 1.0, KEY,
                                         IMG_STATS)[0])
    noise = np.asarray(jax.random.normal(KEY, depth.shape))
    scale = np.abs(depth).mean(axis=(1, 2, 3), keepdims=True)
    np.testing.assert_allclose(out, depth + scale * noise, rtol=1e-5, atol=1e-5)


def test_padding_at_one_pads_everything_and_clears_the_mask():
    ids = RNG.integers(1, 50, size=(16, 10)).astype(np.int32)
    mask = np.ones_like(ids, bool)
    out, new_mask = corruptions.corrupt("padding", jnp.asarray(ids), 1.0, KEY, STATS,
                                        jnp.asarray(mask))
    assert not np.any(np.asarray(out)) and not np.any(np.asarray(new_mask))
    out, new_mask = corruptions.corrupt("padding", jnp.asarray(ids), 0.5, KEY, STATS,
                                        jnp.asarray(mask))
    np.testing.assert_array_equal(np.asarray(new_mask), np.asarray(out) != 0)


def test_kinds_cover_every_input_kind_and_unknown_name_fails():
    assert set(corruptions.KINDS) == {"vector", "image", "depth", "tokens"}
    assert all(n in corruptions.FUNCTIONS for ns in corruptions.KINDS.values() for n in ns)
    with pytest.raises(ValueError, match="unknown corruption"):
        corruptions.corrupt("blur", jnp.asarray(VEC), 0.5, KEY, STATS)
