"""Flow core: exact inverse and log-det of every MANGO layer kind, against float64 references."""


import chex
import flowtest
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from absl.testing import parameterized
from flax import nnx
from flowtest import HEADS, B, D, M, assert_logdet_matches, inputs, small_config

from mango_jax import flows
from mango_jax.flows import checks
from mango_jax.flows.ica import ICA, min_identity_for_depth
from mango_jax.flows.lica import TokenMixLU
from mango_jax.flows.partitions import partition

KINDS = ("mmca_ab", "mmca_ba", "imca_1", "imca_2", "imca_3", "imca_4", "lica", "coupling",
         "actnorm")


def make_layer(kind, seed=0, imca_split="contiguous"):
    config = small_config(block_pattern=(kind,), imca_split=imca_split)
    flow = flows.build(config, rngs=nnx.Rngs(seed))
    return checks.perturb(flow.children()[0].layers[0], jax.random.key(seed + 100))


class LayerTest(chex.TestCase, parameterized.TestCase):

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters(*KINDS)
    def test_round_trip_both_ways(self, kind):
        layer = make_layer(kind)
        x = inputs()
        flowtest.assert_round_trip(self.variant, layer, x)

    @parameterized.parameters(*KINDS)
    def test_logdet_equals_brute_force(self, kind):
        assert_logdet_matches(make_layer(kind), inputs())

    def test_interleaved_imca_logdet(self):
        for kind in ("imca_1", "imca_2", "imca_3", "imca_4"):
            assert_logdet_matches(make_layer(kind, imca_split="interleave"), inputs())

    @parameterized.parameters("mmca_ab", "imca_2", "lica", "coupling")
    def test_batch_elements_are_independent(self, kind):
        layer = make_layer(kind)
        flowtest.assert_batch_independent(layer, inputs())

    @parameterized.parameters(*KINDS)
    def test_gradients_are_finite(self, kind):
        flowtest.assert_gradients_finite(make_layer(kind), inputs())

    def test_bf16_activations_keep_float32_logdet(self):
        for kind in ("imca_1", "lica", "coupling", "actnorm"):
            layer = make_layer(kind)
            y, logdet = layer(inputs().astype(jnp.bfloat16))
            self.assertEqual(y.dtype, jnp.bfloat16)
            self.assertEqual(logdet.dtype, jnp.float32)
            x, logdet_inv = layer.inverse(y)
            self.assertEqual(x.dtype, jnp.bfloat16)
            self.assertEqual(logdet_inv.dtype, jnp.float32)


