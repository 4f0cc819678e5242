"""The evaluator interface the training loop calls, one per task.

    evaluator = make_evaluator('segmentation', num_classes=40)        # ignore_index=255
    state = evaluator.init()                                           # a pytree of arrays
    update = jax.jit(evaluator.update)                                 # pure, jit-able
    for batch in split:                                                # every batch of a split
        state = update(state, predict(batch), batch)
    metrics = evaluator.finalize(state)      # {'pixel_acc': 0.81, 'mean_acc': ..., 'miou': ...}

`update(state, outputs, batch) -> state` only adds sufficient statistics (counts, sums, feature
rows) of one batch to the state, and `finalize` computes the scores once from the totals, in
float64 on the host. A split evaluated batch by batch therefore gives exactly the whole-split
score, whatever the batching. `update` may also be called inside the loop's own jitted eval
step, after the model; with data-parallel sharded batches XLA adds the cross-device sums.

What `update` reads:

| task           | `outputs`                         | `batch['label']`                       |
|----------------|-----------------------------------|----------------------------------------|
| 'multiclass'   | logits `[B, C]`                   | int `[B]` class ids                    |
| 'multilabel'   | logits `[B, C]`                   | float `[B, C]` multi-hot               |
| 'segmentation' | logits `[B, h, w, C]`             | int `[B, H, W]`, `ignore_index` = skip |
| 'translation'  | images `[B, H, W, 3]` in [-1, 1]  | float `[B, H, W, 3]` in [-1, 1]        |

`batch['mask']` (bool `[B]`, optional: all True when absent) marks real examples; padded ones
(the filler of a last, short batch) count nowhere. Other batch keys are ignored. Segmentation
logits are resized to the label's size (bilinear) inside `update`, then the argmax is taken.

What `finalize` returns (Python floats; fractions in [0, 1], never percentages; NaN where a
split had no example to score):

| task           | metrics                                                           |
|----------------|-------------------------------------------------------------------|
| 'multiclass'   | 'accuracy' (+ 'top{k}_accuracy' for each k in `top_k`)           |
| 'multilabel'   | 'micro_f1', 'macro_f1' (threshold 0.5 on sigmoid; sklearn's F1)  |
| 'segmentation' | 'pixel_acc', 'mean_acc', 'miou' (one confusion matrix per split) |
| 'translation'  | 'mae', 'mse' (+ 'fid', 'kid', 'kid_std' with a feature function)  |

`kid` is the raw MMD^2; the paper prints KID ×100 and the report does the scaling.
`details(state)` gives the per-class arrays behind the means (F1, IoU, accuracy per class).

FID / KID need the features of every example of the split, so with `fid_features_fn` the state
of 'translation' also holds two fixed-size feature buffers on the device, `[fid_capacity, D]`
for the outputs and for the targets, filled row by row in `update` (real examples only, at the
next free rows: a scatter whose padded rows fall out of range and are dropped) and read back by
`finalize`, which computes FID and KID in float64 NumPy (`mango_jax.metrics.fid`). Everything
stays a pytree of arrays and `update` stays jit-able. `fid_capacity` (default 10,000 rows,
2 x 82 MB at D = 2048) must be at least the number of real examples of the split:
`finalize` raises an error if more arrived than fit. Pass `jax.jit(update, donate_argnums=0)`
on an accelerator so the buffers are updated in place.

`fid_features_fn` is either a plain traceable callable `images [B, H, W, 3] in [-1, 1] ->
[B, D]`, or an object with `params` and `apply(params, images)` (as
`mango_jax.metrics.inception.make_fid_features_fn` returns); in the second case `params` are
kept in the state under 'fid_params', so a jitted step takes the Inception weights as an
argument instead of baking 95 MB of constants into the compiled program.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mango_jax.metrics import classification, fid, image, segmentation

State = dict[str, Any]
TASKS = ("multiclass", "multilabel", "segmentation", "translation")


def _mask(batch: Mapping[str, Any], batch_size: int) -> jax.Array:
    mask = batch.get("mask") if isinstance(batch, Mapping) else None
    if mask is None:
        return jnp.ones((batch_size,), bool)
    mask = jnp.asarray(mask).astype(bool)
    if mask.shape != (batch_size,):
        raise ValueError(f"batch['mask'] must have shape ({batch_size},), got {mask.shape}")
    return mask


def _add(state: State, counts: Mapping[str, jax.Array]) -> State:
    return {k: state[k] + counts[k].astype(state[k].dtype) for k in state}


class Evaluator:
    """Base class: `init() -> state`, `update(state, outputs, batch) -> state`, `finalize`."""

    task: str = ""
    metric_names: tuple[str, ...] = ()

    def init(self) -> State:
        raise NotImplementedError

    def update(self, state: State, outputs: jax.Array, batch: Mapping[str, Any]) -> State:
        raise NotImplementedError

    def finalize(self, state: State) -> dict[str, float]:
        raise NotImplementedError

    def details(self, state: State) -> dict[str, np.ndarray]:
        """Per-class arrays behind the means (empty for tasks without classes)."""
        del state
        return {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(task={self.task!r}, metrics={self.metric_names})"


class MulticlassEvaluator(Evaluator):
    task = "multiclass"

    def __init__(self, num_classes: int | None = None, top_k: Sequence[int] = ()):
        self.num_classes = num_classes
        self.top_k = tuple(int(k) for k in top_k)
        self.metric_names = ("accuracy",) + tuple(f"top{k}_accuracy" for k in self.top_k)

    def init(self) -> State:
        keys = ["correct", "count"] + [f"top{k}_correct" for k in self.top_k]
        return {k: jnp.zeros((), jnp.int32) for k in keys}

    def update(self, state, outputs, batch):
        logits = jnp.asarray(outputs)
        if self.num_classes is not None and logits.shape[-1] != self.num_classes:
            raise ValueError(f"logits have {logits.shape[-1]} classes, expected {self.num_classes}")
        counts = classification.multiclass_counts(
            logits, jnp.asarray(batch["label"]), _mask(batch, logits.shape[0]), top_k=self.top_k
        )
        return _add(state, counts)

    def finalize(self, state):
        out = {"accuracy": classification.accuracy_from_counts(state["correct"], state["count"])}
        for k in self.top_k:
            out[f"top{k}_accuracy"] = classification.accuracy_from_counts(
                state[f"top{k}_correct"], state["count"])
        return out


class MultilabelEvaluator(Evaluator):
    task = "multilabel"
    metric_names = ("micro_f1", "macro_f1")

    def __init__(self, num_classes: int, *, threshold: float = 0.5, zero_division: float = 0.0):
        self.num_classes = int(num_classes)
        self.threshold = threshold
        self.zero_division = zero_division

    def init(self):
        c = self.num_classes
        return {"tp": jnp.zeros((c,), jnp.int32), "fp": jnp.zeros((c,), jnp.int32),
                "fn": jnp.zeros((c,), jnp.int32), "count": jnp.zeros((), jnp.int32)}

    def update(self, state, outputs, batch):
        logits = jnp.asarray(outputs)
        if logits.shape[-1] != self.num_classes:
            raise ValueError(f"logits have {logits.shape[-1]} classes, expected {self.num_classes}")
        counts = classification.multilabel_counts(
            logits, jnp.asarray(batch["label"]), _mask(batch, logits.shape[0]),
            threshold=self.threshold,
        )
        return _add(state, counts)

    def _scores(self, state):
        return classification.f1_from_counts(
            state["tp"], state["fp"], state["fn"], zero_division=self.zero_division)

    def finalize(self, state):
        if int(np.asarray(state["count"])) == 0:
            return {"micro_f1": math.nan, "macro_f1": math.nan}
        s = self._scores(state)
        return {"micro_f1": s["micro_f1"], "macro_f1": s["macro_f1"]}

    def details(self, state):
        return {"per_class_f1": self._scores(state)["per_class_f1"]}


class SegmentationEvaluator(Evaluator):
    task = "segmentation"
    metric_names = ("pixel_acc", "mean_acc", "miou")

    def __init__(self, num_classes: int, *, ignore_index: int | None = 255):
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index

    def init(self):
        c = self.num_classes
        return {"confusion": jnp.zeros((c, c), segmentation.confusion_dtype())}

    def update(self, state, outputs, batch):
        logits = jnp.asarray(outputs)
        cm = segmentation.confusion_from_logits(
            logits, jnp.asarray(batch["label"]), self.num_classes, _mask(batch, logits.shape[0]),
            ignore_index=self.ignore_index,
        )
        return {"confusion": state["confusion"] + cm.astype(state["confusion"].dtype)}

    def finalize(self, state):
        s = segmentation.scores_from_confusion(state["confusion"])
        return {k: s[k] for k in self.metric_names}

    def details(self, state):
        s = segmentation.scores_from_confusion(state["confusion"])
        return {"per_class_iou": s["per_class_iou"], "per_class_acc": s["per_class_acc"],
                "confusion": np.asarray(state["confusion"])}


class TranslationEvaluator(Evaluator):
    task = "translation"

    def __init__(
        self,
        fid_features_fn: Callable[..., jax.Array] | None = None,
        *,
        fid_capacity: int = 10_000,
        fid_feature_dim: int | None = None,
        kid_subsets: int = 50,
        kid_subset_size: int = 1000,
        kid_seed: int = 0,
    ):
        self.features_fn = fid_features_fn
        self.fid_capacity = int(fid_capacity)
        self.fid_feature_dim = int(fid_feature_dim or getattr(fid_features_fn, "feature_dim", 2048))
        self.kid_subsets = kid_subsets
        self.kid_subset_size = kid_subset_size
        self.kid_seed = kid_seed
        self._functional = fid_features_fn is not None and hasattr(fid_features_fn, "apply") \
            and hasattr(fid_features_fn, "params")
        self.metric_names = ("mae", "mse") + (("fid", "kid", "kid_std") if fid_features_fn else ())

    def init(self):
        zero = jnp.zeros((), jnp.float32)
        state = {"abs": zero, "abs_c": zero, "sq": zero, "sq_c": zero,
                 "count": jnp.zeros((), jnp.int32)}
        if self.features_fn is not None:
            shape = (self.fid_capacity, self.fid_feature_dim)
            state["fid"] = {"fake": jnp.zeros(shape, jnp.float32),
                            "real": jnp.zeros(shape, jnp.float32),
                            "n": jnp.zeros((), jnp.int32)}
            if self._functional:
                state["fid_params"] = self.features_fn.params
        return state

    def _features(self, state, images):
        if self._functional:
            feats = self.features_fn.apply(state["fid_params"], images)
        else:
            feats = self.features_fn(images)
        if feats.ndim != 2 or feats.shape[1] != self.fid_feature_dim:
            raise ValueError(f"features must be [B, {self.fid_feature_dim}], got {feats.shape}")
        return feats.astype(jnp.float32)

    def update(self, state, outputs, batch):
        pred = jnp.asarray(outputs)
        target = jnp.asarray(batch["label"])
        mask = _mask(batch, pred.shape[0])
        sums = image.error_sums(pred, target, mask)
        new = dict(state)
        new["abs"], new["abs_c"] = image.kahan_add(state["abs"], state["abs_c"], sums["abs"])
        new["sq"], new["sq_c"] = image.kahan_add(state["sq"], state["sq_c"], sums["sq"])
        new["count"] = state["count"] + sums["count"]
        if self.features_fn is not None:
            buf = state["fid"]
            # Row of each real example: the next free rows in order; padded rows go out of range
            # (index = capacity) and are dropped by the scatter, as are rows past the capacity.
            rows = buf["n"] + jnp.cumsum(mask.astype(jnp.int32)) - 1
            rows = jnp.where(mask, rows, self.fid_capacity)
            new["fid"] = {
                "fake": buf["fake"].at[rows].set(self._features(state, pred), mode="drop"),
                "real": buf["real"].at[rows].set(self._features(state, target), mode="drop"),
                "n": buf["n"] + jnp.sum(mask, dtype=jnp.int32),
            }
        return new

    def finalize(self, state):
        out = image.errors_from_sums(state["abs"], state["sq"], state["count"])
        if self.features_fn is not None:
            n = int(np.asarray(state["fid"]["n"]))
            if n > self.fid_capacity:
                raise ValueError(
                    f"the split has {n} examples but the FID feature buffer holds "
                    f"{self.fid_capacity}: pass make_evaluator(..., fid_capacity>={n})")
            if n < 2:
                out.update(fid=math.nan, kid=math.nan, kid_std=math.nan)
            else:
                fake = np.asarray(state["fid"]["fake"][:n], np.float64)
                real = np.asarray(state["fid"]["real"][:n], np.float64)
                out["fid"] = fid.fid(fake, real)
                out["kid"], out["kid_std"] = fid.kid(
                    fake, real, num_subsets=self.kid_subsets,
                    max_subset_size=self.kid_subset_size, seed=self.kid_seed)
        return out


def make_evaluator(
    task: str,
    *,
    num_classes: int | None,
    ignore_index: int | None = 255,
    fid_features_fn: Callable[..., jax.Array] | None = None,
    top_k: Sequence[int] = (),
    zero_division: float = 0.0,
    fid_capacity: int = 10_000,
    fid_feature_dim: int | None = None,
    kid_subsets: int = 50,
    kid_subset_size: int = 1000,
    kid_seed: int = 0,
) -> Evaluator:
    """The evaluator of `task` (see the module docstring for what it reads and returns).

    Args:
      task: 'multiclass', 'multilabel', 'segmentation' or 'translation'.
      num_classes: C; required for 'multilabel' and 'segmentation', checked for 'multiclass',
        ignored for 'translation'.
      ignore_index: segmentation label that is skipped (255); None skips none.
      fid_features_fn: for 'translation', images -> `[B, D]` features; adds 'fid' and 'kid'.
      top_k: for 'multiclass', extra top-k accuracies ('top5_accuracy' for k = 5).
      zero_division: for 'multilabel', the F1 of a class with no true and no predicted
        positive (scikit-learn's `zero_division`: 0.0 as its default, 1.0, or NaN).
      fid_capacity, fid_feature_dim: size of the feature buffers (rows, feature width; the
        width defaults to the function's `feature_dim` attribute, else 2048).
      kid_subsets, kid_subset_size, kid_seed: KID's subsets (50 of min(1000, N), seed 0).
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
    if task in ("multilabel", "segmentation") and not num_classes:
        raise ValueError(f"task {task!r} needs num_classes")
    if task == "multiclass":
        return MulticlassEvaluator(num_classes, top_k=top_k)
    if task == "multilabel":
        return MultilabelEvaluator(num_classes, zero_division=zero_division)
    if task == "segmentation":
        return SegmentationEvaluator(num_classes, ignore_index=ignore_index)
    return TranslationEvaluator(
        fid_features_fn, fid_capacity=fid_capacity, fid_feature_dim=fid_feature_dim,
        kid_subsets=kid_subsets, kid_subset_size=kid_subset_size, kid_seed=kid_seed,
    )
