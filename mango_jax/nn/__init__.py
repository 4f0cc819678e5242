"""Neural-network layers shared across the package (encoders and fusion methods)."""

from mango_jax.nn.transformer import (
    ACTIVATIONS,
    Mlp,
    MultiHeadAttention,
    TransformerBlock,
    activation,
    check_heads,
)

__all__ = ["ACTIVATIONS", "Mlp", "MultiHeadAttention", "TransformerBlock", "activation",
           "check_heads"]