class BlockTest(chex.TestCase):

    def test_whole_block_logdet_and_inverse(self):
        flow = checks.perturb(flows.build(small_config(num_blocks=1), rngs=nnx.Rngs(0)),
                              jax.random.key(7))
        x = inputs()
        assert_logdet_matches(flow, x)
        self.assertLess(checks.relative_reconstruction_error(flow, x), 1e-5)

    def test_build_structure_and_remat(self):
        config = small_config()
        flow = flows.build(config, rngs=nnx.Rngs(0))
        self.assertLen(flow.children(), config.num_blocks)
        self.assertLen(flow.children()[0].layers, len(config.block_pattern))
        flow = checks.perturb(flow, jax.random.key(1))
        remat_flow = flows.build(small_config(remat=True), rngs=nnx.Rngs(0))
        nnx.update(remat_flow, nnx.state(flow))

        def loss(model, x):
            z, logdet = model(x)
            return jnp.mean(flows.nll_bits_per_dim(z, logdet))

        x = inputs()
        value, grads = nnx.jit(nnx.value_and_grad(loss))(flow, x)
        value_r, grads_r = nnx.jit(nnx.value_and_grad(loss))(remat_flow, x)
        chex.assert_trees_all_close(value_r, value, atol=1e-6)
        chex.assert_trees_all_close(grads_r, grads, atol=1e-6)

    @parameterized.parameters(False, True)
    def test_remat_memory_does_not_grow_with_depth(self, scan):
        """With remat, a deeper G holds one more block input per block and nothing else: what
        depends on the parameters alone (broadcast norm scales, LICA's W) is recomputed too,
        not kept from the forward pass, whether the blocks are unrolled or scanned. Before the
        parameters went through the cotangent's `+ 0`, this size held 4.9 MiB more at two
        unrolled blocks than at one."""
        batch, tokens, dim = 2, 128, 128

        def temp_bytes(num_blocks):
            config = small_config(num_blocks=num_blocks, remat=True, scan=scan, dim=dim,
                                  num_heads=8, coupling_hidden=dim,
                                  tokens_per_modality=(tokens, tokens))
            graphdef, params, rest = nnx.split(flows.build(config, rngs=nnx.Rngs(0)),
                                               nnx.Param, ...)

            def loss(params, x):
                z, logdet = nnx.merge(graphdef, params, rest)(x)
                return jnp.sum(z * z) + jnp.sum(logdet)

            x = jnp.ones((batch, 2 * tokens, dim))
            compiled = jax.jit(jax.grad(loss)).lower(params, x).compile()
            return compiled.memory_analysis().temp_size_in_bytes

        block_input = batch * 2 * tokens * dim * 4
        # Two blocks more. A scanned G of one block has no loop, and one of two blocks packs a
        # few small buffers tighter than deeper ones (64-128 KiB less), so the scan compares
        # four and six (one loop body to compile at any depth); compiling four unrolled blocks
        # takes longer than three and one together.
        fewer, more = (4, 6) if scan else (1, 3)
        self.assertLessEqual(temp_bytes(more) - temp_bytes(fewer), 2 * block_input)

    @parameterized.parameters(("mango", 5, False, 1), ("mango", 4, True, 1),
                              ("mango", 5, False, 2, 11), ("glow", 3, False, 1))
    def test_scanned_blocks_equal_unrolled(self, layer, num_blocks, remat, period, dim=D):
        """`flow.scan` stores the blocks stacked and runs them as one lax.scan with the
        unrolled values: MANGO's blocks one by one (the coupling's parity is a constant), or in
        pairs at an odd width, where the parities' halves differ (an odd last block runs after
        the scan), Glow's one by one (their permutations differ only in
        value). MANGO's blocks keep one layer of each kind that differs between blocks or
        pairs (LICA, coupling). Gradients are the unrolled ones, stacked."""
        fields = dict(layer=layer, num_blocks=num_blocks, remat=remat, dim=dim,
                      num_heads=1 if dim % 2 else HEADS)
        if layer == "mango":
            fields["block_pattern"] = ("mmca_ab", "imca_2", "lica", "coupling")
        flow = checks.perturb(flows.build(small_config(**fields, scan=False),
                                          rngs=nnx.Rngs(0)), jax.random.key(3))
        scanned = flows.build(small_config(**fields, scan=True), rngs=nnx.Rngs(1))
        scanned.set_children(flow.children())
        repeats = num_blocks // period
        self.assertLen(scanned.stacked, period)
        self.assertEqual(scanned.repeats, repeats)
        self.assertLen(scanned.layers, num_blocks - period * repeats)
        for leaf in jax.tree.leaves(nnx.state(scanned.stacked)):
            self.assertEqual(leaf.shape[0], repeats)
        x = inputs(shape=(B, 2 * M, dim))
        self.assertIn("scan", str(jax.make_jaxpr(lambda x: scanned(x))(x)))
        self.assertNotIn("scan", str(jax.make_jaxpr(lambda x: flow(x))(x)))
        for run in (nnx.jit(lambda f: f(x)), nnx.jit(lambda f: f.inverse(x))):
            chex.assert_trees_all_close(run(scanned), run(flow), atol=1e-5, rtol=1e-5)

        def loss(model, x):
            z, logdet = model(x)
            return jnp.mean(flows.nll_bits_per_dim(z, logdet))

        step = nnx.jit(nnx.value_and_grad(loss))
        (value, grads), (expected_value, expected_grads) = step(scanned, x), step(flow, x)
        self.assertAlmostEqual(float(value), float(expected_value), places=5)
        graphdef, _, rest = nnx.split(flow, nnx.Param, ...)
        stacked = flows.build(small_config(**fields, scan=True), rngs=nnx.Rngs(2))
        stacked.set_children(nnx.merge(graphdef, expected_grads, rest).children())
        chex.assert_trees_all_close(grads, nnx.state(stacked, nnx.Param), atol=1e-6,
                                    rtol=1e-5)

    def test_children_round_trip_through_stacked_storage(self):
        """`children()` gives the blocks in order as the unrolled flow holds them, and
        `set_children` stores edited copies back."""
        fields = dict(num_blocks=5, block_pattern=("mmca_ab", "lica", "coupling"))
        flow = checks.perturb(flows.build(small_config(**fields, scan=False),
                                          rngs=nnx.Rngs(0)), jax.random.key(4))
        scanned = flows.build(small_config(**fields, scan=True), rngs=nnx.Rngs(1))
        scanned.set_children(flow.children())
        children = scanned.children()
        self.assertLen(children, 5)
        for got, want in zip(children, flow.children(), strict=True):
            chex.assert_trees_all_equal(nnx.state(got), nnx.state(want))
        children[3].layers[0].mix_logit[...] = jnp.full_like(
            children[3].layers[0].mix_logit[...], 0.5)
        scanned.set_children(children)
        chex.assert_trees_all_equal(nnx.state(scanned.children()[3]), nnx.state(children[3]))
        chex.assert_trees_all_equal(nnx.state(scanned.children()[1]), nnx.state(flow.children()[1]))
        with self.assertRaisesRegex(ValueError, "got 4 children; this Sequential has 5"):
            scanned.set_children(children[:4])

    def test_unequal_blocks_are_not_scanned(self):
        """Blocks of different structures (here, different block patterns) run unrolled."""
        blocks = [flows.build(small_config(num_blocks=1, block_pattern=pattern),
                              rngs=nnx.Rngs(0)).children()[0]
                  for pattern in (("mmca_ab", "coupling"), ("lica",), ("mmca_ab", "coupling"))]
        flow = flows.Sequential(blocks, scan=True)
        self.assertIsNone(flow.stacked)
        self.assertLen(flow.children(), 3)
        x = inputs()
        chex.assert_trees_all_close(flow(x), flows.Sequential(blocks)(x))

    def test_shallow_and_deep_floors(self):
        self.assertAlmostEqual(min_identity_for_depth(4.8, 96), 0.95)
        self.assertAlmostEqual(min_identity_for_depth(4.8, 8), 0.75)
        with self.assertRaisesRegex(ValueError, "positive"):
            min_identity_for_depth(0.0, 8)

    def test_each_baseline_layer_has_its_own_fields(self):
        config = flows.default_config()
        self.assertEqual(set(flows.LAYERS), {"mango", "realnvp", "glow", "flowpp", "attnflow"})
        for layer, module in flows.KINDS.items():
            if hasattr(module, "DEFAULTS"):
                self.assertEqual(config[layer].to_dict(), module.DEFAULTS)
        self.assertEqual({k for k in flows.LAYERS if k in config}, set(flows.LAYERS) - {"mango"})
        prefixed = [k for k in config.keys() if k.startswith(tuple(f"{n}_" for n in flows.LAYERS))]
        self.assertEqual(prefixed, [])

        def shapes(**overrides):
            flow = flows.build(small_config(layer="attnflow", **overrides), rngs=nnx.Rngs(0))
            return jax.tree.map(lambda x: x.shape, nnx.to_pure_dict(nnx.state(flow, nnx.Param)))

        self.assertEqual(shapes(**{"glow.kernel_size": 5}), shapes())  # Glow's is not AttnFlow's
        self.assertNotEqual(shapes(**{"attnflow.kernel_size": 5}), shapes())

    def test_unknown_layer_and_kind_errors(self):
        with self.assertRaisesRegex(ValueError, "flow.layer"):
            flows.build(small_config(layer="nope"), rngs=nnx.Rngs(0))
        with self.assertRaisesRegex(ValueError, "block_pattern"):
            flows.build(small_config(block_pattern=("bogus",)), rngs=nnx.Rngs(0))


