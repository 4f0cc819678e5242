"""Pixel errors of image-to-image translation (images in [-1, 1]).

MAE and MSE are means over every pixel and channel of the split. Each batch contributes the sum
over its real examples of the per-image mean error, and the split's value is that total over the
number of real examples, which is the pixel mean whenever all images share one size (they do in
the Taskonomy protocol: 256 x 256 at test time). The running totals are float32 with Kahan
compensation, so thousands of batches add up without float32 drift.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np


def kahan_add(total: jax.Array, compensation: jax.Array, value: jax.Array):
    """One step of Kahan summation: returns the new `(total, compensation)`."""
    y = value - compensation
    t = total + y
    return t, (t - total) - y


def per_image_errors(pred: jax.Array, target: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Per-image mean absolute and mean squared error, each `[B]` in float32."""
    if pred.shape != target.shape:
        raise ValueError(f"prediction {pred.shape} and target {target.shape} shapes differ")
    diff = pred.astype(jnp.float32) - target.astype(jnp.float32)
    axes = tuple(range(1, diff.ndim))
    return jnp.mean(jnp.abs(diff), axis=axes), jnp.mean(jnp.square(diff), axis=axes)


def error_sums(pred, target, mask=None) -> dict[str, jax.Array]:
    """Sums over the batch's real examples of the per-image MAE and MSE, and their count."""
    mae, mse = per_image_errors(pred, target)
    valid = jnp.ones(mae.shape, bool) if mask is None else jnp.asarray(mask).astype(bool)
    return {
        "abs": jnp.sum(jnp.where(valid, mae, 0.0)),
        "sq": jnp.sum(jnp.where(valid, mse, 0.0)),
        "count": jnp.sum(valid, dtype=jnp.int32),
    }


def errors_from_sums(abs_sum, sq_sum, count) -> dict[str, float]:
    """MAE and MSE as Python floats; NaN when no example was seen."""
    count = int(np.asarray(count))
    if not count:
        return {"mae": math.nan, "mse": math.nan}
    return {"mae": float(abs_sum) / count, "mse": float(sq_sum) / count}
