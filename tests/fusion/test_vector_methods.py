"""The pooled-vector methods against float64 NumPy references and their defining properties."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from fusion_np_reference import linear, params, sigmoid

from mango_jax import fusion

B, D = 3, 6
TOL = {"rtol": 2e-5, "atol": 2e-5}


def build(name: str, **fields) -> nnx.Module:
    config = fusion.default_config(name)
    config.update(fields)
    return fusion.build(config, dim=D, tokens=(5, 2), rngs=nnx.Rngs(7))


def vectors(seed: int, n: int = B) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, D)), rng.normal(size=(n, D))


def fused(module: nnx.Module, za: np.ndarray, zb: np.ndarray) -> np.ndarray:
    """The module's output for single-token streams equal to `za`, `zb`: `[n, D]`."""
    graphdef, state = nnx.split(module)
    stream = _forward(graphdef, state, jnp.asarray(za, jnp.float32), jnp.asarray(zb, jnp.float32))
    return np.asarray(stream, np.float64)


@functools.partial(jax.jit, static_argnums=0)
def _forward(graphdef, state, za, zb):
    (stream,) = nnx.merge(graphdef, state)(za[:, None], zb[:, None]).streams
    return stream[:, 0]


def test_streams_are_pooled_by_token_mean():
    module = build("gmu")
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(B, 5, D)), rng.normal(size=(B, 2, D))
    (stream,) = module(jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32)).streams
    np.testing.assert_allclose(stream[:, 0], fused(module, a.mean(1), b.mean(1)), **TOL)


def test_additive_has_no_interaction_term():
    module = build("additive")
    p = params(module)
    za, zb = vectors(0)
    za2, zb2 = vectors(1)
    expected = linear(p["proj_a"], za) + linear(p["proj_b"], zb)
    np.testing.assert_allclose(fused(module, za, zb), expected, **TOL)
    # f(a, b) + f(a', b') == f(a, b') + f(a', b) holds exactly when f = f_A(a) + f_B(b).
    np.testing.assert_allclose(
        fused(module, za, zb) + fused(module, za2, zb2),
        fused(module, za, zb2) + fused(module, za2, zb),
        **TOL,
    )


def test_multiplicative_is_a_projection_of_the_elementwise_product():
    module = build("multiplicative")
    za, zb = vectors(2)
    expected = linear(params(module)["proj"], za * zb)
    np.testing.assert_allclose(fused(module, za, zb), expected, **TOL)
    bias = np.broadcast_to(params(module)["proj"]["bias"], (B, D))
    np.testing.assert_allclose(fused(module, za, np.zeros_like(zb)), bias, **TOL)


def _outer_reference(p: dict, za, zb, append_one: bool) -> np.ndarray:
    if "embed_a" in p:
        za, zb = linear(p["embed_a"], za), linear(p["embed_b"], zb)
    if append_one:
        za = np.concatenate([za, np.ones((len(za), 1))], 1)
        zb = np.concatenate([zb, np.ones((len(zb), 1))], 1)
    flat = np.stack([np.outer(x, y).ravel() for x, y in zip(za, zb, strict=True)])
    return linear(p["proj"], flat)


@pytest.mark.parametrize("hidden_dim", [None, 3])
@pytest.mark.parametrize("name", ["bilinear", "tensor"])
def test_outer_product_fusion_matches_numpy(name, hidden_dim):
    module = build(name, hidden_dim=hidden_dim)
    width = (hidden_dim or D) + (name == "tensor")
    assert params(module)["proj"]["kernel"].shape == (width * width, D)
    za, zb = vectors(3)
    expected = _outer_reference(params(module), za, zb, append_one=name == "tensor")
    np.testing.assert_allclose(fused(module, za, zb), expected, **TOL)


def test_tensor_fusion_keeps_unimodal_terms_and_bilinear_does_not():
    za, _ = vectors(4)
    zero = np.zeros_like(za)
    tensor, bilinear = build("tensor"), build("bilinear")
    # With z_b = 0, [z_b; 1] still carries the 1, so TFN sees z_a; a pure bilinear map does not.
    assert np.abs(fused(tensor, za, zero) - fused(tensor, zero, zero)).max() > 1e-3
    np.testing.assert_allclose(fused(bilinear, za, zero), fused(bilinear, zero, zero), **TOL)


