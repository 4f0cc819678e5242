"""Segmentation metrics against NumPy / scikit-learn references."""

import jax
import numpy as np
import pytest
from sklearn.metrics import confusion_matrix as sk_confusion

from mango_jax.metrics import make_evaluator, segmentation


def _torch_bilinear_1d(n_in, n_out):
    """Source indices and weights of PyTorch's bilinear, align_corners=False (no antialias)."""
    scale = n_in / n_out
    src = np.maximum((np.arange(n_out) + 0.5) * scale - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(int), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    w1 = src - i0
    return i0, i1, 1.0 - w1, w1


def torch_bilinear(x, size):
    """Reference `F.interpolate(x, size, mode='bilinear', align_corners=False)`, NHWC."""
    h0, h1, hw0, hw1 = _torch_bilinear_1d(x.shape[1], size[0])
    w0, w1, ww0, ww1 = _torch_bilinear_1d(x.shape[2], size[1])
    rows = x[:, h0] * hw0[None, :, None, None] + x[:, h1] * hw1[None, :, None, None]
    return rows[:, :, w0] * ww0[None, None, :, None] + rows[:, :, w1] * ww1[None, None, :, None]


@pytest.mark.parametrize("src,dst", [((5, 7), (13, 11)), ((13, 11), (5, 4)), ((6, 6), (6, 6)),
                                     ((8, 10), (30, 40))])
def test_resize_matches_pytorch_bilinear(src, dst):
    x = np.random.default_rng(0).normal(size=(2, *src, 3)).astype(np.float32)
    got = np.asarray(segmentation.resize_bilinear(x, dst))
    np.testing.assert_allclose(got, torch_bilinear(x.astype(np.float64), dst), atol=1e-5)


def _reference_scores(pred, labels, num_classes, valid):
    cm = sk_confusion(labels[valid], pred[valid], labels=np.arange(num_classes)).astype(float)
    diag, rows, cols = np.diag(cm), cm.sum(1), cm.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = diag / rows          # NaN where the class is absent from the labels
        iou = diag / (rows + cols - diag)  # NaN where absent from labels and predictions
    return cm, {"pixel_acc": diag.sum() / cm.sum(), "mean_acc": np.nanmean(acc),
                "miou": np.nanmean(iou)}


def _seg_data(rng, n=11, num_classes=6, low=(6, 8), full=(23, 31)):
    logits = rng.normal(size=(n, *low, num_classes)).astype(np.float32)
    logits[..., 5] -= 10  # class 5 is never predicted ...
    labels = rng.integers(0, num_classes - 1, (n, *full)).astype(np.int32)  # ... nor labelled
    labels[rng.random(labels.shape) < 0.15] = 255  # ignored pixels
    labels[0, 0, :3] = 77  # out-of-range labels are ignored too
    labels[labels == 4] = 3  # class 4 is predicted but never labelled: IoU 0, accuracy NaN
    return logits, labels


def test_confusion_and_scores_match_reference():
    rng = np.random.default_rng(0)
    logits, labels = _seg_data(rng)
    c = logits.shape[-1]
    pred = np.asarray(segmentation.predict_labels(logits, labels.shape[1:]))
    ref_pred = torch_bilinear(logits.astype(np.float64), labels.shape[1:]).argmax(-1)
    assert np.mean(pred == ref_pred) > 0.999  # float32 vs float64 ties aside
    valid = (labels != 255) & (labels < c)
    ref_cm, ref = _reference_scores(pred, labels, c, valid)
    cm = np.asarray(segmentation.confusion_matrix(pred, labels, c))
    np.testing.assert_array_equal(cm, ref_cm)
    scores = segmentation.scores_from_confusion(cm)
    assert np.isnan(scores["per_class_iou"][5]) and scores["per_class_iou"][4] == 0
    assert np.isnan(scores["per_class_acc"][4])
    for k, v in ref.items():
        assert scores[k] == pytest.approx(v, abs=1e-6), k


def test_evaluator_batches_equal_whole_split_and_ignore_padding():
    rng = np.random.default_rng(1)
    logits, labels = _seg_data(rng)
    c = logits.shape[-1]
    ev = make_evaluator("segmentation", num_classes=c)
    whole = ev.update(ev.init(), logits, {"label": labels})
    update = jax.jit(ev.update)
    state = ev.init()
    bs = 4
    for start in range(0, len(labels), bs):
        lo, la = logits[start:start + bs], labels[start:start + bs]
        real = len(la)
        mask = np.arange(bs) < real
        # Padded examples carry confident, valid-looking garbage that must not count.
        lo = np.concatenate([lo, np.full((bs - real, *lo.shape[1:]), 3.0, np.float32)])
        la = np.concatenate([la, np.zeros((bs - real, *la.shape[1:]), np.int32)])
        state = update(state, lo, {"label": la, "mask": mask})
    np.testing.assert_array_equal(np.asarray(state["confusion"]), np.asarray(whole["confusion"]))
    pred = np.asarray(segmentation.predict_labels(logits, labels.shape[1:]))
    _, ref = _reference_scores(pred, labels, c, (labels != 255) & (labels < c))
    got = ev.finalize(state)
    assert set(got) == {"pixel_acc", "mean_acc", "miou"}
    for k, v in ref.items():
        assert got[k] == pytest.approx(v, abs=1e-6), k


def test_ignore_index_none_and_custom():
    pred = np.array([[[0, 1], [1, 1]]], np.int32)
    labels = np.array([[[0, 1], [2, 2]]], np.int32)
    cm = np.asarray(segmentation.confusion_matrix(pred, labels, 3, ignore_index=2))
    assert cm.sum() == 2 and cm[0, 0] == 1 and cm[1, 1] == 1
    cm = np.asarray(segmentation.confusion_matrix(pred, labels, 3, ignore_index=None))
    assert cm.sum() == 4 and cm[2, 1] == 2


def test_empty_confusion_is_nan():
    scores = segmentation.scores_from_confusion(np.zeros((3, 3)))
    assert all(np.isnan(scores[k]) for k in ("pixel_acc", "mean_acc", "miou"))


def test_update_under_jit_with_a_sharded_batch():
    """Data-parallel evaluation: the batch split over every device gives the same counts."""
    n_dev = jax.device_count()
    mesh = jax.make_mesh((n_dev,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    shard = jax.sharding.NamedSharding(mesh, jax.P("data"))
    rng = np.random.default_rng(3)
    logits, labels = _seg_data(rng, n=2 * n_dev)
    mask = np.arange(2 * n_dev) < 2 * n_dev - 1
    ev = make_evaluator("segmentation", num_classes=logits.shape[-1])
    batch = {"label": jax.device_put(labels, shard), "mask": jax.device_put(mask, shard)}
    state = jax.jit(ev.update)(ev.init(), jax.device_put(logits, shard), batch)
    ref = ev.update(ev.init(), logits, {"label": labels, "mask": mask})
    np.testing.assert_array_equal(np.asarray(state["confusion"]), np.asarray(ref["confusion"]))
