"""Every method through `build`: the registry, the FusionOutput contract, jit and gradients."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from mango_jax import fusion
from mango_jax.fusion import FusionOutput
from mango_jax.fusion.base import FusionModule, output, register

B, N, D = 2, 4, 8
TRANSFORMERS = {"cross_attention", "mbt", "tokenfusion", "geminifusion"}
# Which streams each method returns for a [B, M, D], b [B, K, D]: a function of (M, K).
EXPECTED_TOKENS = {
    "mango": lambda m, k: [m + k],
    "unimodal": lambda m, k: [m],
    "concat": lambda m, k: [m],
    "late": lambda m, k: [m, k],
    "dynmm": lambda m, k: [m],
    "additive": lambda m, k: [1],
    "multiplicative": lambda m, k: [1],
    "bilinear": lambda m, k: [1],
    "tensor": lambda m, k: [1],
    "lrtf": lambda m, k: [1],
    "mi_matrix": lambda m, k: [1],
    "gmu": lambda m, k: [1],
    **{name: (lambda m, k: [m, k]) for name in TRANSFORMERS},
}


def small_config(name: str) -> ml_collections.ConfigDict:
    """One layer keeps compile times low; the mechanism tests cover stacks of layers."""
    config = fusion.default_config(name)
    if "num_heads" in config:
        config.update({"num_layers": 1, "num_heads": 2, "mlp_ratio": 2.0})
    if name == "mango":
        config.flow.update({"num_blocks": 1, "num_heads": 2, "coupling_hidden": 16,
                            "block_pattern": ("mmca_ab", "coupling")})
    return config


def inputs(m: int = N, k: int = N, seed: int = 0) -> tuple[jax.Array, jax.Array]:
    ka, kb = jax.random.split(jax.random.key(seed))
    return jax.random.normal(ka, (B, m, D)), jax.random.normal(kb, (B, k, D))


def test_registry_names_and_defaults():
    assert set(fusion.NAMES) == set(EXPECTED_TOKENS)
    for name in fusion.NAMES:
        config = fusion.default_config(name)
        assert config.name == name and fusion.REGISTRY[name].NAME == name
        assert issubclass(fusion.REGISTRY[name], FusionModule)
        if name in TRANSFORMERS:
            assert config.num_layers == 2
            assert {"num_heads", "mlp_ratio", "dropout"} <= set(config.keys())
    assert fusion.default_config("tokenfusion").threshold == 0.02
    assert fusion.default_config("tokenfusion").sparsity_weight == 1e-4
    # Defaults are copied: a config edited by one caller leaves the next one's alone.
    fusion.default_config("mango").flow.num_blocks = 3
    assert fusion.default_config("mango").flow.num_blocks == 12


def test_register_rejects_a_missing_or_taken_name():
    class Nameless(FusionModule):
        pass

    class Taken(FusionModule):
        NAME = "mbt"

    for cls in (Nameless, Taken):
        with pytest.raises(ValueError, match="empty or already registered"):
            register(cls)
    assert fusion.REGISTRY["mbt"].__name__ == "MBTFusion"


def test_keeps_tokens_matches_the_streams():
    """`KEEPS_TOKENS` (which methods a dense head can decode) agrees with the streams' token
    counts, which `test_build_call_jit_and_gradients` checks against what `build` returns."""
    for name in fusion.NAMES:
        pooled = EXPECTED_TOKENS[name](N, N) == [1]
        assert fusion.REGISTRY[name].KEEPS_TOKENS is not pooled, name


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="valid names:.*geminifusion") as info:
        fusion.build(
            ml_collections.ConfigDict({"name": "nope"}), dim=D, tokens=(N, N), rngs=nnx.Rngs(0)
        )
    for name in fusion.NAMES:
        assert name in str(info.value)
    with pytest.raises(ValueError, match="valid names"):
        fusion.default_config("nope")


def test_unknown_field_is_an_error_and_missing_fields_default():
    config = ml_collections.ConfigDict({"name": "mbt", "num_bottleneck": 3})
    with pytest.raises(ValueError, match="num_bottleneck.*num_bottlenecks"):
        fusion.build(config, dim=D, tokens=(N, N), rngs=nnx.Rngs(0))
    partial = ml_collections.ConfigDict({"name": "mbt", "num_layers": 3, "num_heads": 2})
    module = fusion.build(partial, dim=D, tokens=(N, N), rngs=nnx.Rngs(0))
    assert len(module.layers_a) == 3 and module.fusion_layer == 0


def test_fusion_output_is_a_pytree():
    out = FusionOutput(streams=(jnp.ones((1, 1, 2)),), aux_losses={"x": jnp.zeros(())})
    assert out.metrics == {}
    doubled = jax.tree.map(lambda x: x + 1, out)
    assert isinstance(doubled, FusionOutput)
    assert len(jax.tree.leaves(out)) == 2
    np.testing.assert_array_equal(doubled.streams[0], 2.0)
    np.testing.assert_array_equal(doubled.aux_losses["x"], 1.0)
    through_jit = jax.jit(lambda o: o)(out)
    assert isinstance(through_jit, FusionOutput) and set(through_jit.aux_losses) == {"x"}


def test_output_takes_per_example_terms_only():
    stream = jnp.ones((3, 1, 2))
    out = output(stream, aux_losses={"x": jnp.arange(3)}, metrics={"m": jnp.ones(3, jnp.bfloat16)})
    assert out.aux_losses["x"].dtype == out.metrics["m"].dtype == jnp.float32
    with pytest.raises(ValueError, match=r"'x' has shape \(\); .*per example, shape \(3,\)"):
        output(stream, aux_losses={"x": jnp.zeros(())})


@pytest.mark.parametrize("name", sorted(fusion.NAMES))
def test_build_call_jit_and_gradients(name):
    module = fusion.build(small_config(name), dim=D, tokens=(N, N), rngs=nnx.Rngs(0))
    assert type(module) is fusion.REGISTRY[name]
    a, b = inputs()
    out = module(a, b)
    assert isinstance(out, FusionOutput)
    assert [s.shape for s in out.streams] == [(B, t, D) for t in EXPECTED_TOKENS[name](N, N)]
    for s in out.streams:
        assert s.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(s)))
    for term in [*out.aux_losses.values(), *out.metrics.values()]:  # per example
        assert term.shape == (B,) and term.dtype == jnp.float32
        assert bool(jnp.all(jnp.isfinite(term)))

    graphdef, params, rest = nnx.split(module, nnx.Param, ...)

    def loss(params, a, b):
        out = nnx.merge(graphdef, params, rest)(a, b)
        task = sum(jnp.mean(jnp.sin(s)) for s in out.streams)
        return task + sum(jnp.mean(v) for v in out.aux_losses.values()), out

    (_, jitted), grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))(
        params, a, b
    )
    for eager, compiled in zip(out.streams, jitted.streams, strict=True):
        np.testing.assert_allclose(compiled, eager, rtol=1e-5, atol=1e-5)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))
    magnitude = lambda tree: sum(float(jnp.sum(jnp.abs(g))) for g in jax.tree.leaves(tree))
    assert magnitude(grads[1]) > 0
    if jax.tree.leaves(params):
        assert magnitude(grads[0]) > 0
    else:
        assert name in {"unimodal", "late"}


@pytest.mark.parametrize(
    "name",
    # MANGO's default block pairs the modalities' tokens too (MMCA); tests/flows covers G.
    sorted(n for n in fusion.NAMES
           if n not in {"tokenfusion", "geminifusion", "concat", "mango"}),
)
def test_unequal_token_counts(name):
    module = fusion.build(small_config(name), dim=D, tokens=(3, 5), rngs=nnx.Rngs(0))
    out = jax.jit(lambda a, b: module(a, b))(*inputs(3, 5))
    assert [s.shape for s in out.streams] == [(B, t, D) for t in EXPECTED_TOKENS[name](3, 5)]


@pytest.mark.parametrize("name", ["tokenfusion", "geminifusion", "concat"])
def test_position_aligned_methods_reject_unequal_tokens(name):
    with pytest.raises(ValueError, match="equal token counts, got M=3 and K=5"):
        fusion.build(small_config(name), dim=D, tokens=(3, 5), rngs=nnx.Rngs(0))
    module = fusion.build(small_config(name), dim=D, tokens=(4, 4), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="equal token counts"):
        module(*inputs(3, 5))


def test_wrong_width_is_reported():
    module = fusion.build(small_config("gmu"), dim=D, tokens=(N, N), rngs=nnx.Rngs(0))
    a, b = inputs()
    with pytest.raises(ValueError, match="dim=8"):
        module(a[..., :4], b[..., :4])


@pytest.mark.parametrize("name", ["concat", "dynmm", *sorted(TRANSFORMERS)])
def test_dropout_only_when_not_deterministic(name):
    config = small_config(name)
    config.dropout = 0.5
    if name == "concat":
        config.mode = "token"
    module = fusion.build(config, dim=D, tokens=(N, N), rngs=nnx.Rngs(0, dropout=1))
    a, b = inputs()
    first, second = module(a, b), module(a, b)
    for s1, s2 in zip(first.streams, second.streams, strict=True):
        np.testing.assert_array_equal(s1, s2)
    noisy1 = module(a, b, deterministic=False)
    noisy2 = module(a, b, deterministic=False)
    assert not np.allclose(noisy1.streams[0], first.streams[0])
    assert not np.allclose(noisy1.streams[0], noisy2.streams[0])
