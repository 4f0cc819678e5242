"""Imputation by gradient ascent on a joint log-density: on a linear-Gaussian joint, whose
conditional mean is known exactly, it recovers E[x_B | x_A] (and E[x_A | x_B]); with a
projection it stays on the projected set."""

import jax.numpy as jnp
import numpy as np

from mango_jax.flows.impute import conditional_mode, missing_mask
from mango_jax.model import fixed_scale

M, K, D = 2, 2, 4


def gaussian_joint(seed=0):
    """x_A ~ N(0, I), x_B = W x_A + 0.3 ε: the joint's precision and W (float64)."""
    rng = np.random.default_rng(seed)
    w = 0.6 * rng.normal(size=(M * D, K * D)) / np.sqrt(M * D)
    cov = np.block([[np.eye(M * D), w], [w.T, w.T @ w + 0.09 * np.eye(K * D)]])
    precision = jnp.asarray(np.linalg.inv(cov), jnp.float32)

    def log_prob(x):
        x = x.reshape(x.shape[0], -1)
        return -0.5 * jnp.einsum("bi,ij,bj->b", x, precision, x)

    return log_prob, w, cov, rng


def test_recovers_the_exact_conditional_means():
    log_prob, w, cov, rng = gaussian_joint()
    a = rng.normal(size=(128, M * D))
    b = a @ w + 0.3 * rng.normal(size=(128, K * D))  # Drawn from the joint.
    # Rows 0-127 miss x_B (start: zeros), rows 128-255 miss x_A: one ascent imputes both.
    x = np.concatenate([np.c_[a, np.zeros_like(b)], np.c_[np.zeros_like(a), b]])
    missing = jnp.concatenate([missing_mask(128, (M, K), "b"), missing_mask(128, (M, K), "a")])
    x_hat = np.asarray(conditional_mode(log_prob, jnp.asarray(x.reshape(256, M + K, D),
                                                              jnp.float32),
                                        missing, steps=300, step_size=0.1)).reshape(256, -1)
    np.testing.assert_array_equal(x_hat[:128, :M * D], x[:128, :M * D].astype(np.float32))
    np.testing.assert_allclose(x_hat[:128, M * D:], a @ w, atol=0.02)  # E[x_B | x_A] = W x_A.
    # E[x_A | x_B] = Σ_AB Σ_BB⁻¹ x_B, the other direction.
    expected = b @ np.linalg.solve(cov[M * D:, M * D:], cov[M * D:, :M * D])
    np.testing.assert_allclose(x_hat[128:, :M * D], expected, atol=0.05)


def test_projection_keeps_tokens_scale_fixed():
    log_prob, _, _, rng = gaussian_joint()
    a = jnp.asarray(rng.normal(size=(16, M, D)), jnp.float32)
    x = jnp.concatenate([a, jnp.ones((16, K, D)) + jnp.arange(D)], axis=1)
    x_hat = np.asarray(conditional_mode(log_prob, x, missing_mask(16, (M, K), "b"), steps=20,
                                        step_size=0.1, project=fixed_scale))
    np.testing.assert_array_equal(x_hat[:, :M], a)  # The observed tokens are not projected.
    np.testing.assert_allclose(x_hat[:, M:].mean(-1), 0.0, atol=1e-5)
    np.testing.assert_allclose(x_hat[:, M:].var(-1), 1.0, atol=1e-4)
