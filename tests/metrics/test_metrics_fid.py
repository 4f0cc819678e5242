"""FID / KID arithmetic against closed forms and independent NumPy / SciPy references, and the
translation evaluator (MAE, MSE, FID, KID) with a small stand-in feature function."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from mango_jax.metrics import fid, make_evaluator


def _random_cov(rng, d, rank=None):
    a = rng.normal(size=(d, rank or d))
    return a @ a.T / (rank or d) + (0 if rank else 0.1 * np.eye(d))


def _pytorch_fid_reference(mu1, s1, mu2, s2):
    """pytorch-fid's calculate_frechet_distance (scipy sqrtm of the product)."""
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    covmean = np.real(covmean)
    diff = mu1 - mu2
    return diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)


def test_frechet_distance_closed_form_commuting_covariances():
    rng = np.random.default_rng(0)
    d = 12
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    a, b = rng.uniform(0.1, 3, d), rng.uniform(0.1, 3, d)
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    s1, s2 = (q * a) @ q.T, (q * b) @ q.T
    # Same eigenvectors: Tr sqrt(S1 S2) = sum sqrt(a b), so FID = |dmu|^2 + sum (sqrt a - sqrt b)^2.
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert fid.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9)
    assert fid.frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0, abs=1e-9)


def test_frechet_distance_matches_scipy_sqrtm():
    rng = np.random.default_rng(1)
    for d in (3, 16, 64):
        mu1, mu2 = rng.normal(size=d), rng.normal(size=d) * 0.3
        s1, s2 = _random_cov(rng, d), _random_cov(rng, d)
        ref = _pytorch_fid_reference(mu1, s1, mu2, s2)
        assert fid.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(ref, rel=1e-8, abs=1e-8)


def test_trace_sqrt_singular_covariances():
    """Rank-deficient covariances (N < D, the usual FID case at small N) stay exact."""
    rng = np.random.default_rng(2)
    s1, s2 = _random_cov(rng, 20, rank=5), _random_cov(rng, 20, rank=7)
    # Tr sqrt(S1 S2) = sum of singular values of S1^{1/2} S2^{1/2}.
    ref = np.linalg.svd(np.real(scipy.linalg.sqrtm(s1)) @ np.real(scipy.linalg.sqrtm(s2)),
                        compute_uv=False).sum()
    assert fid.trace_sqrt_product(s1, s2) == pytest.approx(ref, rel=1e-6)


def test_fid_from_features_matches_reference_and_gaussian_limit():
    rng = np.random.default_rng(3)
    d, n = 8, 4000
    mu1, mu2 = np.zeros(d), np.full(d, 0.5)
    l1, l2 = np.linalg.cholesky(_random_cov(rng, d)), np.linalg.cholesky(_random_cov(rng, d))
    x = mu1 + rng.normal(size=(n, d)) @ l1.T
    y = mu2 + rng.normal(size=(n + 500, d)) @ l2.T
    ref = _pytorch_fid_reference(x.mean(0), np.cov(x, rowvar=False),
                                 y.mean(0), np.cov(y, rowvar=False))
    got = fid.fid(x.astype(np.float32), y.astype(np.float32))
    assert got == pytest.approx(ref, rel=1e-5)
    # The sample FID approaches the closed form of the two Gaussians.
    exact = fid.frechet_distance(mu1, l1 @ l1.T, mu2, l2 @ l2.T)
    assert got == pytest.approx(exact, rel=0.1)


def _kid_loop(x, y):
    """Unbiased MMD^2 with k(a, b) = (a.b / d + 1)^3 by explicit loops over pairs."""
    m, d = x.shape
    k = lambda a, b: (float(np.dot(a, b)) / d + 1.0) ** 3
    kxx = sum(k(x[i], x[j]) for i, j in itertools.permutations(range(m), 2)) / (m * (m - 1))
    kyy = sum(k(y[i], y[j]) for i, j in itertools.permutations(range(m), 2)) / (m * (m - 1))
    kxy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    return kxx + kyy - 2 * kxy


def test_kid_matches_loop_reference():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(40, 6))
    y = rng.normal(size=(33, 6)) + 0.4
    got, got_std = fid.kid(x, y, num_subsets=4, max_subset_size=25, seed=7)
    # The documented draw: default_rng(seed); per subset choice(N1), then choice(N2).
    draw = np.random.default_rng(7)
    values = []
    for _ in range(4):
        i1 = draw.choice(40, 25, replace=False)
        i2 = draw.choice(33, 25, replace=False)
        values.append(_kid_loop(x[i1], y[i2]))
    assert got == pytest.approx(np.mean(values), rel=1e-9)
    assert got_std == pytest.approx(np.std(values), rel=1e-6)


def test_kid_full_set_is_order_free_and_unbiased():
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(20, 4)), rng.normal(size=(20, 4)) * 1.5
    # Subsets of min(1000, N) = all rows: every subset is a permutation, so KID = full MMD^2.
    got, std = fid.kid(x, y, num_subsets=3)
    assert got == pytest.approx(_kid_loop(x, y), rel=1e-9) and std == pytest.approx(0, abs=1e-9)
    # Same distribution: the unbiased estimate is centred on 0.
    same = [fid.kid(rng.normal(size=(200, 4)), rng.normal(size=(200, 4)), num_subsets=1)[0]
            for _ in range(20)]
    assert abs(np.mean(same)) < 3 * np.std(same) / np.sqrt(len(same)) + 1e-12
    shifted = fid.kid(rng.normal(size=(200, 4)), rng.normal(size=(200, 4)) + 1, num_subsets=1)
    assert shifted[0] > 10 * np.std(same)


