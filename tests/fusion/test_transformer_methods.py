"""Cross-attention, MBT, TokenFusion and GeminiFusion: each method's defining mechanism."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from fusion_np_reference import attention, block, gelu, linear, params, softmax

from mango_jax import fusion

B, N, D, HEADS = 2, 4, 8, 2
TOL = {"rtol": 1e-4, "atol": 1e-4}


def build(name: str, tokens=(N, N), **fields) -> nnx.Module:
    config = fusion.default_config(name)
    config.update({"num_heads": HEADS, "mlp_ratio": 2.0, **fields})
    return fusion.build(config, dim=D, tokens=tokens, rngs=nnx.Rngs(5))


def inputs(m: int = N, k: int = N, seed: int = 0) -> tuple[jax.Array, jax.Array]:
    ka, kb = jax.random.split(jax.random.key(seed))
    return jax.random.normal(ka, (B, m, D)), jax.random.normal(kb, (B, k, D))


def f64(x) -> np.ndarray:
    return np.asarray(x, np.float64)


# ---------------------------------------------------------------- cross-attention (MulT)


def test_cross_attention_matches_mult_reference():
    m, k = 3, 5
    module = build("cross_attention", tokens=(m, k))
    a, b = inputs(m, k)
    za, zb = jax.jit(lambda a, b: module(a, b).streams)(a, b)
    p = params(module)
    ra, rb = f64(a), f64(b)
    for layer in range(2):  # every layer attends to the *input* tokens of the other modality
        ra = block(p["b_to_a"][layer], ra, HEADS, context=f64(b))
        rb = block(p["a_to_b"][layer], rb, HEADS, context=f64(a))
    np.testing.assert_allclose(za, ra, **TOL)
    np.testing.assert_allclose(zb, rb, **TOL)


def test_cross_attention_attends_to_the_other_stream_as_a_set():
    module = build("cross_attention", tokens=(3, 5))
    a, b = inputs(3, 5)
    forward = jax.jit(lambda a, b: module(a, b).streams)
    za, zb = forward(a, b)
    perm_b = jnp.array([4, 0, 3, 1, 2])
    za2, zb2 = forward(a, b[:, perm_b])
    np.testing.assert_allclose(za2, za, rtol=1e-5, atol=1e-5)  # keys/values: order-free
    np.testing.assert_allclose(zb2, zb[:, perm_b], rtol=1e-5, atol=1e-5)  # queries: equivariant
    za3, _ = forward(a, b.at[:, 2].multiply(-1.0))
    assert float(jnp.abs(za3 - za).max(axis=-1).min()) > 1e-4  # one b token moves all of a


# ---------------------------------------------------------------- MBT


def test_mbt_streams_are_independent_before_the_fusion_layer():
    module = build("mbt", num_layers=4, fusion_layer=2, num_bottlenecks=2)
    a, b = inputs()
    _, b2 = inputs(seed=1)
    layers = jax.jit(lambda a, b: module.layer_outputs(a, b))
    before, after = layers(a, b), layers(a, b2)
    moved = [float(jnp.abs(x[0] - y[0]).max()) for x, y in zip(before, after, strict=True)]
    # Layers 0, 1 are unimodal; layer 2 writes b into the bottlenecks, which a reads in layer 3.
    assert moved[:3] == [0.0, 0.0, 0.0], moved
    assert moved[3] > 1e-4, moved


def _grad_a_output_wrt_b(module) -> jax.Array:
    a, b = inputs()
    return jax.jit(jax.grad(lambda b: jnp.sum(jnp.sin(module(a, b).streams[0]))))(b)


def test_mbt_bottlenecks_are_the_only_path_between_modalities():
    assert float(jnp.abs(_grad_a_output_wrt_b(build("mbt", num_bottlenecks=2))).max()) > 1e-6
    np.testing.assert_array_equal(_grad_a_output_wrt_b(build("mbt", num_bottlenecks=0)), 0.0)
    for fusion_layer in (1, 2):  # a last-layer bottleneck is written but never read
        late = build("mbt", num_bottlenecks=2, fusion_layer=fusion_layer)
        np.testing.assert_array_equal(_grad_a_output_wrt_b(late), 0.0)


def test_mbt_fusion_layer_matches_reference():
    module = build("mbt", num_layers=2, fusion_layer=1, num_bottlenecks=3)
    a, b = inputs()
    za, zb = jax.jit(lambda a, b: module(a, b).streams)(a, b)
    p = params(module)
    ra = block(p["layers_a"][0], f64(a), HEADS)
    rb = block(p["layers_b"][0], f64(b), HEADS)
    fsn = np.broadcast_to(p["bottleneck"], (B, 3, D))
    ya = block(p["layers_a"][1], np.concatenate([ra, fsn], 1), HEADS)
    yb = block(p["layers_b"][1], np.concatenate([rb, fsn], 1), HEADS)
    np.testing.assert_allclose(za, ya[:, :N], **TOL)
    np.testing.assert_allclose(zb, yb[:, :N], **TOL)


def test_mbt_rejects_a_fusion_layer_past_the_last_layer():
    with pytest.raises(ValueError, match="fusion_layer=3 must lie in"):
        build("mbt", num_layers=2, fusion_layer=3)


# ---------------------------------------------------------------- TokenFusion


def _layer(module, a, b):
    return jax.jit(lambda a, b: module.layer(0, a, b))(a, b)


def test_tokenfusion_replaces_low_score_tokens_by_the_projected_counterpart():
    module = build("tokenfusion", num_layers=1)
    a, b = inputs(seed=2)
    module.threshold = 0.0  # nothing is replaced: the layer's own output tokens h_a, h_b
    ha, hb, s_a, s_b = _layer(module, a, b)
    scores = np.sort(np.concatenate([np.ravel(s_a), np.ravel(s_b)]))
    module.threshold = float(0.5 * (scores[7] + scores[8]))  # half the tokens fall below
    out_a, out_b, s_a2, s_b2 = _layer(module, a, b)
    np.testing.assert_array_equal(s_a2, s_a)
    low_a, low_b = np.asarray(s_a) < module.threshold, np.asarray(s_b) < module.threshold
    assert 0 < low_a.sum() + low_b.sum() < low_a.size + low_b.size
    p = params(module)
    from_b = linear(p["proj_b_to_a"][0], f64(hb))
    from_a = linear(p["proj_a_to_b"][0], f64(ha))
    np.testing.assert_allclose(f64(out_a)[low_a], from_b[low_a], **TOL)
    np.testing.assert_allclose(f64(out_a)[~low_a], f64(ha)[~low_a], **TOL)
    np.testing.assert_allclose(f64(out_b)[low_b], from_a[low_b], **TOL)
    np.testing.assert_allclose(f64(out_b)[~low_b], f64(hb)[~low_b], **TOL)


def test_tokenfusion_score_threshold_decides_per_modality():
    module = build("tokenfusion", num_layers=1)
    # Scores pinned far below (a) and far above (b) the default threshold 0.02.
    module.scores_a[0].logit.kernel[...] = jnp.zeros_like(module.scores_a[0].logit.kernel[...])
    module.scores_a[0].logit.bias[...] = jnp.full((1,), -8.0)
    module.scores_b[0].logit.kernel[...] = jnp.zeros_like(module.scores_b[0].logit.kernel[...])
    module.scores_b[0].logit.bias[...] = jnp.full((1,), 8.0)
    a, b = inputs(seed=3)
    out = module(a, b)
    np.testing.assert_array_equal(out.metrics["tokenfusion_substituted"], np.full(B, 0.5))
    module.threshold = 0.0
    ha, hb = module(a, b).streams
    p = params(module)
    np.testing.assert_allclose(out.streams[0], linear(p["proj_b_to_a"][0], f64(hb)), **TOL)
    np.testing.assert_allclose(out.streams[1], hb, **TOL)


def test_tokenfusion_sparsity_loss_is_lambda_times_l1_of_the_scores():
    module = build("tokenfusion", num_layers=2, sparsity_weight=0.1)
    a, b = inputs(seed=4)
    out = jax.jit(lambda a, b: module(a, b))(a, b)
    l1, x, y = 0.0, a, b
    for index in range(2):
        x, y, s_a, s_b = jax.jit(lambda x, y, i=index: module.layer(i, x, y))(x, y)
        l1 += f64(s_a).sum(axis=1) + f64(s_b).sum(axis=1)  # per example
    np.testing.assert_allclose(out.aux_losses["tokenfusion_sparsity"], 0.1 * l1, rtol=1e-5)
    np.testing.assert_allclose(out.streams[0], x, rtol=1e-6, atol=1e-6)

    graphdef, params_, rest = nnx.split(module, nnx.Param, ...)
    grads = jax.jit(
        jax.grad(lambda p: jnp.mean(
            nnx.merge(graphdef, p, rest)(a, b).aux_losses["tokenfusion_sparsity"]))
    )(params_)
    score_grad = nnx.to_pure_dict(grads)["scores_a"][0]["logit"]["bias"]
    assert float(jnp.abs(score_grad).max()) > 0  # the loss trains the score networks


# ---------------------------------------------------------------- GeminiFusion


def test_geminifusion_token_depends_only_on_itself_and_its_counterpart():
    module = build("geminifusion", num_layers=1)
    s_a, s_b = (x[:1] for x in inputs(5, 5, seed=5))
    jac = jax.jit(jax.jacrev(lambda x, y: module.fuse(0, x, y), argnums=(0, 1)))(s_a, s_b)
    for out_index in range(2):  # f_a, f_b
        for in_index in range(2):  # w.r.t. s_a, s_b
            # [1, N, D, 1, N, D] -> [N(out), N(in)] magnitude per token pair
            pair = jnp.abs(jac[out_index][in_index][0, :, :, 0]).sum(axis=(1, 3))
            off_diagonal = pair * (1 - jnp.eye(5))
            np.testing.assert_array_equal(off_diagonal, 0.0)
            assert bool(jnp.all(jnp.diag(pair) > 0))


def test_geminifusion_pixel_attention_matches_reference():
    module = build("geminifusion", num_layers=1)
    x, y = inputs(seed=8)
    f_a, f_b = jax.jit(lambda x, y: module.fuse(0, x, y))(x, y)
    p = params(module)

    def pixel(fp, rp, x, y):
        relation = softmax(linear(rp["fc2"], gelu(linear(rp["fc1"], np.concatenate([x, y], -1)))))
        keys = np.stack([x + fp["key_noise"], relation * x], axis=-2)  # [B, N, 2, D]
        values = np.stack([x + fp["value_noise"], y], axis=-2)
        out = attention(fp["attention"], x[..., None, :], keys, values, HEADS)
        return x + out[..., 0, :]

    rx, ry = f64(x), f64(y)
    np.testing.assert_allclose(f_a, pixel(p["fuse_a"][0], p["relations"][0], rx, ry), **TOL)
    np.testing.assert_allclose(f_b, pixel(p["fuse_b"][0], p["relations"][0], ry, rx), **TOL)


# ------------------------------------------------- shared weights (homogeneous modalities)


def _transformer_params(block) -> int:
    return sum(x.size for x in jax.tree.leaves(nnx.state((block.attention, block.mlp),
                                                         nnx.Param)))


@pytest.mark.parametrize("name", ["tokenfusion", "geminifusion"])
def test_shared_weights_match_separate_stacks_with_copied_layers(name):
    """`shared_weights`: b's layers are a's attention and MLP with b's own LayerNorms, so the
    shared module computes what a separate one does once b's attention and MLP are copied from
    a's, with one set of those parameters fewer."""
    assert fusion.default_config(name, homogeneous=True).shared_weights
    assert not fusion.default_config(name).shared_weights
    shared = build(name, num_layers=2, shared_weights=True)
    separate = build(name, num_layers=2)
    # The separate module takes the shared one's parameters, its b stack copies of the shared
    # attention and MLP; b's LayerNorms get values of their own so that sharing them would show.
    nnx.update(separate, nnx.state(shared, nnx.Param))
    for source, block_a, block_b in zip(shared.blocks_a, separate.blocks_a, separate.blocks_b):
        for module in (block_a, block_b):
            module.attention = nnx.clone(source.attention)
            module.mlp = nnx.clone(source.mlp)
    for module in (shared, separate):
        for layer in module.blocks_b:
            layer.norm1.scale[...] = jnp.full_like(layer.norm1.scale[...], 1.5)
    for block_a, block_b in zip(shared.blocks_a, shared.blocks_b):
        assert block_b.attention is block_a.attention and block_b.mlp is block_a.mlp
        assert block_b.norm1 is not block_a.norm1 and block_b.norm2 is not block_a.norm2
    a, b = inputs(seed=3)
    out_shared, out_separate = shared(a, b), separate(a, b)
    for s, r in zip(out_shared.streams, out_separate.streams, strict=True):
        np.testing.assert_allclose(s, r, **TOL)

    def count(module):
        return sum(x.size for x in jax.tree.leaves(nnx.state(module, nnx.Param)))

    per_layer = _transformer_params(shared.blocks_a[0])
    assert count(build(name, num_layers=2)) - count(shared) == 2 * per_layer