class PartitionTest(parameterized.TestCase):

    def test_imca_halves_match_the_paper(self):
        a1, a2, b1, b2 = [0, 1, 2], [3, 4, 5], [6, 7, 8], [9, 10, 11]
        expected = {"imca_1": (a1 + b1, a2 + b2), "imca_2": (a1 + b2, a2 + b1),
                    "imca_3": (a2 + b1, a1 + b2), "imca_4": (a2 + b2, a1 + b1)}
        for kind, (first, second) in expected.items():
            idx1, idx2 = partition(kind, (M, M))
            self.assertEqual(list(idx1), first)
            self.assertEqual(list(idx2), second)
        idx1, idx2 = partition("imca_1", (M, M), "interleave")
        self.assertEqual(list(idx1), [0, 2, 4, 6, 8, 10])
        self.assertEqual(list(idx2), [1, 3, 5, 7, 9, 11])

    @parameterized.parameters("mmca_ab", "mmca_ba", "imca_1", "imca_2", "imca_3", "imca_4")
    def test_merge_restores_token_order(self, kind):
        layer = make_layer(kind)
        x = inputs()
        y, _ = layer(x)
        idx1, _ = partition(kind, (M, M))
        chex.assert_trees_all_close(y[:, idx1], x[:, idx1])  # X1 passes through in place

    def test_unequal_counts(self):
        with self.assertRaisesRegex(ValueError, "equal token counts"):
            partition("mmca_ab", (4, 6))
        idx1, idx2 = partition("imca_3", (4, 6))
        self.assertEqual(sorted(np.concatenate([idx1, idx2])), list(range(10)))
        with self.assertRaisesRegex(ValueError, "even"):
            partition("imca_1", (3, 6))
        config = small_config(tokens_per_modality=(4, 6), block_pattern=("imca_2", "lica"))
        flow = flows.build(config, rngs=nnx.Rngs(0))
        x = inputs(shape=(B, 10, D))
        self.assertLess(checks.relative_reconstruction_error(flow, x), 1e-5)


