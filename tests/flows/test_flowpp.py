"""Flow++ baseline: mixture-of-logistics coupling, its iterative inverse and exact log-det."""

import functools

import chex
import flowtest
import jax
import jax.numpy as jnp
import numpy as np
import scipy.optimize
import scipy.special
from absl.testing import parameterized
from flax import nnx
from flowtest import D, inputs

from mango_jax import flows
from mango_jax.flows import checks, flowpp
from mango_jax.flows.actnorm import ActNorm
from mango_jax.flows.glow import ChannelMixLU


def small_config(**overrides):
    return flowtest.small_config(**{"layer": "flowpp", "flowpp.width": 8, **overrides})


@functools.cache
def perturbed_flow(seed=0, relative=0.5):
    flow = flows.build(small_config(), rngs=nnx.Rngs(seed))
    return checks.perturb(flow, jax.random.key(seed + 100), relative=relative, zero_std=0.1)


def layer_of(name):
    flow = perturbed_flow()
    return {"coupling": flow.children()[1].layers[2], "block": flow.children()[0]}[name]


def extreme_mixture(key, shape, k=4, m=1.0, c=1.0):
    """Mixture parameters at and beyond typical ranges: peaked weights, means and log-scales
    spread over their whole bounded range."""
    k1, k2, k3 = jax.random.split(key, 3)
    log_pi = jax.nn.log_softmax(5.0 * jax.random.normal(k1, shape + (k,)))
    mean = m * jnp.tanh(3.0 * jax.random.normal(k2, shape + (k,)))
    log_scale = c * jnp.tanh(3.0 * jax.random.normal(k3, shape + (k,)))
    return log_pi, mean, log_scale


ContractTest = flowtest.contract_tests(layer_of, ("coupling", "block"), logdet_atol=1e-5)


class FlowPPTest(chex.TestCase, parameterized.TestCase):

    def test_strongly_perturbed_flow_still_inverts(self):
        flow = perturbed_flow(seed=3, relative=2.0)
        x = 2.0 * inputs()
        self.assertLess(checks.relative_reconstruction_error(flow, x, jit=False), 1e-5)

    def test_solver_matches_float64_root_finding(self):
        shape = (32,)
        log_pi, mean, log_scale = extreme_mixture(jax.random.key(0), shape)
        z = 8.0 * jax.random.normal(jax.random.key(1), shape)
        x, iterations = jax.jit(lambda *a: flowpp.solve_mixture_logit(
            *a, tolerance=1e-6, max_iterations=50))(z, log_pi, mean, log_scale)
        self.assertLess(int(iterations), 50)
        log_w, mu, s = (np.asarray(a, np.float64) for a in (log_pi, mean, log_scale))
        for i in range(shape[0]):
            def residual(v, i=i):
                t = (v - mu[i]) * np.exp(-s[i])
                log_cdf = scipy.special.logsumexp(log_w[i] + scipy.special.log_expit(t))
                log_sf = scipy.special.logsumexp(log_w[i] + scipy.special.log_expit(-t))
                return log_cdf - log_sf - float(z[i])
            ref = scipy.optimize.brentq(residual, -200.0, 200.0, xtol=1e-12)
            self.assertLessEqual(abs(float(x[i]) - ref), 1e-6 * max(abs(ref), 1.0) + 2e-6)

    def test_derivative_bounds_hold_for_extreme_parameters(self):
        m, c = 1.0, 1.0
        shape = (4096,)
        log_pi, mean, log_scale = extreme_mixture(jax.random.key(2), shape, m=m, c=c)
        x = 30.0 * jax.random.normal(jax.random.key(3), shape)
        log_dg = np.asarray(flowpp.mixture_logit(x, log_pi, mean, log_scale)[1])
        lower = -c + np.log(scipy.special.expit(-m * np.exp(c)))
        self.assertGreaterEqual(log_dg.min(), lower - 1e-5)
        self.assertLessEqual(log_dg.max(), c + 1e-5)
        self.assertGreater(log_dg.max(), c - 0.01)  # the upper bound is tight in the tails

    def test_build_gives_num_blocks(self):
        flow = flows.build(small_config(num_blocks=3), rngs=nnx.Rngs(0))
        self.assertLen(flow.children(), 3)
        for b, blk in enumerate(flow.children()):
            self.assertEqual([type(layer) for layer in blk.layers],
                             [ActNorm, ChannelMixLU, flowpp.MixtureLogisticCoupling])
            self.assertEqual(blk.layers[2].moved, flows.realnvp.channel_partition(D, b)[1])
        with self.assertRaisesRegex(ValueError, "divisible"):
            flows.build(small_config(**{"flowpp.width": 15}), rngs=nnx.Rngs(0))
