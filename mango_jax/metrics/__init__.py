"""Evaluation metrics of mango_jax and the evaluator interface the training loop calls.

- `make_evaluator(task, num_classes=..., ...)`: `init` / `update` (pure, jit-able) /
  `finalize` for 'multiclass', 'multilabel', 'segmentation' and 'translation'
  (`mango_jax.metrics.evaluator` documents the interface).
- `classification`, `segmentation`, `image`: the per-batch statistics and the formulas.
- `fid`: FID and KID from feature vectors (NumPy, float64).
- `inception`: the FID Inception-v3 in Flax NNX and its `.npz` weight format;
  `python -m mango_jax.metrics.convert_inception` writes that file from pytorch-fid's `.pth`.

The Inception module is imported on demand (`from mango_jax.metrics import inception`).
"""

from mango_jax.metrics.evaluator import (
    TASKS,
    Evaluator,
    MulticlassEvaluator,
    MultilabelEvaluator,
    SegmentationEvaluator,
    TranslationEvaluator,
    make_evaluator,
)

__all__ = [
    "TASKS",
    "Evaluator",
    "MulticlassEvaluator",
    "MultilabelEvaluator",
    "SegmentationEvaluator",
    "TranslationEvaluator",
    "make_evaluator",
]
