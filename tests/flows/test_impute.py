"""Imputation by gradient ascent on a joint log-density, on linear-Gaussian joints whose
conditional mean is known exactly: with the exact density it recovers E[x_B | x_A] (and
E[x_A | x_B]); with a flow G trained on samples it approaches E[x_B | x_A] as G trains; with a
projection it stays on the projected set."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from mango_jax import flows
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


def test_a_trained_flow_imputes_the_conditional_mean():
    """G alone (no encoders, no scale fixing) fitted by maximum likelihood to samples of the
    joint: as it trains, its imputation approaches E[x_B | x_A] = W x_A. G is two RealNVP
    blocks (a coupling of the B token on the A token, then one over channels), which can
    represent the whitening x_B − W x_A as one learned shift. A MANGO block has no such shift
    of one modality's tokens by a function of the other's: its ICA layers mix the moved tokens
    among themselves with weights set by the conditioning ones (LICA in a learned linear basis
    of the tokens), and its coupling works within each token."""
    rng = np.random.default_rng(0)
    w = 1.5 * rng.normal(size=(D, D)) / np.sqrt(D)
    cov = np.block([[np.eye(D), w], [w.T, w.T @ w + 0.09 * np.eye(D)]])
    exact_nll = 0.5 * np.linalg.slogdet(2 * np.pi * np.e * cov)[1]  # The joint's entropy.
    independent_nll = 0.5 * np.sum(np.log(2 * np.pi * np.e * np.diag(cov)))
    chol = jnp.asarray(np.linalg.cholesky(cov), jnp.float32)

    def sample(key, n):  # [n, 2 tokens (A, B), D] from the joint.
        return (jax.random.normal(key, (n, 2 * D)) @ chol.T).reshape(n, 2, D)

    config = flows.default_config()
    config.update(layer="realnvp", num_blocks=2, dim=D, num_heads=1,
                  tokens_per_modality=(1, 1), coupling_hidden=64)
    graphdef, params = nnx.split(flows.build(config, rngs=nnx.Rngs(0)))
    optimizer = optax.adam(3e-3)

    def log_prob(params, x):
        return flows.log_likelihood(*nnx.merge(graphdef, params)(x))

    @functools.partial(jax.jit, static_argnums=3)
    def fit(params, opt_state, key, steps):
        def step(carry, key):
            params, opt_state = carry
            grads = jax.grad(lambda p: -jnp.mean(log_prob(p, sample(key, 256))))(params)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), None

        return jax.lax.scan(step, (params, opt_state), jax.random.split(key, steps))[0]

    @jax.jit
    def evaluate(params, x):
        x_hat = conditional_mode(lambda v: log_prob(params, v), x.at[:, 1].set(0.0),
                                 missing_mask(len(x), (1, 1), "b"), steps=200, step_size=0.05)
        return -jnp.mean(log_prob(params, x)), x_hat[:, 1]

    test = sample(jax.random.key(1), 1000)
    target = np.asarray(test[:, 0]) @ w  # E[x_B | x_A].
    fill_error = np.sqrt(np.mean(target ** 2))  # Zero filling = the train mean of x_B.
    params, opt_state = params, optimizer.init(params)
    nll, error = [], []
    for i, steps in enumerate((30, 570)):  # After 30 and after 600 steps.
        params, opt_state = fit(params, opt_state, jax.random.key(10 + i), steps)
        value, b_hat = evaluate(params, test)
        nll.append(float(value))
        error.append(float(np.sqrt(np.mean((np.asarray(b_hat) - target) ** 2))))
    # G learns the cross-modal dependence: far below the best independent Gaussian, near the
    # exact entropy; its imputation approaches the conditional mean as it trains.
    assert nll[1] < nll[0] and nll[1] < independent_nll - 3.0 and nll[1] < exact_nll + 2.5
    assert error[1] < 0.5 * error[0] and error[1] < 0.15 * fill_error