class ConditioningTest(parameterized.TestCase):

    @parameterized.parameters(0.0, 3.0, 8.0)
    def test_ica_condition_number_bound_holds_for_extreme_parameters(self, log_temp):
        floor = 0.8
        layer = ICA(D, HEADS, range(M), range(M, 2 * M), min_identity=floor, rngs=nnx.Rngs(0))
        layer.log_temperature[...] = jnp.full((HEADS,), log_temp)
        layer.mix_logit[...] = jnp.full((HEADS,), -30.0)
        attn = np.asarray(layer.attention(3.0 * inputs()[:, :M]), np.float64)
        bound = 1.0 / (floor * (2 * floor - 1))
        for a in attn.reshape(-1, M, M):
            self.assertTrue(np.allclose(a, np.triu(a)))
            kappa = np.linalg.norm(a, np.inf) * np.linalg.norm(np.linalg.inv(a), np.inf)
            self.assertLessEqual(kappa, bound * (1 + 1e-5))
            np.testing.assert_allclose(np.linalg.norm(a, axis=-1), 1.0, rtol=1e-5)

    def test_token_mix_is_plu_and_solves_exactly(self):
        mix = TokenMixLU(2 * M, seed=3)
        mix.lower[...] = 5.0 * jax.random.normal(jax.random.key(0), mix.lower[...].shape)
        mix.upper[...] = 5.0 * jax.random.normal(jax.random.key(1), mix.upper[...].shape)
        mix.log_scale[...] = 10.0 * jax.random.normal(jax.random.key(2), (2 * M,))
        lower, upper = (np.asarray(f, np.float64) for f in mix.factors())
        np.testing.assert_allclose(np.diag(lower), 1.0)
        np.testing.assert_allclose(lower, np.tril(lower))
        np.testing.assert_allclose(upper, np.triu(upper))
        perm = np.eye(2 * M)[np.asarray(mix.perm[...])]
        w = perm @ lower @ upper
        np.testing.assert_allclose(np.asarray(mix.matrix()), w, rtol=1e-5, atol=1e-6)
        bound = (1.5 / 0.5) ** 2 * np.exp(2 * mix.max_log_scale)
        self.assertLessEqual(np.linalg.cond(w, np.inf), bound)
        x = inputs()
        chex.assert_trees_all_close(mix.solve(mix.apply(x)), x, atol=1e-5)


def test_token_mix_inverse_and_its_gradients_match_a_float64_matrix_inverse():
    """`matrices()` builds `W⁻¹` from the factors and differentiates it through `W`: compared
    with `jnp.linalg.inv(W)` and its autodiff, in reverse and forward mode (the brute-force
    log-dets use `jacfwd`), with the factors far from the identity."""
    n = 40  # above the 16-row leaf of the block inversion, and not a power of two
    mix = TokenMixLU(n, seed=5)
    with jax.enable_x64(True):
        mix = checks.cast_floats(mix, jnp.float64)
        keys = jax.random.split(jax.random.key(7), 4)
        mix.lower[...] = 3.0 * jax.random.normal(keys[0], (n, n), jnp.float64)
        mix.upper[...] = 3.0 * jax.random.normal(keys[1], (n, n), jnp.float64)
        mix.log_scale[...] = 2.0 * jax.random.normal(keys[2], (n,), jnp.float64)
        weights = jax.random.normal(keys[3], (n, n), jnp.float64)
        graph, params, perm = nnx.split(mix, nnx.Param, ...)

        def loss(params, reference):
            matrix, inverse = nnx.merge(graph, params, perm).matrices()
            inverse = jnp.linalg.inv(matrix) if reference else inverse
            return jnp.sum(weights * inverse) + jnp.sum(jnp.sin(matrix))

        matrix, inverse = mix.matrices()
        np.testing.assert_allclose(np.asarray(inverse) @ np.asarray(matrix), np.eye(n),
                                   atol=1e-12)
        expected = jax.grad(loss)(params, True)
        for grad in (jax.grad(loss)(params, False), jax.jacfwd(loss)(params, False)):
            for got, want in zip(jax.tree.leaves(grad), jax.tree.leaves(expected), strict=True):
                np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-9,
                                           atol=1e-9 * float(jnp.max(jnp.abs(want))))


