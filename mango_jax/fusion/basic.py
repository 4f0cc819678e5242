"""The reference points of every fusion table: no fusion, early fusion and late fusion.

The standard multimodal-fusion lectures ("early, late and mid fusion"; "early and late fusion")
define them: early fusion joins the modalities' features before any joint processing, late fusion
combines per-modality predictions.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from mango_jax.fusion.base import (
    FusionModule,
    FusionOutput,
    check_inputs,
    output,
    register,
    require_equal_tokens,
)
from mango_jax.fusion.transformer import TRANSFORMER_DEFAULTS, transformer_stack


@register
class Unimodal(FusionModule):
    """No fusion: the task head sees one modality only, the other is ignored.

    Config: `modality` ('a' or 'b'), the stream that is kept.
    """

    NAME = "unimodal"
    DEFAULTS = {"modality": "a"}

    def setup(self, config, *, rngs):
        if config.modality not in ("a", "b"):
            raise ValueError(
                f"unimodal: config.modality must be 'a' or 'b', got {config.modality!r}"
            )
        self.modality = config.modality

    def __call__(self, a: jax.Array, b: jax.Array, *, deterministic: bool = True) -> FusionOutput:
        """`a [B, M, D]`, `b [B, K, D]` -> the kept stream unchanged."""
        self.check(a, b)
        return output(a if self.modality == "a" else b)


@register
class Late(FusionModule):
    """Late fusion: both streams go to the task head untouched and the model averages the
    per-stream logits, `y = (h(a) + h(b)) / 2`, so no information is exchanged before the head.
    """

    NAME = "late"

    def __call__(self, a: jax.Array, b: jax.Array, *, deterministic: bool = True) -> FusionOutput:
        """`a [B, M, D]`, `b [B, K, D]` -> `(a, b)`."""
        self.check(a, b)
        return output(a, b)


@register
class Concat(FusionModule):
    """Early fusion: one joint network over the concatenated inputs.

    mode='feature': the position-aligned features are concatenated and go through one
      nonlinear network, `z_i = W_2 GELU(W_1 [a_i; b_i] + c_1) + c_2` (hidden width
      `mlp_ratio * D`, dropout after the GELU and the output), so every output feature can
      depend jointly on both modalities (with one token per modality this is the classic
      feature-vector concatenation + MLP). A linear map of `[a_i; b_i]` alone would be
      `W_a a_i + W_b b_i + c`, additive fusion under another name. Needs M == K.
    mode='token': token concatenation `[a + e_a; b + e_b]` (learned modality-type embeddings
      e_a, e_b, as in ViLT, Kim et al. 2021) followed by `num_layers` joint self-attention
      layers, in which every token attends to every token of both modalities (the "vanilla"
      early-fusion transformer that MBT, Nagrani et al. 2021, compares against). One stream of
      M + K tokens.

    Config: `mode` ('feature' | 'token'); `mlp_ratio`, `dropout` (both modes); `num_layers`,
    `num_heads` (mode='token' only).
    """

    NAME = "concat"
    DEFAULTS = {"mode": "feature", **TRANSFORMER_DEFAULTS}

    def setup(self, config, *, rngs):
        self.mode = config.mode
        dim = self.dim
        if self.mode == "feature":
            require_equal_tokens("concat (mode='feature')", self.tokens)
            hidden = max(1, int(round(dim * config.mlp_ratio)))
            self.joint_in = nnx.Linear(2 * dim, hidden, rngs=rngs)
            self.joint_out = nnx.Linear(hidden, dim, rngs=rngs)
            self.dropout = nnx.Dropout(config.dropout, rngs=rngs)
        elif self.mode == "token":
            init = nnx.initializers.normal(0.02)
            self.type_embed = nnx.Param(init(rngs.params(), (2, dim)))
            self.layers = transformer_stack(config, dim, rngs=rngs)
        else:
            raise ValueError(f"concat: config.mode must be 'feature' or 'token', got {self.mode!r}")

    def __call__(self, a: jax.Array, b: jax.Array, *, deterministic: bool = True) -> FusionOutput:
        """`a [B, M, D]`, `b [B, K, D]` -> `[B, M, D]` (feature) or `[B, M + K, D]` (token)."""
        check_inputs("concat", a, b, self.dim, equal_tokens=self.mode == "feature")
        if self.mode == "feature":
            h = jax.nn.gelu(self.joint_in(jnp.concatenate([a, b], axis=-1)))
            h = self.dropout(h, deterministic=deterministic)
            return output(self.dropout(self.joint_out(h), deterministic=deterministic))
        z = jnp.concatenate([a + self.type_embed[0], b + self.type_embed[1]], axis=1)
        for layer in self.layers:
            z = layer(z, deterministic=deterministic)
        return output(z)