def test_shared_weights_gradient_sums_both_modalities():
    """The shared attention kernel's gradient is the sum of what each modality's use of it
    contributes (the separate module's gradients for a's and b's copies)."""
    shared = build("geminifusion", num_layers=1, shared_weights=True)
    separate = build("geminifusion", num_layers=1)
    nnx.update(separate, nnx.state(shared, nnx.Param))
    for module in (separate.blocks_a[0], separate.blocks_b[0]):
        module.attention = nnx.clone(shared.blocks_a[0].attention)
        module.mlp = nnx.clone(shared.blocks_a[0].mlp)
    a, b = inputs(seed=4)

    def grads(module):
        graphdef, params, rest = nnx.split(module, nnx.Param, ...)

        def loss(p):
            return sum(jnp.sum(jnp.sin(s)) for s in nnx.merge(graphdef, p, rest)(a, b).streams)

        return jax.grad(loss)(params)

    g_shared, g_separate = grads(shared), grads(separate)
    kernel = ("attention", "query", "kernel")

    def at(tree, stack, path):
        node = tree[stack][0]
        for key in path:
            node = node[key]
        return np.asarray(node[...])

    expected = at(g_separate, "blocks_a", kernel) + at(g_separate, "blocks_b", kernel)
    np.testing.assert_allclose(at(g_shared, "blocks_a", kernel), expected, rtol=1e-4, atol=1e-6)
