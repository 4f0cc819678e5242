"""Semantic-segmentation metrics from a confusion matrix accumulated over the whole split.

The protocol is TokenFusion's / GeminiFusion's: logits are resized to the label's full
resolution (bilinear, as `torch.nn.functional.interpolate(..., mode='bilinear',
align_corners=False)`), the argmax is the prediction, pixels labelled `ignore_index` (255) are
skipped, and the scores come from one `[C, C]` confusion matrix of the whole split
(rows = label, columns = prediction):

- pixel accuracy = sum(diag) / sum(all),
- mean accuracy  = nanmean(diag / row sums),           (classes absent from the labels: NaN)
- mIoU           = nanmean(diag / (row + col - diag)), (classes absent from both: NaN)

so a class that appears in neither the labels nor the predictions is left out of the means
rather than counted as 0 or 1.

Counts are kept as uint32 (int64 under `jax_enable_x64`): up to 4.29e9 pixels per cell, which
covers NYUDv2 (654 x 480 x 640 = 2.0e8 pixels in all) and SUN RGB-D (about 2e9) at full
resolution. Label values outside `[0, C)` other than the ignore index are ignored too.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np


def confusion_dtype():
    """uint32 by default, int64 when 64-bit types are enabled."""
    return jnp.int64 if jax.config.jax_enable_x64 else jnp.uint32


def resize_bilinear(images: jax.Array, size: tuple[int, int]) -> jax.Array:
    """Resizes `[B, h, w, C]` to `[B, H, W, C]` like PyTorch's bilinear `align_corners=False`.

    Half-pixel centres, two taps per output pixel, edges clamped and no anti-aliasing when
    shrinking: `jax.image.resize(..., 'bilinear', antialias=False)`. A no-op at equal size.
    """
    size = (int(size[0]), int(size[1]))
    if images.shape[1:3] == size:
        return images
    shape = (images.shape[0], *size, images.shape[3])
    return jax.image.resize(images, shape, method="bilinear", antialias=False)


def resize_logits(logits: jax.Array, size: tuple[int, int]) -> jax.Array:
    """Resizes logits `[B, h, w, C]` to the label size `(H, W)` in float32 (bilinear)."""
    return resize_bilinear(logits.astype(jnp.promote_types(logits.dtype, jnp.float32)), size)


def predict_labels(logits: jax.Array, size: tuple[int, int]) -> jax.Array:
    """Full-resolution prediction: argmax of the logits resized to `(H, W)`; int32 `[B, H, W]`."""
    return jnp.argmax(resize_logits(logits, size), axis=-1).astype(jnp.int32)


def confusion_matrix(
    pred: jax.Array,
    labels: jax.Array,
    num_classes: int,
    mask: jax.Array | None = None,
    *,
    ignore_index: int | None = 255,
) -> jax.Array:
    """`[C, C]` counts of (label, prediction) pairs over valid pixels; jit-able.

    Args:
      pred: int `[B, H, W]` predicted classes in `[0, C)`.
      labels: int `[B, H, W]` targets; `ignore_index` and values outside `[0, C)` are skipped.
      num_classes: C.
      mask: bool `[B]`, True for real examples; padded examples count nowhere.
      ignore_index: label to skip (None: only out-of-range labels are skipped).
    """
    if pred.shape != labels.shape:
        raise ValueError(f"prediction {pred.shape} and label {labels.shape} shapes differ")
    labels = labels.astype(jnp.int32)
    pred = pred.astype(jnp.int32)
    valid = (labels >= 0) & (labels < num_classes)
    if ignore_index is not None:
        valid &= labels != ignore_index
    if mask is not None:
        mask = jnp.asarray(mask).astype(bool)
        valid &= mask.reshape(mask.shape + (1,) * (labels.ndim - 1))
    index = jnp.where(valid, labels * num_classes + pred, 0).reshape(-1)
    dtype = confusion_dtype()
    counts = jnp.zeros((num_classes * num_classes,), dtype).at[index].add(
        valid.reshape(-1).astype(dtype)
    )
    return counts.reshape(num_classes, num_classes)


def confusion_from_logits(
    logits: jax.Array,
    labels: jax.Array,
    num_classes: int,
    mask: jax.Array | None = None,
    *,
    ignore_index: int | None = 255,
) -> jax.Array:
    """Resizes logits `[B, h, w, C]` to the labels' `[B, H, W]`, takes the argmax, counts."""
    if logits.ndim != 4 or labels.ndim != 3 or logits.shape[0] != labels.shape[0]:
        raise ValueError(f"expected logits [B, h, w, C] and labels [B, H, W], got "
                         f"{logits.shape} and {labels.shape}")
    if logits.shape[-1] != num_classes:
        raise ValueError(f"logits have {logits.shape[-1]} classes, expected {num_classes}")
    pred = predict_labels(logits, labels.shape[1:3])
    return confusion_matrix(pred, labels, num_classes, mask, ignore_index=ignore_index)


def scores_from_confusion(confusion) -> dict[str, float]:
    """Pixel accuracy, mean accuracy and mIoU (fractions) from a `[C, C]` confusion matrix."""
    cm = np.asarray(confusion, np.float64)
    diag = np.diag(cm)
    rows, cols = cm.sum(axis=1), cm.sum(axis=0)
    total = cm.sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        acc_per_class = np.where(rows > 0, diag / rows, np.nan)
        union = rows + cols - diag
        iou_per_class = np.where(union > 0, diag / union, np.nan)

    def nanmean(a):
        return float(np.nanmean(a)) if np.any(~np.isnan(a)) else math.nan

    return {
        "pixel_acc": float(diag.sum() / total) if total > 0 else math.nan,
        "mean_acc": nanmean(acc_per_class),
        "miou": nanmean(iou_per_class),
        "per_class_iou": iou_per_class,
        "per_class_acc": acc_per_class,
    }
