"""RealNVP baseline: exact inverse and log-det of its couplings, against float64 references."""

import functools

import chex
import flowtest
import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import parameterized
from flax import nnx
from flowtest import D, M, assert_logdet_matches, inputs

from mango_jax import flows
from mango_jax.flows import checks, realnvp


def small_config(**overrides):
    return flowtest.small_config(**{"layer": "realnvp", "num_blocks": 4, **overrides})


@functools.cache
def perturbed_flow():
    """A perturbed 8-block G: even blocks cover the four token partitions, odd blocks both
    channel parities."""
    return checks.perturb(flows.build(small_config(num_blocks=8), rngs=nnx.Rngs(0)),
                          jax.random.key(100))


def block(index):
    return perturbed_flow().children()[index]


# (block, layer): the token coupling of every partition, and both channel parities.
LAYERS = ((0, 0), (2, 0), (4, 0), (6, 0), (1, 0), (3, 0))


class RealNVPTest(chex.TestCase, parameterized.TestCase):

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters(*LAYERS)
    def test_round_trip_both_ways(self, index, position):
        layer = block(index).layers[position]
        x = inputs()
        y = flowtest.assert_round_trip(self.variant, layer, x)
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
        flowtest.assert_batch_independent(layer, inputs())

    def test_gradients_are_finite(self):
        flowtest.assert_gradients_finite(block(0), inputs())

    def test_build_gives_num_blocks_that_invert(self):
        config = small_config(num_blocks=5)
        flow = flows.build(config, rngs=nnx.Rngs(0))
        self.assertLen(flow.children(), 5)
        for b, blk in enumerate(flow.children()):
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
