"""RealNVP baseline: exact inverse and log-det of its couplings, against float64 references."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import parameterized
from flax import nnx

from mango_jax import flows
from mango_jax.flows import checks, realnvp

# Sizes where D, D/heads and the half token count all differ.
B, M, D, HEADS = 2, 6, 12, 2


def small_config(**overrides):
    config = flows.default_config()
    config.update(layer="realnvp", num_blocks=4, dim=D, num_heads=HEADS,
                  tokens_per_modality=(M, M), coupling_hidden=16)
    config.update(overrides)
    return config


@functools.cache
def perturbed_flow():
    """A perturbed 8-block G: even blocks cover the four token partitions, odd blocks both
    channel parities."""
    return checks.perturb(flows.build(small_config(num_blocks=8), rngs=nnx.Rngs(0)),
                          jax.random.key(100))


def block(index):
    return perturbed_flow().layers[index]


def inputs(seed=1):
    return jax.random.normal(jax.random.key(seed), (B, 2 * M, D))


def assert_logdet_matches(layer, x):
    ref = checks.brute_force_logdet(layer, x)
    with jax.enable_x64(True):
        ours = np.asarray(checks.cast_floats(layer, jnp.float64)(
            jnp.asarray(np.asarray(x, np.float64)))[1])
    np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(np.asarray(layer(x)[1]), ref, rtol=1e-5, atol=1e-5)


# (block, layer): the token coupling of every partition, and both channel parities.
LAYERS = ((0, 0), (2, 0), (4, 0), (6, 0), (1, 0), (3, 0))


class RealNVPTest(chex.TestCase, parameterized.TestCase):

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters(*LAYERS)
    def test_round_trip_both_ways(self, index, position):
        layer = block(index).layers[position]
        graph, state = nnx.split(layer)
        fwd = self.variant(lambda s, x: nnx.merge(graph, s)(x))
        inv = self.variant(lambda s, y: nnx.merge(graph, s).inverse(y))
        x = inputs()
        y, logdet = fwd(state, x)
        x_rec, logdet_inv = inv(state, y)
        chex.assert_shape(logdet, (B,))
        chex.assert_trees_all_close(x_rec, x, atol=1e-5)
        chex.assert_trees_all_close(logdet_inv, -logdet, atol=1e-6)
        chex.assert_trees_all_close(fwd(state, inv(state, x)[0])[0], x, atol=1e-5)
        self.assertGreater(float(jnp.abs(y - x).max()), 1e-3)  # the perturbed layer moves x

    @parameterized.parameters(*LAYERS)
    def test_logdet_equals_brute_force(self, index, position):
        assert_logdet_matches(block(index).layers[position], inputs())

    def test_block_logdet_and_inverse(self):
        layer = block(3)
        assert_logdet_matches(layer, inputs())
        self.assertLess(checks.relative_reconstruction_error(layer, inputs(), jit=False), 1e-5)

    def test_conditioning_entries_pass_through(self):
        for index, position in LAYERS:
            layer = block(index).layers[position]
            x = inputs()
            cond = np.asarray(layer.cond)
            kept = x[:, cond] if layer.axis == realnvp.TOKENS else x[..., cond]
            got = layer(x)[0]
            got = got[:, cond] if layer.axis == realnvp.TOKENS else got[..., cond]
            chex.assert_trees_all_close(got, kept)

    def test_batch_elements_are_independent(self):
        layer = block(2)
        x = inputs()
        y, logdet = layer(x)
        y2, logdet2 = layer(x.at[1].set(3.0 * x[1] + 1.0))
        chex.assert_trees_all_close(y2[0], y[0], atol=1e-6)
        chex.assert_trees_all_close(logdet2[0], logdet[0], atol=1e-6)

    def test_gradients_are_finite(self):
        graph, params, rest = nnx.split(block(0), nnx.Param, ...)

        def loss(params, x):
            y, logdet = nnx.merge(graph, params, rest)(x)
            return jnp.mean(y ** 2) - jnp.mean(logdet)

        grads = jax.jit(jax.grad(loss, argnums=(0, 1)))(params, inputs())
        for leaf in jax.tree.leaves(grads):
            self.assertTrue(bool(jnp.all(jnp.isfinite(leaf))))
        self.assertGreater(sum(float(jnp.abs(g).sum()) for g in jax.tree.leaves(grads[0])), 0)

    def test_build_gives_num_blocks_that_invert(self):
        config = small_config(num_blocks=5)
        flow = flows.build(config, rngs=nnx.Rngs(0))
        self.assertLen(flow.layers, 5)
        for b, blk in enumerate(flow.layers):
            (layer,) = blk.layers
            if b % 2 == 0:
                self.assertEqual(layer.axis, realnvp.TOKENS)
                self.assertEqual((layer.cond, layer.moved), realnvp.token_partition(
                    realnvp.TOKEN_PARTITIONS[(b // 2) % 4], 2 * M))
            else:
                self.assertEqual(layer.axis, realnvp.CHANNELS)
                self.assertEqual(layer.cond, realnvp.channel_partition(D, b // 2)[0])
        # A fresh G is the identity (zero-initialised conditioners).
        self.assertEqual(checks.relative_reconstruction_error(flow, inputs(), jit=False), 0.0)
        flow = checks.perturb(flow, jax.random.key(3))
        self.assertLess(checks.relative_reconstruction_error(flow, inputs(), jit=False), 1e-5)


class PartitionTest(parameterized.TestCase):

    def test_token_partitions(self):
        self.assertEqual(realnvp.token_partition("halves", 6), ((0, 1, 2), (3, 4, 5)))
        self.assertEqual(realnvp.token_partition("halves_reversed", 6), ((3, 4, 5), (0, 1, 2)))
        self.assertEqual(realnvp.token_partition("checkerboard", 6), ((0, 2, 4), (1, 3, 5)))
        self.assertEqual(realnvp.token_partition("checkerboard_reversed", 6),
                         ((1, 3, 5), (0, 2, 4)))
        self.assertEqual(realnvp.channel_partition(5, 0), ((0, 1, 2), (3, 4)))
        self.assertEqual(realnvp.channel_partition(5, 1), ((3, 4), (0, 1, 2)))

    def test_errors(self):
        with self.assertRaisesRegex(ValueError, "even"):
            flows.build(small_config(tokens_per_modality=(3, 4)), rngs=nnx.Rngs(0))
        with self.assertRaisesRegex(ValueError, "unknown token partition"):
            realnvp.token_partition("diagonal", 4)
