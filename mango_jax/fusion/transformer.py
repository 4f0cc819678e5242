"""The base of the transformer fusion methods: their shared budget fields and layer stacks."""

from __future__ import annotations

import ml_collections
from flax import nnx

from mango_jax.fusion.base import FusionModule
from mango_jax.nn import TransformerBlock

# The budget fields of every transformer-based method; experiment configs set num_layers to
# MANGO's block count so that the comparison is at equal depth.
TRANSFORMER_DEFAULTS = {"num_layers": 2, "num_heads": 4, "mlp_ratio": 4.0, "dropout": 0.0}


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


class TransformerFusion(FusionModule):
    """A method built of transformer layers: `TRANSFORMER_DEFAULTS` and `stacks`, one stack
    per modality (a first, then b)."""

    DEFAULTS = TRANSFORMER_DEFAULTS

    def stacks(self, config: ml_collections.ConfigDict, *, rngs: nnx.Rngs,
               cross: bool = False) -> tuple[nnx.List, nnx.List]:
        return (transformer_stack(config, self.dim, rngs=rngs, cross=cross),
                transformer_stack(config, self.dim, rngs=rngs, cross=cross))