def _implied_weight(module, dim: int, bias: np.ndarray) -> np.ndarray:
    """Recover `W [(D+1), (D+1), D]` of `f(z_a, z_b) = sum W_pq [z_a;1]_p [z_b;1]_q + c`, given
    c, by evaluating the module as a black box at basis vectors."""
    eye = np.eye(dim)
    zero = np.zeros((1, dim))
    f00 = fused(module, zero, zero)[0]
    fa = fused(module, eye, np.zeros((dim, dim)))  # [p, o]
    fb = fused(module, np.zeros((dim, dim)), eye)  # [q, o]
    pairs_a = np.repeat(eye, dim, axis=0)
    pairs_b = np.tile(eye, (dim, 1))
    fab = fused(module, pairs_a, pairs_b).reshape(dim, dim, -1)
    w = np.zeros((dim + 1, dim + 1, fab.shape[-1]))
    w[:dim, :dim] = fab - fa[:, None] - fb[None, :] + f00
    w[:dim, dim] = fa - f00
    w[dim, :dim] = fb - f00
    w[dim, dim] = f00 - bias
    return w


def test_lrtf_equals_tensor_fusion_with_the_rank_r_weight():
    rank = 2
    lrtf = build("lrtf", rank=rank)
    p = params(lrtf)
    full = np.einsum("rpo,rqo->pqo", p["factor_a"], p["factor_b"])
    tensor = build("tensor")
    tensor.proj.kernel[...] = jnp.asarray(full.reshape(-1, D), jnp.float32)
    tensor.proj.bias[...] = jnp.asarray(p["bias"], jnp.float32)
    za, zb = vectors(5)
    np.testing.assert_allclose(fused(lrtf, za, zb), fused(tensor, za, zb), **TOL)
    # The weight the LRTF module actually implements has rank <= r in every output slice,
    # while an unconstrained TFN weight has full rank.
    implied = _implied_weight(lrtf, D, p["bias"])
    np.testing.assert_allclose(implied, full, rtol=1e-4, atol=1e-4)
    for o in range(D):
        assert np.linalg.matrix_rank(implied[:, :, o], tol=1e-3) <= rank
    tfn = build("tensor")
    tfn_weight = _implied_weight(tfn, D, params(tfn)["proj"]["bias"])
    assert np.linalg.matrix_rank(tfn_weight[:, :, 0], tol=1e-3) == D + 1


def test_mi_matrix_matches_numpy_and_is_affine_in_each_modality():
    module = build("mi_matrix")
    p = params(module)
    za, zb = vectors(6)
    weight = linear(p["weight_net"], zb).reshape(B, D, D)  # W(z_b): [B, D_a, D_out]
    expected = np.einsum("bi,bio->bo", za, weight) + linear(p["bias_net"], zb)
    np.testing.assert_allclose(fused(module, za, zb), expected, **TOL)
    za2, zb2 = vectors(7)
    t = 0.3
    np.testing.assert_allclose(
        fused(module, t * za + (1 - t) * za2, zb),
        t * fused(module, za, zb) + (1 - t) * fused(module, za2, zb),
        **TOL,
    )
    np.testing.assert_allclose(
        fused(module, za, t * zb + (1 - t) * zb2),
        t * fused(module, za, zb) + (1 - t) * fused(module, za, zb2),
        **TOL,
    )
    # ... but not jointly affine: the interaction is multiplicative.
    joint = fused(module, t * za + (1 - t) * za2, t * zb + (1 - t) * zb2)
    mixed = t * fused(module, za, zb) + (1 - t) * fused(module, za2, zb2)
    assert np.abs(joint - mixed).max() > 1e-3


def test_gmu_gate_is_in_unit_interval_and_interpolates():
    module = build("gmu")
    p = params(module)
    za, zb = vectors(8, n=64)
    za, zb = 3 * za, 3 * zb
    gate = sigmoid(linear(p["gate_proj"], np.concatenate([za, zb], 1)))
    ha, hb = np.tanh(linear(p["proj_a"], za)), np.tanh(linear(p["proj_b"], zb))
    out = fused(module, za, zb)
    np.testing.assert_allclose(out, gate * ha + (1 - gate) * hb, **TOL)
    module_gate = np.asarray(module.gate(jnp.asarray(za), jnp.asarray(zb)), np.float64)
    np.testing.assert_allclose(module_gate, gate, **TOL)
    assert module_gate.min() > 0 and module_gate.max() < 1
    assert module_gate.min() < 0.2 and module_gate.max() > 0.8  # the gate is input dependent
    low, high = np.minimum(ha, hb), np.maximum(ha, hb)
    assert np.all(out >= low - 1e-5) and np.all(out <= high + 1e-5)
    # Where the gate saturates the output is the corresponding modality's candidate.
    sat = module_gate > 0.99
    np.testing.assert_allclose(out[sat], ha[sat], atol=0.02)


def test_vector_methods_are_invariant_to_token_order():
    module = build("mi_matrix")
    rng = np.random.default_rng(9)
    a = jnp.asarray(rng.normal(size=(B, 5, D)), jnp.float32)
    b = jnp.asarray(rng.normal(size=(B, 2, D)), jnp.float32)
    (base,) = module(a, b).streams
    (perm,) = module(a[:, ::-1], b[:, ::-1]).streams
    np.testing.assert_allclose(perm, base, **TOL)
