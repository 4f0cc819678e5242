"""Flow imputation: the mode of p(x_B | x_A) under G alone (no encoders, no scale fixing)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from flowtest import small_config

from mango_jax import flows
from mango_jax.flows.impute import conditional_mode

STEPS = 200


def test_flow_imputation_approaches_the_gaussian_conditional_mean():
    """G alone on a linear-Gaussian joint: x_A ~ N(0, I), x_B = W x_A + 0.3 ε, so the mode of
    p(x_B | x_A) is W x_A. The imputation error falls as G is trained by maximum likelihood."""
    config = small_config(num_blocks=2, dim=4, num_heads=1, tokens_per_modality=(2, 2),
                          block_pattern=("mmca_ab", "mmca_ba", "coupling"))
    m, k = flows.token_counts(config)
    d = config.dim
    flow = flows.build(config, rngs=nnx.Rngs(0))
    rng = np.random.default_rng(0)
    w = 0.6 * rng.normal(size=(m * d, k * d)) / np.sqrt(m * d)

    def sample(n):
        a = rng.normal(size=(n, m * d))
        b = a @ w + 0.3 * rng.normal(size=(n, k * d))
        return (jnp.asarray(a.reshape(n, m, d), jnp.float32),
                jnp.asarray(b.reshape(n, k, d), jnp.float32))

    graphdef, state = nnx.split(flow)
    opt = optax.adam(3e-3)

    @jax.jit
    def train(state, opt_state, a, b):
        def loss(state):
            z, logdet = nnx.merge(graphdef, state)(jnp.concatenate([a, b], 1))
            return -jnp.mean(flows.log_likelihood(z, logdet))

        grads = jax.grad(loss)(state)
        updates, opt_state = opt.update(grads, opt_state, state)
        return optax.apply_updates(state, updates), opt_state

    @jax.jit
    def impute(state, a):
        g = nnx.merge(graphdef, state)
        return conditional_mode(lambda x: flows.log_likelihood(*g(x)), a,
                                jnp.zeros((a.shape[0], k, d)), missing="b", steps=100,
                                step_size=0.1)

    a_test, _ = sample(256)
    exact = np.asarray(a_test).reshape(256, -1) @ w

    def error(state):
        return float(np.mean((np.asarray(impute(state, a_test)).reshape(256, -1) - exact) ** 2))

    errors, opt_state = [error(state)], opt.init(state)
    for _ in range(2):
        for _step in range(STEPS):
            state, opt_state = train(state, opt_state, *sample(128))
        errors.append(error(state))
    scale = float(np.mean(exact ** 2))
    assert errors[2] < errors[1] < errors[0], errors
    assert errors[2] < 0.25 * scale, (errors, scale)
