"""GeminiFusion (Jia et al., "GeminiFusion: Efficient Pixel-wise Multimodal Fusion for Vision
Transformer", ICML 2024)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from mango_jax.fusion.base import FusionOutput, output, register
from mango_jax.fusion.transformer import SHARED_DEFAULTS, TRANSFORMER_DEFAULTS, TransformerFusion
from mango_jax.nn import MultiHeadAttention


class RelationDiscriminator(nnx.Module):
    """`phi(x_i, y_i) = Softmax(MLP([x_i; y_i]))`, `[B, N, D] x2 -> [B, N, D]`: a per-token,
    per-channel weight (softmax over channels, as in the official code) judging how the
    counterpart token y_i relates to x_i. Shared by both directions, as in the official code."""

    def __init__(self, dim: int, *, rngs: nnx.Rngs):
        self.fc1 = nnx.Linear(2 * dim, dim, rngs=rngs)
        self.fc2 = nnx.Linear(dim, dim, rngs=rngs)

    def __call__(self, x: jax.Array, y: jax.Array) -> jax.Array:
        h = jax.nn.gelu(self.fc1(jnp.concatenate([x, y], axis=-1)))
        return jax.nn.softmax(self.fc2(h), axis=-1)


class PixelFusion(nnx.Module):
    """One direction of the GeminiFusion module: token x_i attends to two keys only, itself and
    its counterpart y_i in the other modality (attention cost O(N D^2) instead of O(N^2 D)):
      `K_i = [x_i + n_K^l, phi(x_i, y_i) * x_i]`, `V_i = [x_i + n_V^l, y_i]`,
      `out_i = x_i + Attention(x_i W_Q, K_i W_K, V_i W_V)`.
    `n_K^l`, `n_V^l` are the layer-adaptive noise: per-layer, per-modality vectors added to the
    self key (and value), learned from an N(0, 1) start as in the official code, which keep the
    self key from always winning the two-way softmax; they are the same in training and
    evaluation. The relation score phi gates the cross key, as in the official implementation.
    """

    def __init__(self, dim: int, num_heads: int, *, dropout: float, rngs: nnx.Rngs):
        self.attention = MultiHeadAttention(dim, num_heads, dropout=dropout, rngs=rngs)
        init = nnx.initializers.normal(1.0)
        self.key_noise = nnx.Param(init(rngs.params(), (dim,)))
        self.value_noise = nnx.Param(init(rngs.params(), (dim,)))

    def __call__(
        self,
        x: jax.Array,
        y: jax.Array,
        relation: jax.Array,
        *,
        deterministic: bool = True,
    ) -> jax.Array:
        """`x, y, relation [B, N, D] -> [B, N, D]`; each position is its own attention problem
        of one query and two keys."""
        keys = jnp.stack([x + self.key_noise[...], relation * x], axis=-2)
        values = jnp.stack([x + self.value_noise[...], y], axis=-2)
        fused = self.attention(x[..., None, :], keys, values, deterministic=deterministic)
        return x + fused[..., 0, :]


@register
class GeminiFusion(TransformerFusion):
    """Dual-branch transformer with GeminiFusion between attention and MLP in every layer.

    Layer l, modality m (m' the other), following the official code's block:
      `s_m = MSA_m(LN(e_m))` (intra-modal self-attention),
      `f_m = PixelFusion^l_m(s_m, s_{m'}, phi(s_m, s_{m'}))` (the only cross-modal path),
      `e_m <- e_m + f_m`, `e_m <- e_m + MLP_m(LN(e_m))`.
    Token i of one modality meets only token i of the other, hence M == K. The transformer layers
    are separate per modality, or shared but for their LayerNorms (`shared_weights`, the
    default for homogeneous modalities such as RGB-depth, as in the official code); the fusion
    modules stay per modality.

    Config: `num_layers`, `num_heads`, `mlp_ratio`, `dropout`, `shared_weights`.
    Streams: `(e_a [B, N, D], e_b [B, N, D])`.
    """

    NAME = "geminifusion"
    ALIGNED = True
    DEFAULTS = {**TRANSFORMER_DEFAULTS, **SHARED_DEFAULTS}
    HOMOGENEOUS_DEFAULTS = {"shared_weights": True}

    def setup(self, config, *, rngs):
        dim, n = self.dim, config.num_layers
        self.blocks_a, self.blocks_b = self.stacks(config, rngs=rngs)

        def pixel_fusion() -> PixelFusion:
            return PixelFusion(dim, config.num_heads, dropout=config.dropout, rngs=rngs)

        self.relations = nnx.List([RelationDiscriminator(dim, rngs=rngs) for _ in range(n)])
        self.fuse_a = nnx.List([pixel_fusion() for _ in range(n)])
        self.fuse_b = nnx.List([pixel_fusion() for _ in range(n)])

    def fuse(
        self, index: int, s_a: jax.Array, s_b: jax.Array, *, deterministic: bool = True
    ) -> tuple[jax.Array, jax.Array]:
        """The GeminiFusion module of layer `index`: `s_a, s_b [B, N, D]` -> `(f_a, f_b)`."""
        relation = self.relations[index]
        f_a = self.fuse_a[index](s_a, s_b, relation(s_a, s_b), deterministic=deterministic)
        f_b = self.fuse_b[index](s_b, s_a, relation(s_b, s_a), deterministic=deterministic)
        return f_a, f_b

    def __call__(self, a: jax.Array, b: jax.Array, *, deterministic: bool = True) -> FusionOutput:
        """`a [B, N, D]`, `b [B, N, D]` -> streams `([B, N, D], [B, N, D])`."""
        self.check(a, b)
        for index, (block_a, block_b) in enumerate(zip(self.blocks_a, self.blocks_b)):
            s_a = block_a.attend(a, deterministic=deterministic)
            s_b = block_b.attend(b, deterministic=deterministic)
            f_a, f_b = self.fuse(index, s_a, s_b, deterministic=deterministic)
            a = a + f_a
            b = b + f_b
            a = a + block_a.feed_forward(a, deterministic=deterministic)
            b = b + block_b.feed_forward(b, deterministic=deterministic)
        return output(a, b)
