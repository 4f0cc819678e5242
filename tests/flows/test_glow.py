"""Glow baseline: 1×1 convolution in LU form, ActNorm data-dependent init, exact inverse/log-det."""

import functools

import chex
import flowtest
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from flowtest import D, M, inputs

from mango_jax import flows
from mango_jax.flows import checks, glow
from mango_jax.flows.actnorm import ActNorm
from mango_jax.flows.lica import TokenMixLU


def small_config(**overrides):
    return flowtest.small_config(**{"layer": "glow", "glow.steps_per_block": 2, **overrides})


@functools.cache
def perturbed_flow():
    return checks.perturb(flows.build(small_config(), rngs=nnx.Rngs(0)), jax.random.key(100))


# Positions in a block: 0 ActNorm, 1 ChannelMixLU, 2 coupling (then the next step). The
# coupling is RealNVP's channel coupling, whose log-det test_realnvp checks; here it is checked
# inside the block.
LAYERS = {"mix": (0, 1), "coupling": (0, 2), "block": None}


def layer_of(name):
    flow = perturbed_flow()
    if LAYERS[name] is None:
        return flow.children()[0]
    index, position = LAYERS[name]
    return flow.children()[index].layers[position]


ContractTest = flowtest.contract_tests(layer_of, tuple(LAYERS), logdet_names=("mix", "block"))


class GlowTest(chex.TestCase):

    def test_one_by_one_convolution_mixes_channels_with_plu_matrix(self):
        mix = layer_of("mix")
        w = np.asarray(mix.mix.matrix(), np.float64)
        x = inputs()
        y, logdet = mix(x)
        np.testing.assert_allclose(np.asarray(y), np.einsum("ij,bnj->bni", w, x), atol=1e-5)
        np.testing.assert_allclose(np.asarray(logdet), 2 * M * np.linalg.slogdet(w)[1],
                                   rtol=1e-5)

    def test_token_mix_axes_agree_and_token_axis_is_unchanged(self):
        x = inputs()
        tokens = TokenMixLU(2 * M, seed=4)
        channels = TokenMixLU(2 * M, seed=4, axis=2)
        for mix, key in ((tokens, 0), (channels, 0)):
            mix.lower[...] = 5.0 * jax.random.normal(jax.random.key(key), (2 * M, 2 * M))
            mix.upper[...] = 5.0 * jax.random.normal(jax.random.key(key + 1), (2 * M, 2 * M))
            mix.log_scale[...] = 3.0 * jax.random.normal(jax.random.key(key + 2), (2 * M,))
        w = np.asarray(tokens.matrix(), np.float64)
        square = x[:, :, : 2 * M]
        np.testing.assert_allclose(np.asarray(tokens.apply(square)),
                                   np.einsum("ij,bjd->bid", w, square), atol=1e-5)
        swapped = jnp.swapaxes(square, 1, 2)
        chex.assert_trees_all_close(channels.apply(swapped),
                                    jnp.swapaxes(tokens.apply(square), 1, 2), atol=1e-6)
        chex.assert_trees_all_close(channels.solve(channels.apply(swapped)), swapped, atol=1e-5)
        with self.assertRaisesRegex(ValueError, "axis"):
            TokenMixLU(4, seed=0, axis=0)

    def test_initialize_actnorms_normalises_each_actnorm_input(self):
        flow = flows.build(small_config(), rngs=nnx.Rngs(0))
        flow = checks.perturb(flow, jax.random.key(5))  # non-trivial layers between ActNorms
        x = 3.0 * inputs() + jnp.arange(D) - 2.0
        z = glow.initialize_actnorms(flow, x)
        chex.assert_trees_all_close(z, flow(x)[0], atol=1e-5)
        count = 0
        h = x
        for blk in flow.children():
            for layer in blk.layers:
                h = layer(h)[0]
                if isinstance(layer, ActNorm):
                    count += 1
                    np.testing.assert_allclose(np.asarray(jnp.mean(h, axis=(0, 1))), 0.0,
                                               atol=1e-5)
                    np.testing.assert_allclose(np.asarray(jnp.std(h, axis=(0, 1))), 1.0,
                                               atol=1e-4)
        self.assertEqual(count, 4)
        self.assertLess(checks.relative_reconstruction_error(flow, x, jit=False), 1e-5)

    def test_build_gives_num_blocks_of_glow_steps(self):
        config = small_config(**{"num_blocks": 3, "glow.steps_per_block": 2})
        flow = flows.build(config, rngs=nnx.Rngs(0))
        self.assertLen(flow.children(), 3)
        kinds = [type(layer) for layer in flow.children()[1].layers]
        self.assertEqual(kinds, [ActNorm, glow.ChannelMixLU, flows.realnvp.PartitionedCoupling] * 2)
        perms = {tuple(np.asarray(layer.mix.perm[...])) for blk in flow.children()
                 for layer in blk.layers if isinstance(layer, glow.ChannelMixLU)}
        self.assertLen(perms, 6)  # every 1×1 convolution starts from its own permutation
        flow = checks.perturb(flow, jax.random.key(2))
        self.assertLess(checks.relative_reconstruction_error(flow, inputs(), jit=False), 1e-5)
