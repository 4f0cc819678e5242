"""Robustness scores and detectors against scikit-learn / NumPy."""

import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from mango_jax import robustness


def test_auroc_matches_scikit_learn_with_ties():
    rng = np.random.default_rng(0)
    for neg, pos in [(rng.normal(size=50), rng.normal(0.7, size=70)),
                     (rng.integers(0, 4, 40).astype(float), rng.integers(1, 5, 30).astype(float))]:
        expected = roc_auc_score(np.r_[np.zeros(len(neg)), np.ones(len(pos))], np.r_[neg, pos])
        assert robustness.auroc(neg, pos) == pytest.approx(expected, abs=1e-12)


def test_robustness_scores_match_numpy():
    levels = np.linspace(0, 1, 11)
    f = np.array([0.99, 0.98, 0.95, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2])
    lf = np.array([0.97, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.15, 0.1])
    assert robustness.relative_robustness(levels, f) == pytest.approx(np.trapezoid(f, levels))
    assert robustness.effective_robustness(f, lf) == pytest.approx(
        np.sum(f - (lf + f[0] - lf[0])))
    assert robustness.min_max({"x": 1.0, "y": 3.0, "z": 2.0}) == {"x": 0.0, "y": 1.0, "z": 0.5}
    assert robustness.min_max({"x": 1.0, "y": None}) == {"x": None, "y": None}


def test_max_softmax_per_task():
    logits = jnp.array([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
    p = np.exp(np.asarray(logits)) / np.exp(np.asarray(logits)).sum(-1, keepdims=True)
    np.testing.assert_allclose(robustness.max_softmax("multiclass", logits), p.max(-1), rtol=1e-6)
    s = 1 / (1 + np.exp(-np.asarray(logits)))
    np.testing.assert_allclose(robustness.max_softmax("multilabel", logits),
                               np.maximum(s, 1 - s).mean(-1), rtol=1e-6)
    grid = jnp.broadcast_to(logits[:, None, None], (2, 3, 4, 3))
    np.testing.assert_allclose(robustness.max_softmax("segmentation", grid), p.max(-1),
                               rtol=1e-6)


def test_gaussian_is_the_ledoit_wolf_fit_of_the_features(monkeypatch):
    from scipy.stats import multivariate_normal, norm
    from sklearn.covariance import LedoitWolf

    rng = np.random.default_rng(1)
    a, b = rng.normal(2.0, 3.0, (40, 2, 3)), rng.normal(-1.0, 0.5, (40, 1, 3))
    f = np.concatenate([a, b], 1).reshape(40, -1)
    reference = LedoitWolf().fit(f)
    cov, shrinkage = robustness.ledoit_wolf(f)
    assert shrinkage == pytest.approx(reference.shrinkage_, rel=1e-9)
    np.testing.assert_allclose(cov, reference.covariance_, rtol=1e-9, atol=1e-12)
    x_a, x_b = rng.normal(size=(4, 2, 3)), rng.normal(size=(4, 1, 3))
    x = np.concatenate([x_a, x_b], 1).reshape(4, -1)
    np.testing.assert_allclose(robustness.Gaussian.fit(a, b).log_prob(x_a, x_b),
                               multivariate_normal(f.mean(0), cov).logpdf(x), rtol=1e-9)
    # Above the limit: the diagonal maximum-likelihood Gaussian.
    monkeypatch.setattr(robustness, "MAX_FULL_COVARIANCE_DIMS", 4)
    diagonal = robustness.Gaussian.fit(a, b).log_prob(x_a, x_b)
    np.testing.assert_allclose(diagonal, norm.logpdf(x, f.mean(0), f.std(0)).sum(-1),
                               rtol=1e-9)
