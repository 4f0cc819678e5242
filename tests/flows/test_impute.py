"""Imputation by gradient ascent on a joint log-density: on a linear-Gaussian joint, whose
conditional mean is known exactly, it recovers E[x_B | x_A] (and E[x_A | x_B]); with a
projection it stays on the projected set."""

import jax.numpy as jnp
import numpy as np

from mango_jax.flows.impute import conditional_mode
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
    b_hat = conditional_mode(log_prob, jnp.asarray(a.reshape(128, M, D), jnp.float32),
                             jnp.zeros((128, K, D)), missing="b", steps=100, step_size=0.1)
    np.testing.assert_allclose(np.asarray(b_hat).reshape(128, -1), a @ w, atol=0.02)
    # E[x_A | x_B] = Σ_AB Σ_BB⁻¹ x_B, the other direction.
    b = a @ w + 0.3 * rng.normal(size=(128, K * D))  # Drawn from the joint.
    expected = b @ np.linalg.solve(cov[M * D:, M * D:], cov[M * D:, :M * D])
    a_hat = conditional_mode(log_prob, jnp.asarray(b.reshape(128, K, D), jnp.float32),
                             jnp.zeros((128, M, D)), missing="a", steps=300, step_size=0.1)
    np.testing.assert_allclose(np.asarray(a_hat).reshape(128, -1), expected, atol=0.05)


def test_projection_keeps_tokens_scale_fixed():
    log_prob, _, _, rng = gaussian_joint()
    a = jnp.asarray(rng.normal(size=(16, M, D)), jnp.float32)
    b_hat = np.asarray(conditional_mode(log_prob, a, jnp.ones((16, K, D)) + jnp.arange(D),
                                        missing="b", steps=20, step_size=0.1,
                                        project=fixed_scale))
    np.testing.assert_allclose(b_hat.mean(-1), 0.0, atol=1e-5)
    np.testing.assert_allclose(b_hat.var(-1), 1.0, atol=1e-4)
