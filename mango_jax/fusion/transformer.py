"""The base of the transformer fusion methods: their shared budget fields and layer stacks."""

from __future__ import annotations

import ml_collections
from flax import nnx

from mango_jax.fusion.base import FusionModule
from mango_jax.nn import TransformerBlock

# The budget fields of every transformer-based method; experiment configs set num_layers to
# MANGO's block count so that the comparison is at equal depth.
TRANSFORMER_DEFAULTS = {"num_layers": 2, "num_heads": 4, "mlp_ratio": 4.0, "dropout": 0.0}

# The dual-stream methods whose papers share the transformer between homogeneous modalities
# (RGB-depth), keeping a LayerNorm per modality: `shared_weights` (their HOMOGENEOUS_DEFAULTS).
SHARED_DEFAULTS = {"shared_weights": False}


def transformer_stack(
    config: ml_collections.ConfigDict, dim: int, *, rngs: nnx.Rngs, cross: bool = False
) -> nnx.List:
    """`config.num_layers` blocks with the config's heads, MLP ratio and dropout."""
    if config.num_layers < 0:
        raise ValueError(f"num_layers must be >= 0, got {config.num_layers}")
    return nnx.List([
        TransformerBlock(dim, num_heads=config.num_heads, mlp_ratio=config.mlp_ratio,
                         dropout=config.dropout, rngs=rngs, cross=cross)
        for _ in range(config.num_layers)])


def share_weights(stack_a: nnx.List, stack_b: nnx.List) -> None:
    """Makes every block of `stack_b` use the attention and MLP of its counterpart in
    `stack_a`, keeping its own LayerNorms: TokenFusion's and GeminiFusion's parameter sharing
    for homogeneous modalities (their `ModuleParallel` layers with `LayerNormParallel`). The
    shared modules are one node of the graph, so they are one set of parameters, counted,
    updated and saved once."""
    for block_a, block_b in zip(stack_a, stack_b):
        block_b.attention = block_a.attention
        block_b.mlp = block_a.mlp


class TransformerFusion(FusionModule):
    """A method built of transformer layers: `TRANSFORMER_DEFAULTS` and `stacks`, one stack
    per modality (a first, then b)."""

    DEFAULTS = TRANSFORMER_DEFAULTS

    def stacks(self, config: ml_collections.ConfigDict, *, rngs: nnx.Rngs,
               cross: bool = False) -> tuple[nnx.List, nnx.List]:
        """Separate weights per modality, or shared ones (`share_weights`) where the method
        has the field `shared_weights` and it is set."""
        stack_a = transformer_stack(config, self.dim, rngs=rngs, cross=cross)
        stack_b = transformer_stack(config, self.dim, rngs=rngs, cross=cross)
        if config.get("shared_weights", False):
            share_weights(stack_a, stack_b)
        return stack_a, stack_b