# ---------------------------------------------------------------------------------------------
# The translation evaluator.

_PROJ = np.random.default_rng(9).normal(size=(3 * 4 * 4, 5)).astype(np.float32)


def _features(images):
    """A small traceable stand-in for Inception: 4x4 average pooling and a fixed projection."""
    b, h, w, c = images.shape
    pooled = images.reshape(b, 4, h // 4, 4, w // 4, c).mean(axis=(2, 4)).reshape(b, -1)
    return jnp.tanh(pooled @ _PROJ)


class _FunctionalFeatures:
    """The `params` / `apply` form that keeps the weights in the evaluator state."""

    feature_dim = 5

    def __init__(self):
        self.params = {"proj": jnp.asarray(_PROJ)}

    def apply(self, params, images):
        b, h, w, c = images.shape
        pooled = images.reshape(b, 4, h // 4, 4, w // 4, c).mean(axis=(2, 4)).reshape(b, -1)
        return jnp.tanh(pooled @ params["proj"])


def _images(rng, n):
    target = np.tanh(rng.normal(size=(n, 8, 8, 3))).astype(np.float32)
    pred = np.clip(target + 0.3 * rng.normal(size=target.shape), -1, 1).astype(np.float32)
    return pred, target


def _run(ev, pred, target, bs):
    update = jax.jit(ev.update)
    state = ev.init()
    for start in range(0, len(pred), bs):
        p, t = pred[start:start + bs], target[start:start + bs]
        real = len(p)
        mask = np.arange(bs) < real
        p = np.concatenate([p, np.ones((bs - real, *p.shape[1:]), np.float32)])
        t = np.concatenate([t, -np.ones((bs - real, *t.shape[1:]), np.float32)])
        state = update(state, p, {"label": t, "mask": mask})
    return state


@pytest.mark.parametrize("functional", [False, True])
def test_translation_evaluator(functional):
    rng = np.random.default_rng(6)
    n = 45
    pred, target = _images(rng, n)
    features_fn = _FunctionalFeatures() if functional else _features
    ev = make_evaluator("translation", num_classes=None, fid_features_fn=features_fn,
                        fid_capacity=64, fid_feature_dim=5, kid_subsets=5, kid_subset_size=30)
    state = _run(ev, pred, target, bs=8)
    assert ("fid_params" in state) == functional
    got = ev.finalize(state)
    assert got["mae"] == pytest.approx(np.abs(pred - target).astype(np.float64).mean(), abs=1e-6)
    assert got["mse"] == pytest.approx(((pred - target).astype(np.float64) ** 2).mean(), abs=1e-6)
    f_pred, f_true = np.asarray(_features(pred)), np.asarray(_features(target))
    assert got["fid"] == pytest.approx(fid.fid(f_pred, f_true), rel=1e-5)
    kid_ref = fid.kid(f_pred, f_true, num_subsets=5, max_subset_size=30)
    assert got["kid"] == pytest.approx(kid_ref[0], rel=1e-4, abs=1e-8)
    whole = ev.finalize(ev.update(ev.init(), pred, {"label": target}))
    assert whole == pytest.approx(got, rel=1e-5)


def test_translation_without_features_and_capacity_error():
    rng = np.random.default_rng(7)
    pred, target = _images(rng, 10)
    ev = make_evaluator("translation", num_classes=None)
    got = ev.finalize(_run(ev, pred, target, bs=4))
    assert set(got) == {"mae", "mse"}
    ev = make_evaluator("translation", num_classes=None, fid_features_fn=_features,
                        fid_capacity=6, fid_feature_dim=5)
    with pytest.raises(ValueError, match="fid_capacity>=10"):
        ev.finalize(_run(ev, pred, target, bs=4))


def test_mae_sums_do_not_drift_over_many_batches():
    ev = make_evaluator("translation", num_classes=None)
    update = jax.jit(ev.update)
    state = ev.init()
    x = np.full((2, 4, 4, 3), 0.1, np.float32)
    y = np.zeros_like(x)
    for _ in range(3000):
        state = update(state, x, {"label": y})
    assert ev.finalize(state)["mae"] == pytest.approx(float(np.float32(0.1)), rel=1e-6)


def test_fid_with_fewer_examples_than_dimensions_uses_exact_svd_route():
    """N < D: the N1 x N2 SVD route equals the covariance route and pytorch-fid's sqrtm."""
    rng = np.random.default_rng(8)
    x = rng.normal(size=(30, 48))
    y = rng.normal(size=(37, 48)) * 1.3 + 0.2
    via_cov = fid.frechet_distance(*fid.gaussian_stats(x), *fid.gaussian_stats(y))
    # The covariance route adds sqrt(round-off) ~ 1e-8 per null eigenvalue; the SVD has none.
    assert fid.fid(x, y) == pytest.approx(via_cov, rel=1e-7)
    ref = _pytorch_fid_reference(x.mean(0), np.cov(x, rowvar=False),
                                 y.mean(0), np.cov(y, rowvar=False))
    assert fid.fid(x, y) == pytest.approx(ref, rel=1e-5)


def test_kid_precomputed_kernels_equal_per_subset_kernels(monkeypatch):
    rng = np.random.default_rng(10)
    x, y = rng.normal(size=(60, 7)), rng.normal(size=(50, 7)) + 0.1
    fast = fid.kid(x, y, num_subsets=6, max_subset_size=40, seed=3)
    monkeypatch.setattr(fid, "_PRECOMPUTE_ENTRIES", 0)
    slow = fid.kid(x, y, num_subsets=6, max_subset_size=40, seed=3)
    assert fast == pytest.approx(slow, rel=1e-10)
