"""Multimodal Bottleneck Transformer (Nagrani et al., "Attention Bottlenecks for Multimodal
Fusion", NeurIPS 2021)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from mango_jax.fusion.base import FusionOutput, output, register
from mango_jax.fusion.transformer import TRANSFORMER_DEFAULTS, TransformerFusion


@register
class MBTFusion(TransformerFusion):
    """Fusion through a few shared bottleneck tokens (MBT; Nagrani et al., NeurIPS 2021).

    Layers l < L_f (`fusion_layer`) are separate per-modality transformers,
    `z_i^{l+1} = Transformer(z_i^l; theta_i)`. From L_f on, B (`num_bottlenecks`) learned tokens
    `z_fsn` (initialised N(0, 0.02^2), as in the official Scenic code) join each modality:
      `[z_i^{l+1} || zhat_fsn,i^{l+1}] = Transformer([z_i^l || z_fsn^l]; theta_i)`,
      `z_fsn^{l+1} = Avg_i(zhat_fsn,i^{l+1})`,
    so the bottleneck tokens are the only path between the modalities. Information written into
    them in layer l is read in layer l + 1, so b first reaches a's tokens in layer L_f + 1, and
    with L_f >= num_layers - 1 or B = 0 the streams never meet (late fusion of two
    transformers). Weights are separate per modality (theta_i), MBT's default. MBT's CLS
    tokens are replaced by the task head's pooling of each stream; the bottleneck tokens are not
    part of the output.

    Config: `num_layers`, `num_heads`, `mlp_ratio`, `dropout`, `num_bottlenecks` (B >= 0),
    `fusion_layer` (L_f, 0 <= L_f <= num_layers; default 0, fusion from the first layer; the
    paper's best is L_f = 8 of 12 layers).
    Streams: `(z_a [B, M, D], z_b [B, K, D])`.
    """

    NAME = "mbt"
    DEFAULTS = {**TRANSFORMER_DEFAULTS, "num_bottlenecks": 4, "fusion_layer": 0}

    def setup(self, config, *, rngs):
        if not 0 <= config.fusion_layer <= config.num_layers:
            raise ValueError(
                f"mbt: fusion_layer={config.fusion_layer} must lie in [0, num_layers="
                f"{config.num_layers}] (layers before it are unimodal, layers from it on fuse)."
            )
        if config.num_bottlenecks < 0:
            raise ValueError(f"mbt: num_bottlenecks must be >= 0, got {config.num_bottlenecks}")
        self.fusion_layer = config.fusion_layer
        self.layers_a, self.layers_b = self.stacks(config, rngs=rngs)
        init = nnx.initializers.normal(0.02)
        self.bottleneck = nnx.Param(init(rngs.params(), (1, config.num_bottlenecks, self.dim)))

    def layer_outputs(
        self, a: jax.Array, b: jax.Array, *, deterministic: bool = True
    ) -> list[tuple[jax.Array, jax.Array]]:
        """`a [B, M, D]`, `b [B, K, D]` -> the streams `(z_a^l, z_b^l)` after every layer l."""
        self.check(a, b)
        bottleneck = self.bottleneck[...]
        bottleneck = jnp.broadcast_to(bottleneck, (a.shape[0], *bottleneck.shape[1:]))
        m, k = a.shape[1], b.shape[1]
        states = []
        for index, (layer_a, layer_b) in enumerate(zip(self.layers_a, self.layers_b)):
            if index < self.fusion_layer:
                a = layer_a(a, deterministic=deterministic)
                b = layer_b(b, deterministic=deterministic)
            else:
                ya = layer_a(jnp.concatenate([a, bottleneck], 1), deterministic=deterministic)
                yb = layer_b(jnp.concatenate([b, bottleneck], 1), deterministic=deterministic)
                a, b = ya[:, :m], yb[:, :k]
                bottleneck = 0.5 * (ya[:, m:] + yb[:, k:])
            states.append((a, b))
        return states

    def __call__(self, a: jax.Array, b: jax.Array, *, deterministic: bool = True) -> FusionOutput:
        """`a [B, M, D]`, `b [B, K, D]` -> streams `([B, M, D], [B, K, D])`."""
        states = self.layer_outputs(a, b, deterministic=deterministic)
        return output(*(states[-1] if states else (a, b)))
