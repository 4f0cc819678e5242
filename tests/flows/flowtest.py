"""Shared set-up of the flow tests: a small G's config, inputs and the brute-force log-det check."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import parameterized
from flax import nnx

from mango_jax import flows
from mango_jax.flows import checks

B, M, D, HEADS = 2, 6, 12, 2


def small_config(**overrides):
    """A 2-block G of width D on two modalities of M tokens, with `overrides` applied (a
    layer's own field by its dotted name, e.g. `**{"glow.steps_per_block": 2}`)."""
    config = flows.default_config()
    config.update(num_blocks=2, dim=D, num_heads=HEADS, tokens_per_modality=(M, M),
                  coupling_hidden=16)
    config.update_from_flattened_dict(overrides)
    return config


def inputs(seed=1, shape=(B, 2 * M, D)):
    return jax.random.normal(jax.random.key(seed), shape)


def assert_logdet_matches(layer, x):
    """The layer's log-det equals the float64 brute-force Jacobian's: to 1e-6 with the layer in
    float64, and to float32 rounding (1e-5) in float32."""
    ref = checks.brute_force_logdet(layer, x)
    logdet = nnx.jit(lambda layer, x: layer(x)[1])
    with jax.enable_x64(True):
        ours = np.asarray(logdet(checks.cast_floats(layer, jnp.float64),
                                 jnp.asarray(np.asarray(x, np.float64))))
    np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(np.asarray(logdet(layer, x)), ref, rtol=1e-5, atol=1e-5)


def assert_round_trip(variant, layer, x, *, logdet_atol=1e-6):
    """`G⁻¹(G(x)) = x` and `G(G⁻¹(x)) = x` to 1e-5 and the inverse log-det `= −` the forward's,
    with both directions wrapped by a chex `variant`; returns `G(x)`."""
    graph, state = nnx.split(layer)
    fwd = variant(lambda s, x: nnx.merge(graph, s)(x))
    inv = variant(lambda s, y: nnx.merge(graph, s).inverse(y))
    y, logdet = fwd(state, x)
    x_rec, logdet_inv = inv(state, y)
    chex.assert_shape(logdet, (x.shape[0],))
    chex.assert_trees_all_close(x_rec, x, atol=1e-5)
    chex.assert_trees_all_close(logdet_inv, -logdet, atol=logdet_atol)
    chex.assert_trees_all_close(fwd(state, inv(state, x)[0])[0], x, atol=1e-5)
    return y


def assert_batch_independent(fn, x, *, logdet_atol=1e-6):
    """`fn` (a layer or its inverse) maps example 0 the same whatever example 1 holds."""
    fn = jax.jit(fn)
    out, logdet = fn(x)
    out2, logdet2 = fn(x.at[1].set(3.0 * x[1] + 1.0))
    chex.assert_trees_all_close(out2[0], out[0], atol=1e-6)
    chex.assert_trees_all_close(logdet2[0], logdet[0], atol=logdet_atol)


def assert_gradients_finite(layer, x):
    """The gradients of an NLL-like loss are finite for inputs and parameters, and reach the
    parameters."""
    graph, params, rest = nnx.split(layer, nnx.Param, ...)

    def loss(params, x):
        y, logdet = nnx.merge(graph, params, rest)(x)
        return jnp.mean(y ** 2) - jnp.mean(logdet)

    grads = jax.jit(jax.grad(loss, argnums=(0, 1)))(params, x)
    for leaf in jax.tree.leaves(grads):
        assert bool(jnp.all(jnp.isfinite(leaf)))
    assert sum(float(jnp.abs(g).sum()) for g in jax.tree.leaves(grads[0])) > 0


def contract_tests(layer_of, names, *, logdet_names=None, whole="block", make_inputs=inputs,
                   logdet_atol=1e-6):
    """The flow contract as a TestCase for a layer kind's test file: round trip (jit and not)
    and brute-force log-det of `layer_of(name)` for `names` (`logdet_names` where the log-det
    is checked on fewer), and on the `whole` block batch independence both ways and finite
    gradients. `logdet_atol`: the round trip's inverse log-det tolerance, where float32
    rounding of the kind's log-det needs more."""
    logdet_names = names if logdet_names is None else logdet_names

    class ContractTest(chex.TestCase, parameterized.TestCase):

        @chex.variants(with_jit=True, without_jit=True)
        @parameterized.parameters(*names)
        def test_round_trip_both_ways(self, name):
            assert_round_trip(self.variant, layer_of(name), make_inputs(), logdet_atol=logdet_atol)

        @parameterized.parameters(*logdet_names)
        def test_logdet_equals_brute_force(self, name):
            assert_logdet_matches(layer_of(name), make_inputs())

        def test_batch_elements_are_independent_both_ways(self):
            layer = layer_of(whole)
            for fn in (layer, layer.inverse):
                assert_batch_independent(fn, make_inputs())

        def test_gradients_are_finite(self):
            assert_gradients_finite(layer_of(whole), make_inputs())

    return ContractTest
