"""AttnFlow baseline: iMap and iTrans with checkerboard masks, exact inverse and log-det."""

import functools

import chex
import flowtest
import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import parameterized
from flax import nnx

from mango_jax import flows
from mango_jax.flows import attnflow, checks

# Sizes where D, D/heads and the token counts all differ; the odd head width (3) and the odd
# token count (11) give the two checkerboard colours different numbers of moved channels and
# tokens.
B, TOKENS, D, HEADS = 2, (6, 5), 12, 4
N = sum(TOKENS)


def small_config(**overrides):
    return flowtest.small_config(
        **{"layer": "attnflow", "num_heads": HEADS, "tokens_per_modality": TOKENS, **overrides})


def inputs(seed=1):
    return jax.random.normal(jax.random.key(seed), (B, N, D))


@functools.cache
def perturbed_flow():
    return checks.perturb(flows.build(small_config(), rngs=nnx.Rngs(0)), jax.random.key(100))


def layer_of(name):
    """A perturbed iMap or iTrans of block 0 or 1, or a whole block."""
    flow = perturbed_flow()
    return {"imap0": flow.children()[0].layers[1], "imap1": flow.children()[1].layers[1],
            "itrans0": flow.children()[0].layers[2], "itrans1": flow.children()[1].layers[2],
            "block": flow.children()[1]}[name]


def conditioning_entries(layer, x):
    mask = attnflow.checkerboard(x.shape[1], layer.num_heads, layer.head_dim, layer.parity)
    return np.asarray(x)[:, mask]


# Block 1 holds imap1 and itrans0.
ContractTest = flowtest.contract_tests(layer_of, ("imap0", "itrans1", "block"),
                                       make_inputs=inputs, logdet_atol=1e-5)


class AttnFlowTest(chex.TestCase, parameterized.TestCase):

    def test_masks_keep_the_jacobian_block_triangular(self):
        # Conditioning outputs depend on conditioning inputs only: iTrans passes them through,
        # iMap scales them by input-independent factors.
        for name in ("imap0", "itrans1"):
            layer = layer_of(name)
            x = inputs()
            mask = attnflow.checkerboard(N, HEADS, D // HEADS, layer.parity)
            x_moved = jnp.where(mask, x, 5.0 * inputs(seed=9))
            y, y_moved = layer(x)[0], layer(x_moved)[0]
            np.testing.assert_allclose(conditioning_entries(layer, y_moved),
                                       conditioning_entries(layer, y), atol=1e-6)
            if name.startswith("itrans"):
                np.testing.assert_allclose(conditioning_entries(layer, y),
                                           conditioning_entries(layer, x))
        self.assertEqual(attnflow.checkerboard(3, 2, 2, 0).tolist(),
                         [[True, False, True, False], [False, True, False, True],
                          [True, False, True, False]])

    @parameterized.parameters(0.0, 3.0, 8.0)
    def test_itrans_condition_number_bound_holds_for_extreme_parameters(self, log_temp):
        floor = 0.8
        layer = attnflow.ITrans(D, HEADS, parity=0, min_identity=floor, rngs=nnx.Rngs(0))
        layer.log_temperature[...] = jnp.full((HEADS,), log_temp)
        layer.mix_logit[...] = jnp.full((HEADS,), -30.0)
        bound = 1.0 / (floor * (2 * floor - 1))
        groups = layer.groups(N)
        self.assertEqual([(t.size, c.size) for t, c in groups], [(6, 1), (5, 2)])
        for tokens, _ in groups:
            attn = np.asarray(layer.attention(3.0 * inputs(), tokens), np.float64)
            for a in attn.reshape(-1, tokens.size, tokens.size):
                kappa = np.linalg.norm(a, np.inf) * np.linalg.norm(np.linalg.inv(a), np.inf)
                self.assertLessEqual(kappa, bound * (1 + 1e-5))
                self.assertGreater(np.linalg.det(a), 0.0)
                self.assertGreater(np.abs(np.triu(a, 1)).max(), 1e-3)  # dense, not triangular

    def test_build_gives_num_blocks(self):
        config = small_config(num_blocks=3)
        flow = flows.build(config, rngs=nnx.Rngs(0))
        self.assertLen(flow.children(), 3)
        for b, blk in enumerate(flow.children()):
            actnorm, imap, itrans, coupling = blk.layers
            self.assertIsInstance(actnorm, flows.ActNorm)
            self.assertIsInstance(imap, attnflow.IMap)
            self.assertIsInstance(itrans, attnflow.ITrans)
            self.assertIsInstance(coupling, flows.realnvp.PartitionedCoupling)
            self.assertEqual((imap.parity, itrans.parity), (b % 2, (b + 1) % 2))
            self.assertEqual(coupling.cond, flows.realnvp.channel_partition(D, b)[0])
        flow = checks.perturb(flow, jax.random.key(2))
        self.assertLess(checks.relative_reconstruction_error(flow, inputs(), jit=False), 1e-5)
