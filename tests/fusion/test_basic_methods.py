"""No fusion, late fusion and early (concatenation) fusion: the mechanism of each."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from fusion_np_reference import gelu, linear, params

from mango_jax import fusion

B, D = 2, 8


def build(name: str, tokens=(3, 3), **fields) -> nnx.Module:
    config = fusion.default_config(name)
    config.update(fields)
    return fusion.build(config, dim=D, tokens=tokens, rngs=nnx.Rngs(3))


def inputs(m: int = 3, k: int = 3) -> tuple[jax.Array, jax.Array]:
    ka, kb = jax.random.split(jax.random.key(11))
    return jax.random.normal(ka, (B, m, D)), jax.random.normal(kb, (B, k, D))


def test_late_returns_both_streams_untouched():
    a, b = inputs(3, 5)
    out = build("late", tokens=(3, 5))(a, b)
    assert len(out.streams) == 2 and out.aux_losses == {}
    np.testing.assert_array_equal(out.streams[0], a)
    np.testing.assert_array_equal(out.streams[1], b)


@pytest.mark.parametrize("modality", ["a", "b"])
def test_unimodal_ignores_the_other_modality(modality):
    module = build("unimodal", tokens=(3, 5), modality=modality)
    a, b = inputs(3, 5)
    (stream,) = module(a, b).streams
    np.testing.assert_array_equal(stream, a if modality == "a" else b)
    grad_a, grad_b = jax.grad(
        lambda a, b: jnp.sum(jnp.sin(module(a, b).streams[0])), argnums=(0, 1)
    )(a, b)
    kept, ignored = (grad_a, grad_b) if modality == "a" else (grad_b, grad_a)
    assert float(jnp.abs(kept).sum()) > 0
    np.testing.assert_array_equal(ignored, 0.0)


def test_unimodal_rejects_unknown_modality():
    with pytest.raises(ValueError, match="'a' or 'b'"):
        build("unimodal", modality="c")


def test_concat_feature_is_a_joint_mlp_of_the_channel_concatenation():
    module = build("concat", mode="feature")
    a, b = inputs()
    (stream,) = module(a, b).streams
    joined = np.concatenate([np.asarray(a, np.float64), np.asarray(b, np.float64)], axis=-1)
    p = params(module)
    expected = linear(p["joint_out"], gelu(linear(p["joint_in"], joined)))
    np.testing.assert_allclose(stream, expected, rtol=2e-5, atol=2e-5)


def trained_like(module: nnx.Module, seed: int = 0) -> nnx.Module:
    """Every parameter redrawn at a trained network's scale (biases included, which the
    initialiser zeroes), so no test passes because of an initialisation that happens to be
    near-linear."""
    state = nnx.state(module, nnx.Param)
    leaves, treedef = jax.tree.flatten(state)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    new = [jax.random.normal(k, x.shape) / np.sqrt(x.shape[0] if x.ndim == 2 else 4.0)
           for k, x in zip(keys, leaves, strict=True)]
    nnx.update(module, jax.tree.unflatten(treedef, new))
    return module


def interaction(module: nnx.Module) -> float:
    """`|f(a1,b1) + f(a2,b2) - f(a1,b2) - f(a2,b1)|` relative to the output scale: 0 for every
    sum of a function of a and a function of b (additive fusion), whatever the functions."""
    ka1, ka2, kb1, kb2 = jax.random.split(jax.random.key(5), 4)
    a1, a2, b1, b2 = (jax.random.normal(k, (B, 3, D)) for k in (ka1, ka2, kb1, kb2))
    f = lambda a, b: np.asarray(module(a, b).streams[0], np.float64)
    mixed = f(a1, b1) + f(a2, b2) - f(a1, b2) - f(a2, b1)
    return float(np.abs(mixed).max() / np.abs(f(a1, b1)).max())


def test_concat_feature_is_not_additive_fusion():
    """Early fusion models interactions between the modalities; a linear projection of the
    concatenation (the old feature mode) is additive fusion, which this control shows."""
    assert interaction(trained_like(build("concat", mode="feature"))) > 0.05
    assert interaction(trained_like(build("additive"))) < 1e-5
    count = lambda m: sum(x.size for x in jax.tree.leaves(nnx.state(m, nnx.Param)))
    assert count(build("concat", mode="feature")) != count(build("additive"))


def test_concat_token_lets_every_token_attend_to_both_modalities():
    module = build("concat", tokens=(2, 3), mode="token", num_layers=1, num_heads=2)
    a, b = inputs(2, 3)
    forward = jax.jit(lambda a, b: module(a, b).streams[0])
    base = forward(a, b)
    assert base.shape == (B, 5, D)
    flip = lambda x, i: x.at[:, i].multiply(-1.0)  # a non-constant change survives LayerNorm
    for i in range(2):
        moved = jnp.abs(forward(flip(a, i), b) - base).max(axis=(0, 2))
        assert bool(jnp.all(moved > 1e-4)), f"a token {i} does not reach every output token"
    for i in range(3):
        moved = jnp.abs(forward(a, flip(b, i)) - base).max(axis=(0, 2))
        assert bool(jnp.all(moved > 1e-4)), f"b token {i} does not reach every output token"


def test_concat_token_type_embeddings_mark_the_modality():
    module = build("concat", mode="token", num_layers=1, num_heads=2)
    a, b = inputs()
    forward = jax.jit(lambda a, b: module(a, b).streams[0])
    ab, ba = forward(a, b), forward(b, a)
    # Attention is permutation-equivariant, so only the type embeddings can tell f(a, b) and
    # f(b, a) apart: with them zeroed, swapping the inputs just swaps the output halves.
    assert float(jnp.abs(ab[:, 3:] - ba[:, :3]).max()) > 1e-3
    module.type_embed[...] = jnp.zeros_like(module.type_embed[...])
    ab, ba = module(a, b).streams[0], module(b, a).streams[0]
    np.testing.assert_allclose(ab[:, 3:], ba[:, :3], rtol=1e-5, atol=1e-5)


def test_concat_rejects_unknown_mode():
    with pytest.raises(ValueError, match="'feature' or 'token'"):
        build("concat", mode="stack")