def test_token_mix_near_the_identity_inverts_to_float32_rounding():
    """A few optimiser steps leave W = P(I + small): each diagonal entry of `S⁻¹ L⁻¹` is then an
    O(1) term plus hundreds of tiny ones, which a float32 product can round away (forming
    `S⁻¹ L⁻¹` as one product fails this bound)."""
    n = 256
    mix = TokenMixLU(n, seed=2)
    keys = jax.random.split(jax.random.key(0), 3)
    mix.lower[...] = 6e-4 * jax.random.normal(keys[0], (n, n))
    mix.upper[...] = 6e-4 * jax.random.normal(keys[1], (n, n))
    mix.log_scale[...] = 6e-4 * jax.random.normal(keys[2], (n,))
    matrix, inverse = (np.asarray(m, np.float64) for m in mix.matrices())
    assert np.abs(matrix @ inverse - np.eye(n)).max() < 4e-7


def test_nll_bits_per_dim_matches_scipy():
    z = np.random.default_rng(0).normal(size=(3, 4, 5)).astype(np.float32)
    logdet = np.array([0.5, -1.0, 2.0], np.float32)
    ref = -(scipy.stats.norm.logpdf(z).reshape(3, -1).sum(-1) + logdet) / (20 * np.log(2))
    np.testing.assert_allclose(np.asarray(flows.nll_bits_per_dim(jnp.asarray(z), logdet)), ref,
                               rtol=1e-5)


@pytest.mark.parametrize("heads", [2, 6])
def test_ica_forward_is_the_dense_attention_in_either_product_layout(heads, monkeypatch):
    """ICA's forward pass (E X2 on the unnormalised softmax, rows scaled after) equals the dense
    `A X2` of `attention()` in float64, with one row block and with three, whether `E X2` puts
    the heads first (head width 2 at 6 heads) or not (width 6 at 2 heads); its log-det is the
    brute-force Jacobian's and it inverts."""
    from mango_jax.flows import ica as ica_module

    layer = ICA(D, heads, range(M), range(M, 2 * M), min_identity=0.75, rngs=nnx.Rngs(0))
    x = inputs()
    dense = np.asarray(layer.attention(x[:, :M]), np.float64)
    x2 = np.asarray(x[:, M:], np.float64).reshape(B, M, heads, D // heads)
    expected = np.einsum("bhij,bjhd->bihd", dense, x2).reshape(B, M, D)
    for row_block in (ica_module.ROW_BLOCK, 2):
        monkeypatch.setattr(ica_module, "ROW_BLOCK", row_block)
        y, logdet = layer(x)
        np.testing.assert_allclose(y[:, M:], expected, rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(y[:, :M], x[:, :M])
        np.testing.assert_allclose(layer.inverse(y)[0], x, atol=1e-5)
    assert_logdet_matches(layer, x)


def test_ica_row_blocks_compute_the_dense_triangular_attention(monkeypatch):
    """With several row blocks (rows [s, e) meet only the columns ≥ s), ICA's output is the
    dense upper-triangular `A X2` of one block, its log-det the float64 brute-force Jacobian's,
    and it inverts."""
    from mango_jax.flows import ica as ica_module

    layer = make_layer("mmca_ab")
    x = inputs()
    dense = np.asarray(layer.attention(x[:, :M]), np.float64)  # M < 2 · ROW_BLOCK: one block
    monkeypatch.setattr(ica_module, "ROW_BLOCK", 2)
    assert ica_module.row_blocks(M) == [(0, 2), (2, 4), (4, 6)]
    y, logdet = layer(x)
    x2 = np.asarray(x[:, M:], np.float64).reshape(B, M, HEADS, D // HEADS)
    expected = np.einsum("bhij,bjhd->bihd", dense, x2).reshape(B, M, D)
    np.testing.assert_allclose(y[:, M:], expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(y[:, :M], x[:, :M])
    diag = np.diagonal(dense, axis1=-2, axis2=-1)
    np.testing.assert_allclose(logdet, (D // HEADS) * np.log(diag).sum(axis=(1, 2)), rtol=1e-5)
    assert_logdet_matches(layer, x)
    np.testing.assert_allclose(layer.inverse(y)[0], x, atol=1e-5)
