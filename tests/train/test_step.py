"""Eval-time resizing of segmentation logits to each example's own label size."""

import jax
import jax.numpy as jnp
import numpy as np

from mango_jax.train.step import resize_to_label_sizes


def test_logits_land_top_left_at_each_label_size():
    logits = jax.random.normal(jax.random.key(0), (2, 8, 8, 3))
    label_hw = jnp.array([[12, 20], [16, 16]])
    out = resize_to_label_sizes(logits, label_hw, (2, 16, 24))
    assert out.shape == (2, 16, 24, 3)
    for b, (h, w) in enumerate(np.asarray(label_hw)):
        expected = jax.image.resize(logits[b], (h, w, 3), "bilinear", antialias=False)
        np.testing.assert_allclose(out[b, :h, :w], expected, atol=1e-5)
    np.testing.assert_allclose(out[0, 12:], 0.0)
    np.testing.assert_allclose(out[0, :, 20:], 0.0)
