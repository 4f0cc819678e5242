"""Task losses, each a mean over real examples (`batch['mask']`) in float32."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def masked_mean(values: jax.Array, weights: jax.Array) -> jax.Array:
    """`Σ values·weights / Σ weights` (0 when every weight is 0), e.g. over real examples."""
    return jnp.sum(values * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def task_loss(task: str, prediction: jax.Array, batch, *, ignore_index: int | None) -> jax.Array:
    """Cross-entropy (multi-class), BCE on logits (multi-label), pixel cross-entropy with
    `ignore_index` skipped (segmentation), L1 on [-1, 1] images (translation)."""
    prediction = prediction.astype(jnp.float32)
    label = batch["label"]
    example = batch["mask"].astype(jnp.float32)
    if task == "multiclass":
        return masked_mean(
            optax.softmax_cross_entropy_with_integer_labels(prediction, label), example)
    if task == "multilabel":
        bce = optax.sigmoid_binary_cross_entropy(prediction, label.astype(jnp.float32))
        return masked_mean(jnp.mean(bce, axis=-1), example)
    if task == "segmentation":
        if prediction.shape[1:3] != label.shape[1:3]:
            prediction = jax.image.resize(
                prediction, (*label.shape[:3], prediction.shape[-1]), "bilinear")
        valid = label != ignore_index
        ce = optax.softmax_cross_entropy_with_integer_labels(prediction,
                                                             jnp.where(valid, label, 0))
        return masked_mean(ce, valid * example[:, None, None])
    if task == "translation":
        l1 = jnp.mean(jnp.abs(prediction - label.astype(jnp.float32)), axis=(1, 2, 3))
        return masked_mean(l1, example)
    raise ValueError(f"unknown task {task!r}")
