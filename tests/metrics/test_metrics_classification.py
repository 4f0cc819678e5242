"""Classification metrics against scikit-learn, whole split vs batch by batch, with padding."""

import warnings

import jax
import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, top_k_accuracy_score

from mango_jax.metrics import classification, make_evaluator


def _batches(arrays, batch_size, pad_value=0):
    """Splits arrays along axis 0 into full batches; the last is padded with `mask` False."""
    n = len(arrays[0])
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        real = stop - start
        mask = np.zeros(batch_size, bool)
        mask[:real] = True
        out = []
        for a in arrays:
            chunk = a[start:stop]
            pad = np.full((batch_size - real,) + a.shape[1:], pad_value, a.dtype)
            out.append(np.concatenate([chunk, pad]))
        yield out, mask


def _run(evaluator, outputs, labels, batch_size, jit=True, garbage_rng=None):
    update = jax.jit(evaluator.update) if jit else evaluator.update
    state = evaluator.init()
    for (o, y), mask in _batches([outputs, labels], batch_size):
        if garbage_rng is not None:  # padded rows hold garbage that must not count
            o = np.where(mask.reshape((-1,) + (1,) * (o.ndim - 1)), o,
                         garbage_rng.normal(size=o.shape).astype(o.dtype) * 5)
        state = update(state, o, {"label": y, "mask": mask, "other": np.zeros(3)})
    return evaluator.finalize(state)


def test_multiclass_accuracy_matches_sklearn():
    rng = np.random.default_rng(0)
    n, c = 203, 10
    logits = rng.normal(size=(n, c)).astype(np.float32)
    labels = rng.integers(0, c, n).astype(np.int32)
    ev = make_evaluator("multiclass", num_classes=c, top_k=(1, 3, 5))
    got = _run(ev, logits, labels, batch_size=32, garbage_rng=rng)
    assert got["accuracy"] == pytest.approx(accuracy_score(labels, logits.argmax(1)), abs=1e-12)
    for k in (1, 3, 5):
        ref = top_k_accuracy_score(labels, logits, k=k, labels=np.arange(c))
        assert got[f"top{k}_accuracy"] == pytest.approx(ref, abs=1e-12)
    # One update over the whole split gives the same numbers.
    whole = ev.finalize(ev.update(ev.init(), logits, {"label": labels}))
    assert whole == got


def test_multiclass_empty_split_is_nan():
    ev = make_evaluator("multiclass", num_classes=3)
    state = ev.update(ev.init(), np.zeros((2, 3), np.float32),
                      {"label": np.zeros(2, np.int32), "mask": np.zeros(2, bool)})
    assert np.isnan(ev.finalize(state)["accuracy"])


def _multilabel_data(rng, n=157, c=23):
    logits = rng.normal(size=(n, c)).astype(np.float32) * 2 - 1
    # Keep logits off the 0.5 boundary so the float32/float64 sigmoid cannot disagree.
    logits = np.where(np.abs(logits) < 1e-3, 0.5, logits).astype(np.float32)
    labels = (rng.random((n, c)) < 0.2).astype(np.float32)
    labels[:, 3] = 0  # never true, sometimes predicted: F1 = 0 whatever zero_division
    labels[:, 7] = 0  # never true and never predicted: F1 = 0/0 -> zero_division
    logits[:, 7] = -4
    logits[:, 11] = -4  # never predicted but sometimes true: F1 = 0
    return logits, labels


@pytest.mark.parametrize("zero_division", [0.0, 1.0, np.nan])
def test_multilabel_f1_matches_sklearn(zero_division):
    rng = np.random.default_rng(1)
    logits, labels = _multilabel_data(rng)
    pred = (1 / (1 + np.exp(-logits.astype(np.float64)))) > 0.5
    ev = make_evaluator("multilabel", num_classes=labels.shape[1], zero_division=zero_division)
    got = _run(ev, logits, labels, batch_size=16, garbage_rng=rng)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for avg in ("micro", "macro"):
            ref = f1_score(labels, pred, average=avg, zero_division=zero_division)
            assert got[f"{avg}_f1"] == pytest.approx(ref, abs=1e-6), avg
        per_class = f1_score(labels, pred, average=None, zero_division=zero_division)
    state = ev.update(ev.init(), logits, {"label": labels})
    np.testing.assert_allclose(ev.details(state)["per_class_f1"], per_class, atol=1e-12)
    assert ev.finalize(state) == pytest.approx(got, abs=1e-12, nan_ok=True)


def test_multilabel_default_matches_sklearn_default():
    """sklearn's default zero_division='warn' scores 0/0 classes as 0, as ours does."""
    rng = np.random.default_rng(2)
    logits, labels = _multilabel_data(rng)
    pred = (1 / (1 + np.exp(-logits.astype(np.float64)))) > 0.5
    ev = make_evaluator("multilabel", num_classes=labels.shape[1])
    got = ev.finalize(ev.update(ev.init(), logits, {"label": labels}))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert got["macro_f1"] == pytest.approx(f1_score(labels, pred, average="macro"), abs=1e-6)
        assert got["micro_f1"] == pytest.approx(f1_score(labels, pred, average="micro"), abs=1e-6)


def test_f1_all_negative_split_follows_zero_division():
    zeros = np.zeros(4)
    assert classification.f1_from_counts(zeros, zeros, zeros)["micro_f1"] == 0.0
    assert classification.f1_from_counts(zeros, zeros, zeros, zero_division=1.0)["macro_f1"] == 1
    assert np.isnan(classification.f1_from_counts(zeros, zeros, zeros,
                                                  zero_division=np.nan)["macro_f1"])


def test_multilabel_threshold_is_strict_on_sigmoid():
    # sigmoid(0) = 0.5 exactly: not a positive prediction.
    counts = classification.multilabel_counts(np.zeros((1, 2), np.float32),
                                              np.ones((1, 2), np.float32))
    assert int(counts["tp"].sum()) == 0 and int(counts["fn"].sum()) == 2


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="unknown task"):
        make_evaluator("regression", num_classes=3)
    with pytest.raises(ValueError, match="needs num_classes"):
        make_evaluator("multilabel", num_classes=None)
    ev = make_evaluator("multiclass", num_classes=4)
    with pytest.raises(ValueError, match="classes"):
        ev.update(ev.init(), np.zeros((2, 3), np.float32), {"label": np.zeros(2, np.int32)})
    with pytest.raises(ValueError, match="mask"):
        ev.update(ev.init(), np.zeros((2, 4), np.float32),
                  {"label": np.zeros(2, np.int32), "mask": np.ones(3, bool)})
