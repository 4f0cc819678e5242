"""MLP tokenizer for precomputed feature vectors (mfeat views, word2vec means, VGG features)."""

from __future__ import annotations

import jax
from flax import nnx


class VectorTokenizer(nnx.Module):
    """`[B, d_in] -> [B, T, D]`: an MLP whose output is read as T tokens of width D.

    A vector has no token axis of its own; splitting one wide projection into T tokens gives
    the flow's partitions (MMCA/IMCA halves) distinct tokens to condition on. With
    `latent=False` (the "without latent model" ablation) only the final projection remains.
    """

    def __init__(self, d_in: int, *, dim: int, num_tokens: int, hidden: int, latent: bool,
                 dropout: float, rngs: nnx.Rngs):
        self.num_tokens, self.dim = num_tokens, dim
        self.hidden = nnx.Linear(d_in, hidden, rngs=rngs) if latent else None
        self.dropout = nnx.Dropout(dropout, rngs=rngs)
        self.project = nnx.Linear(hidden if latent else d_in, num_tokens * dim, rngs=rngs)

    def __call__(self, x: jax.Array, *, deterministic: bool = True) -> jax.Array:
        if self.hidden is not None:
            x = self.dropout(jax.nn.gelu(self.hidden(x)), deterministic=deterministic)
        return self.project(x).reshape(x.shape[0], self.num_tokens, self.dim)
