"""Cross-modal attention fusion in the style of MulT (Tsai et al., ACL 2019)."""

from __future__ import annotations

import jax

from mango_jax.fusion.base import FusionOutput, output, register
from mango_jax.fusion.transformer import TransformerFusion


@register
class CrossAttentionFusion(TransformerFusion):
    """Two crossmodal transformers, b -> a and a -> b (MulT's crossmodal attention).

    Layer i of the b -> a transformer (and symmetrically a -> b):
      `Z' = CM(LN(Z^[i-1]), LN(X_b)) + Z^[i-1]`, `Z^[i] = f(LN(Z')) + Z'` (the pre-LN form of
      the official code; the paper writes the residual as LN(Z^[i-1])),
    where `CM(Q-source, KV-source) = softmax(Q W_Q (K W_K)^T / sqrt(d)) K W_V` and `Z^[0] = X_a`.
    As in MulT the keys and values of every layer are the *input* tokens of the source
    modality X_b ("low-level" features), so a stream is repeatedly reinforced by the other
    modality rather than by its already-mixed version. Works for M != K.
    MulT's extra per-target self-attention transformer after the crossmodal ones is left out:
    the whole `num_layers` budget goes to crossmodal layers.

    Config: `num_layers`, `num_heads`, `mlp_ratio`, `dropout`.
    Streams: `(Z_{b->a} [B, M, D], Z_{a->b} [B, K, D])`.
    """

    NAME = "cross_attention"

    def setup(self, config, *, rngs):
        self.b_to_a, self.a_to_b = self.stacks(config, rngs=rngs, cross=True)

    def __call__(self, a: jax.Array, b: jax.Array, *, deterministic: bool = True) -> FusionOutput:
        """`a [B, M, D]`, `b [B, K, D]` -> streams `([B, M, D], [B, K, D])`."""
        self.check(a, b)
        za, zb = a, b
        for layer_a, layer_b in zip(self.b_to_a, self.a_to_b):
            za = layer_a(za, b, deterministic=deterministic)
            zb = layer_b(zb, a, deterministic=deterministic)
        return output(za, zb)
