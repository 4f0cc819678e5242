"""DynMM: the gate (soft in training, hard straight-through at inference), the cost losses, the
fusion-level paths and schedule, and the analytic compute saved."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from fusion_np_reference import attention, block, gelu, layer_norm, linear, mlp, params, softmax

from mango_jax import fusion
from mango_jax.fusion.dynmm import compute_saved, gate_weights

B, M, K, D, HEADS = 6, 4, 3, 8, 2


def build(level: str, layers: int = 2, **fields) -> nnx.Module:
    config = fusion.default_config("dynmm")
    config.update({"level": level, "num_layers": layers, "num_heads": HEADS, "mlp_ratio": 2.0,
                   **fields})
    return fusion.build(config, dim=D, tokens=(M, K), rngs=nnx.Rngs(0))


def inputs(seed: int = 0, batch: int = B) -> tuple[jax.Array, jax.Array]:
    ka, kb = jax.random.split(jax.random.key(seed))
    return jax.random.normal(ka, (batch, M, D)), jax.random.normal(kb, (batch, K, D))


# One compiled program per module and mode, reused across calls.
train_step = nnx.jit(lambda module, a, b: module(a, b, deterministic=False))
infer = nnx.jit(lambda module, a, b: module(a, b))


def np_gate(p: dict, a, b) -> np.ndarray:
    z = np.concatenate([np.mean(a, 1), np.mean(b, 1)], -1).astype(np.float64)
    return linear(p["fc2"], gelu(linear(p["fc1"], z)))


def np_path(p: dict, a, b, k: int) -> list[np.ndarray]:
    """Path k from the definition: layers < k attend over [LN(a); LN_c(b')], b' the output of
    b's own layer; the later layers attend within a."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    states = []
    for index in range(len(p["layers"])):
        lp = p["layers"][index]
        h = layer_norm(lp["norm1"], a)
        if index < k:
            b = block(p["blocks_b"][index], b, HEADS)
            kv = np.concatenate([h, layer_norm(lp["norm_context"], b)], 1)
        else:
            kv = h
        a = a + attention(lp["attention"], h, kv, kv, HEADS)
        a = a + mlp(lp["mlp"], layer_norm(lp["norm2"], a))
        states.append(a)
    return states


def test_gate_weights_soft_hard_and_straight_through():
    logits = jax.random.normal(jax.random.key(1), (5, 3)) * 2
    soft = gate_weights(logits, 0.7, hard=False)
    np.testing.assert_allclose(soft, softmax(np.asarray(logits, np.float64) / 0.7), rtol=1e-5)
    hard = gate_weights(logits, 0.7, hard=True)
    np.testing.assert_array_equal(hard, np.eye(3)[np.argmax(np.asarray(logits), -1)])
    cotangent = jax.random.normal(jax.random.key(2), (5, 3))
    grad = lambda hard: jax.vjp(lambda x: gate_weights(x, 0.7, hard=hard), logits)[1](
        cotangent)[0]
    np.testing.assert_allclose(grad(True), grad(False), rtol=1e-6)  # the softmax's gradient
    assert float(jnp.abs(grad(True)).sum()) > 0


def test_modality_level_mixes_experts_softly_in_training_and_picks_one_at_inference():
    module = build("modality", temperature=0.5, cost_weight=0.3)
    a, b = inputs()
    p = params(module)
    g = softmax(np_gate(p["gate"], a, b) / 0.5)
    e_a = np_path(p["expert_a"], a, b, 0)[-1]
    e_ab = np_path(p["expert_ab"], a, b, 2)[-1]

    train = train_step(module, a, b)
    expected = g[:, 0, None, None] * e_a + g[:, 1, None, None] * e_ab
    np.testing.assert_allclose(train.streams[0], expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(train.aux_losses["dynmm_cost"], 0.3 * g[:, 1], rtol=1e-5)

    inferred = infer(module, a, b)
    choice = np.argmax(g, -1)
    assert 0 < choice.sum() < B, "the test needs examples on both experts"
    expected = np.where((choice == 1)[:, None, None], e_ab, e_a)
    np.testing.assert_allclose(inferred.streams[0], expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(inferred.aux_losses["dynmm_cost"], 0.3 * choice, rtol=1e-6)
    np.testing.assert_array_equal(inferred.metrics["dynmm/share_ab"], choice)
    np.testing.assert_array_equal(inferred.metrics["dynmm/share_a"], 1 - choice)


@pytest.mark.parametrize("level", ["modality", "fusion"])
def test_straight_through_gradient_reaches_the_gate_at_inference(level):
    module = build(level, warmup_steps=0)
    a, b = inputs()
    graphdef, gate, rest = nnx.split(module, lambda path, _: "gate" in path, ...)

    def task(gate):
        out = nnx.merge(graphdef, gate, rest)(a, b, deterministic=True)
        return jnp.sum(jnp.sin(out.streams[0]))

    grads = jax.jit(jax.grad(task))(gate)
    assert sum(float(jnp.abs(g).sum()) for g in jax.tree.leaves(grads)) > 0


def test_fusion_level_warmup_random_paths_then_hard_gate_and_cost_loss():
    module = build("fusion", layers=2, warmup_steps=2, anneal_steps=4, temperature=2.0,
                   final_temperature=0.5, cost_weight=0.2, cost_budget=0.25)
    a, b = inputs(batch=24)
    choice = np.argmax(np_gate(params(module)["gate"], a, b), -1)
    shares = lambda out: np.stack([out.metrics[f"dynmm/share_{k}"] for k in "012"], -1)
    costs = np.array([0.0, 0.5, 1.0])

    warm = [train_step(module, a, b) for _ in range(2)]
    assert int(module.progress[...]) == 2
    for out in warm:  # uniformly random paths, not the gate's
        assert (np.argmax(shares(out), -1) != choice).mean() > 0.3
        np.testing.assert_array_equal(out.metrics["dynmm/temperature"], 2.0)
    assert not np.array_equal(shares(warm[0]), shares(warm[1]))

    for step in range(2, 8):
        out = train_step(module, a, b)
        np.testing.assert_array_equal(np.argmax(shares(out), -1), choice)
        # Geometric from 2.0 to 0.5 over 4 passes after the warm-up, then constant.
        tau = 2.0 * 0.25 ** min(1.0, (step - 2) / 4)
        np.testing.assert_allclose(out.metrics["dynmm/temperature"], tau, rtol=1e-6)
        np.testing.assert_allclose(out.aux_losses["dynmm_cost"],
                                   0.2 * np.maximum(costs[choice] - 0.25, 0.0), rtol=1e-6)
    assert int(module.progress[...]) == 8
    evaluated = infer(module, a, b)
    assert int(module.progress[...]) == 8  # inference does not advance the schedule
    np.testing.assert_array_equal(np.argmax(shares(evaluated), -1), choice)
    np.testing.assert_allclose(evaluated.metrics["dynmm/cost"], costs[choice])


def test_path_k_lets_b_into_exactly_its_first_k_layers():
    layers = 2
    module = build("fusion", layers=layers)
    stack, p = module.stack, params(module)["stack"]
    a, b = inputs()
    tangent = jax.random.normal(jax.random.key(9), b.shape)
    for k in range(layers + 1):
        states = stack.path(a, b, k)
        for got, want in zip(states, np_path(p, a, b, k), strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
        # Perturb b: how each layer's output moves, against how it would move through a's
        # input alone (the layer without b). They agree exactly on the layers b does not enter.
        _, moved = jax.jvp(lambda b, k=k: stack.path(a, b, k), (b,), (tangent,))
        inputs_a = [a, *states[:-1]]
        moved_in = [jnp.zeros_like(a), *moved[:-1]]
        for index in range(layers):
            _, through_a = jax.jvp(lambda x, i=index: stack.layer(i, x), (inputs_a[index],),
                                   (moved_in[index],))
            direct = float(jnp.abs(moved[index] - through_a).max())
            if index < k:
                assert direct > 1e-3, (k, index)
            else:
                assert direct < 1e-6, (k, index)
        # The mixture with a one-hot path choice is exactly path k.
        fused = jnp.broadcast_to((jnp.arange(layers) < k).astype(jnp.float32), (B, layers))
        np.testing.assert_array_equal(stack.mixture(a, b, fused), states[-1])


def xla_flops(part: nnx.Module, fn, *args) -> float:
    """XLA's FLOPs of `fn(part, *args)`, with the parameters as inputs (as in training, so that
    nothing is constant-folded)."""
    graphdef, state = nnx.split(part)
    lowered = jax.jit(lambda s, *x: fn(nnx.merge(graphdef, s), *x)).lower(state, *args)
    cost = lowered.compile().cost_analysis()
    return float((cost[0] if isinstance(cost, list | tuple) else cost)["flops"])


@pytest.mark.parametrize("level", ["modality", "fusion"])
def test_compute_saved_from_xla_flops(level):
    module = build(level, layers=1)
    a, b = inputs(batch=1)
    described = module.describe()
    flops = described["path_flops"]
    if level == "modality":
        want = {"a": xla_flops(module.expert_a, lambda e, a: e.path(a, None, 0)[-1], a),
                "ab": xla_flops(module.expert_ab, lambda e, a, b: e.path(a, b, 1)[-1], a, b)}
    else:
        want = {str(k): xla_flops(module.stack, lambda s, a, b, k=k: s.path(a, b, k)[-1], a, b)
                for k in range(2)}
    assert flops == pytest.approx(want, rel=1e-6)
    values = list(flops.values())
    assert values == sorted(values) and values[0] < values[-1]
    gate = xla_flops(module.gate, lambda g, a, b: g(a, b), a, b)
    assert described["gate_flops"] == pytest.approx(gate, rel=1e-6)

    names = list(flops)
    shares = np.linspace(1.0, 2.0, len(names))
    shares /= shares.sum()
    results = {"val": {f"dynmm/share_{n}": s for n, s in zip(names, shares, strict=True)},
               "test": {f"dynmm/share_{names[0]}": 1.0,
                        **{f"dynmm/share_{n}": 0.0 for n in names[1:]}}}
    report = module.diagnostics(None, None, "", results)
    dynamic = gate + sum(s * want[n] for n, s in zip(names, shares, strict=True))
    assert report["val"]["flops_per_example"] == pytest.approx(dynamic, rel=1e-6)
    assert report["val"]["compute_saved"] == pytest.approx(1 - dynamic / want[names[-1]],
                                                           rel=1e-6)
    cheapest = 1 - (gate + want[names[0]]) / want[names[-1]]
    assert report["test"]["compute_saved"] == pytest.approx(cheapest, rel=1e-6)
    assert report["val"]["shares"] == pytest.approx(dict(zip(names, shares, strict=True)))
    assert compute_saved({"x": 10.0, "y": 40.0}, 2.0, {"x": 0.5, "y": 0.5}) == {
        "shares": {"x": 0.5, "y": 0.5}, "flops_per_example": 27.0, "compute_saved": 1 - 27 / 40}


def test_bad_fields_are_reported():
    with pytest.raises(ValueError, match="level must be one of"):
        build("layerwise")
    with pytest.raises(ValueError, match="num_layers must be >= 1"):
        build("fusion", layers=0)
    assert fusion.default_config("dynmm").level == "modality"
    assert fusion.default_config("dynmm", dense=True).level == "fusion"
