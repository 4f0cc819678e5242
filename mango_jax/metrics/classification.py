"""Classification metrics as sufficient statistics that add up across batches.

Every function here is pure and jit-able: a batch produces counts, counts are summed over the
split, and the score is computed once from the totals (on the host, in float64). Summing counts
is what makes a batch-accumulated score equal the whole-split score exactly, which averaging
per-batch scores would not.

Multi-class: `argmax(logits) == label` (ties go to the lowest class index, like `np.argmax`).
Top-k: the label is among the `k` largest logits (`jax.lax.top_k`).

Multi-label: a class is predicted when `sigmoid(logit) > 0.5` (strictly), per class and example.
Per-class true positives, false positives and false negatives are accumulated, and

- micro F1 = 2 ΣTP / (2 ΣTP + ΣFP + ΣFN) over all classes,
- macro F1 = mean over classes of 2 TP_c / (2 TP_c + FP_c + FN_c),

which is scikit-learn's `f1_score(y_true, y_pred, average='micro'|'macro')`. A class whose F1 is
0/0 (no true and no predicted positive in the whole split) follows scikit-learn's
`zero_division` rule: the default here, `zero_division=0.0`, gives it F1 = 0 and keeps it in the
macro mean, exactly as scikit-learn's default (`zero_division='warn'`, which also means 0);
`1.0` gives it 1; `nan` leaves it out of the macro mean (and makes micro F1 NaN only when the
whole split has no positive at all), as scikit-learn does with `zero_division=np.nan`.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

COUNT_DTYPE = jnp.int32


def _example_mask(mask: jax.Array | None, batch_size: int) -> jax.Array:
    """A bool `[B]` mask; `None` means every example is real."""
    if mask is None:
        return jnp.ones((batch_size,), bool)
    mask = jnp.asarray(mask)
    if mask.shape != (batch_size,):
        raise ValueError(f"mask must have shape ({batch_size},), got {mask.shape}")
    return mask.astype(bool)


def multiclass_counts(
    logits: jax.Array,
    labels: jax.Array,
    mask: jax.Array | None = None,
    *,
    top_k: tuple[int, ...] = (),
) -> dict[str, jax.Array]:
    """Correct-prediction counts of one batch.

    Args:
      logits: `[B, C]` scores (logits or probabilities: only their order matters).
      labels: int `[B]` class ids.
      mask: bool `[B]`, True for real examples; padded examples count nowhere.
      top_k: extra `k` values; each adds a `top{k}_correct` count.

    Returns:
      `{'correct': int32[], 'count': int32[], 'top{k}_correct': int32[] ...}`.
    """
    if logits.ndim != 2 or labels.shape != logits.shape[:1]:
        raise ValueError(
            f"expected logits [B, C] and labels [B], got {logits.shape}, {labels.shape}")
    valid = _example_mask(mask, logits.shape[0])
    labels = labels.astype(jnp.int32)
    hit = jnp.argmax(logits, axis=-1).astype(jnp.int32) == labels
    out = {
        "correct": jnp.sum(hit & valid, dtype=COUNT_DTYPE),
        "count": jnp.sum(valid, dtype=COUNT_DTYPE),
    }
    for k in top_k:
        k_eff = min(int(k), logits.shape[-1])
        _, idx = jax.lax.top_k(logits, k_eff)
        hit_k = jnp.any(idx == labels[:, None], axis=-1)
        out[f"top{k}_correct"] = jnp.sum(hit_k & valid, dtype=COUNT_DTYPE)
    return out


def multilabel_counts(
    logits: jax.Array,
    labels: jax.Array,
    mask: jax.Array | None = None,
    *,
    threshold: float = 0.5,
) -> dict[str, jax.Array]:
    """Per-class TP / FP / FN of one batch, predicting `sigmoid(logits) > threshold`.

    Args:
      logits: `[B, C]` logits.
      labels: `[B, C]` multi-hot targets (any dtype; nonzero = positive).
      mask: bool `[B]`, True for real examples.

    Returns:
      `{'tp': int32[C], 'fp': int32[C], 'fn': int32[C], 'count': int32[]}`.
    """
    if logits.ndim != 2 or labels.shape != logits.shape:
        raise ValueError(f"expected logits and labels [B, C], got {logits.shape}, {labels.shape}")
    valid = _example_mask(mask, logits.shape[0])[:, None]
    logits = logits.astype(jnp.promote_types(logits.dtype, jnp.float32))
    pred = (jax.nn.sigmoid(logits) > threshold) & valid
    true = (labels != 0) & valid
    return {
        "tp": jnp.sum(pred & true, axis=0, dtype=COUNT_DTYPE),
        "fp": jnp.sum(pred & ~true, axis=0, dtype=COUNT_DTYPE),
        "fn": jnp.sum(~pred & true, axis=0, dtype=COUNT_DTYPE),
        "count": jnp.sum(valid, dtype=COUNT_DTYPE),
    }


def _ratio(num: float, den: float, zero_division: float) -> float:
    return float(num / den) if den > 0 else float(zero_division)


def accuracy_from_counts(correct, count) -> float:
    """`correct / count` as a Python float; NaN when no example was seen."""
    count = int(np.asarray(count))
    return float(int(np.asarray(correct)) / count) if count else math.nan


def f1_from_counts(tp, fp, fn, *, zero_division: float = 0.0) -> dict[str, float]:
    """Micro and macro F1 from per-class counts, as scikit-learn's `f1_score` computes them.

    `zero_division` is the value of an F1 that is 0/0 (see the module docstring); with NaN the
    macro mean skips such classes.
    """
    tp, fp, fn = (np.asarray(a, np.float64) for a in (tp, fp, fn))
    micro = _ratio(2 * tp.sum(), 2 * tp.sum() + fp.sum() + fn.sum(), zero_division)
    per_class = np.array(
        [_ratio(2 * t, 2 * t + p + n, zero_division) for t, p, n in zip(tp, fp, fn)]
    )
    if np.all(np.isnan(per_class)):
        macro = math.nan
    else:
        macro = float(np.nanmean(per_class))
    return {"micro_f1": micro, "macro_f1": macro, "per_class_f1": per_class}
