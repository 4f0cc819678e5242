"""Glow baseline of the Table 4 ablation (Kingma & Dhariwal 2018).

One Glow step (section 3, Table 1): ActNorm → invertible 1×1 convolution → affine coupling.
On tokens `[B, N, D]` the 1×1 convolution is one `D × D` matrix applied to every token's channel
vector, in Glow's LU form `W = P L (U + diag(s))` (`TokenMixLU` with `axis=2`, whose factors are
bounded so that `κ(W)` is bounded for every parameter value); its log-det is `N · Σ log s`. The
coupling splits the channels and uses Glow's convolutional NN() over the token axis
(`mango_jax.flows.realnvp.ConvConditioner`) and Glow's scale σ(raw + 2)
(`realnvp.sigmoid_log_scale`). A block is `flow.glow.steps_per_block` steps; one, as MANGO's
block has one coupling: with three, the perturbed G at the paper's size reconstructs only to 1e-4 in
float32 (each coupling amplifies the inverse's rounding error a little).

ActNorm's data-dependent initialisation (section 3.1) is not part of building G: call
`initialize_actnorms(flow, x)` once on the first training batch `x` (the features F that G
receives), before the optimizer is created (the training loop does, through
`MangoFusion.data_init`). It runs `x` through the flow and sets every ActNorm
so that its own input batch leaves it with zero mean and unit variance per channel; without the
call every ActNorm stays the identity. Flow++ and AttnFlow blocks contain ActNorm too and use the
same function.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from mango_jax.flows.actnorm import ActNorm
from mango_jax.flows.base import InvertibleLayer, Sequential, logdet_dtype
from mango_jax.flows.lica import TokenMixLU
from mango_jax.flows.realnvp import channel_coupling

# `flow.glow` (mango_jax.flows.default_config).
DEFAULTS = {
    # Glow steps (ActNorm, 1×1 convolution, coupling) per block of G.
    "steps_per_block": 1,
    # Width of the first and last convolution of the coupling conditioner along the tokens.
    "kernel_size": 3,
}


class ChannelMixLU(InvertibleLayer):
    """Glow's invertible 1×1 convolution in LU form: `y_n = W x_n` for every token n of `[B, N, D]`.

    `log|det| = N · Σ_i log s_i` (P is a permutation, L unit triangular); the inverse applies
    `W⁻¹ = S⁻¹ L⁻¹ Pᵀ` (`TokenMixLU.matrices`).
    """

    def __init__(self, dim: int, *, seed: int, param_dtype=jnp.float32):
        self.mix = TokenMixLU(dim, seed=seed, axis=2, param_dtype=param_dtype)

    def _logdet(self, x):
        _, upper = self.mix.factors()
        log_s = jnp.log(jnp.diagonal(upper)).astype(logdet_dtype(x.dtype))
        return jnp.full(x.shape[:1], x.shape[1] * jnp.sum(log_s))

    def __call__(self, x):
        return self.mix.apply(x), self._logdet(x)

    def inverse(self, y):
        return self.mix.solve(y), -self._logdet(y)


def glow_step(config, block: int, step: int, *, rngs: nnx.Rngs,
              param_dtype) -> list[InvertibleLayer]:
    """ActNorm, 1×1 convolution (permutation seeded by block and step) and channel coupling.

    The coupling keeps one parity, as in Glow: the learned 1×1 convolution replaces RealNVP's
    alternation of the halves.
    """
    seed = config.seed * 1_000_003 + 1000 * block + step
    return [ActNorm(config.dim, param_dtype=param_dtype),
            ChannelMixLU(config.dim, seed=seed, param_dtype=param_dtype),
            channel_coupling(config, 0, config.glow.kernel_size, rngs=rngs,
                             param_dtype=param_dtype)]


def make_block(config, block: int, tokens: tuple[int, int], *, rngs: nnx.Rngs,
               param_dtype) -> Sequential:
    """`config.glow.steps_per_block` Glow steps."""
    del tokens  # Glow's step is token-count agnostic.
    steps = config.glow.steps_per_block
    if steps < 1:
        raise ValueError(f"flow.glow.steps_per_block must be ≥ 1, got {steps}")
    return Sequential([layer for step in range(steps)
                       for layer in glow_step(config, block, step, rngs=rngs,
                                              param_dtype=param_dtype)])


def initialize_actnorms(flow: InvertibleLayer, x: jax.Array) -> jax.Array:
    """Glow's data-dependent ActNorm initialisation from a batch `x: [B, N, D]`; returns `flow(x)`.

    Walks `Sequential`s in order, so each ActNorm is initialised from the activations that reach
    it after the layers before it have been initialised. Call once, eagerly, before training.
    """
    if isinstance(flow, Sequential):
        children = flow.children()
        for layer in children:
            x = initialize_actnorms(layer, x)
        flow.set_children(children)
        return x
    if isinstance(flow, ActNorm):
        flow.initialize(x)
    return flow(x)[0]
