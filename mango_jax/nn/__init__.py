"""Neural-network layers shared across the package (encoders and fusion methods)."""

from mango_jax.nn.constant import Constant
from mango_jax.nn.precompute import Precomputed, freeze
from mango_jax.nn.stacked import STACKED, stack_depth
from mango_jax.nn.transformer import (
    ACTIVATIONS,
    Mlp,
    MultiHeadAttention,
    TransformerBlock,
    activation,
    check_heads,
)

__all__ = ["ACTIVATIONS", "Constant", "Mlp", "MultiHeadAttention", "Precomputed", "STACKED",
           "TransformerBlock", "activation", "check_heads", "freeze", "stack_depth"]
