"""`nn.freeze`: an inference copy computes what a live model does, with its parameter-only work
(LICA's and Glow's LU mixing matrices) done once instead of in every call."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from flax import nnx

from mango_jax import flows
from mango_jax.flows import checks
from mango_jax.flows.lica import TokenMixLU
from mango_jax.nn import Precomputed, freeze

B, M, D = 2, 8, 16


def trained_flow(layer: str, scan: bool = False):
    """A 2-block G whose parameters are far from their start (the mixing matrices are no longer
    permutations), as after training."""
    config = flows.default_config()
    config.update(layer=layer, num_blocks=2, dim=D, num_heads=2, tokens_per_modality=(M, M),
                  coupling_hidden=16, scan=scan)
    return checks.perturb(flows.build(config, rngs=nnx.Rngs(0)), jax.random.key(3))


def precomputed(module) -> list:
    return jax.tree.leaves(nnx.state(module, Precomputed))


@pytest.mark.parametrize(("layer", "scan"), [("mango", False), ("mango", True), ("glow", False)])
def test_frozen_flow_computes_what_the_live_one_does(layer, scan):
    flow = trained_flow(layer, scan)
    frozen = freeze(flow)
    mixers = [m for _, m in nnx.iter_modules(flow) if isinstance(m, TokenMixLU)]
    assert mixers and not precomputed(flow)  # the live model is left as it was
    assert len(precomputed(frozen)) == 2 * len(mixers)  # W and W⁻¹ of each
    x = jax.random.normal(jax.random.key(1), (B, 2 * M, D))

    def run(module, direction, value):
        graphdef, state = nnx.split(module)
        return jax.jit(lambda s, v: getattr(nnx.merge(graphdef, s), direction)(v))(state, value)

    y, logdet = run(flow, "__call__", x)
    y_frozen, logdet_frozen = run(frozen, "__call__", x)
    np.testing.assert_allclose(y_frozen, y, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(logdet_frozen, logdet, rtol=1e-5, atol=1e-4)
    x_rec, logdet_inv = run(frozen, "inverse", y_frozen)
    np.testing.assert_allclose(x_rec, x, atol=1e-5)
    np.testing.assert_allclose(logdet_inv, -logdet_frozen, atol=1e-4)


def test_frozen_inference_does_less_work_at_batch_one():
    """LICA builds W = P L S and W⁻¹ in O(N³) per call; frozen, the batch-1 forward program
    only applies them (XLA's FLOP count of both programs)."""
    flow = trained_flow("mango")
    x = jax.random.normal(jax.random.key(1), (1, 2 * M, D))

    def flops(module):
        graphdef, state = nnx.split(module)
        forward = jax.jit(lambda s, v: nnx.merge(graphdef, s)(v))
        return forward.lower(state, x).compile().cost_analysis()["flops"]

    live, frozen = flops(flow), flops(freeze(flow))
    assert frozen < 0.9 * live, (frozen, live)
