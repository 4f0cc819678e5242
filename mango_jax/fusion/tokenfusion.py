"""TokenFusion (Wang et al., "Multimodal Token Fusion for Vision Transformers", CVPR 2022)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from mango_jax.fusion.base import FusionOutput, output, register, select
from mango_jax.fusion.transformer import SHARED_DEFAULTS, TRANSFORMER_DEFAULTS, TransformerFusion


class ScoreNet(nnx.Module):
    """Token score `s(e) in (0, 1)`, `[B, N, D] -> [B, N]`: the official predictor's MLP
    (LN, D -> D -> D/2 -> D/4 with GELU) ending in one logit and a sigmoid (the official
    two-way softmax is the same function of the logit difference)."""

    def __init__(self, dim: int, *, rngs: nnx.Rngs):
        widths = [dim, dim, max(1, dim // 2), max(1, dim // 4)]
        self.norm = nnx.LayerNorm(dim, rngs=rngs)
        self.hidden = nnx.List(
            [nnx.Linear(i, o, rngs=rngs) for i, o in zip(widths[:-1], widths[1:])]
        )
        self.logit = nnx.Linear(widths[-1], 1, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        h = self.norm(x)
        for layer in self.hidden:
            h = jax.nn.gelu(layer(h))
        return jax.nn.sigmoid(self.logit(h)[..., 0])


@register
class TokenFusion(TransformerFusion):
    """Dynamic substitution of uninformative tokens by projected tokens of the other modality.

    Per layer l and modality m (m' the other one), with scores from the layer input:
      `s_m = s^l_m(e_m)` (ScoreNet),
      `h_m = e_m + s_m * MSA(LN(e_m))`, `h_m = h_m + MLP(LN(h_m))` (the score multiplies the
        attention output, as in the official code, so that it is learned from the task loss),
      `e_m <- h_m * 1[s_m >= theta] + Proj^l_{m'->m}(h_{m'}) * 1[s_m < theta]` (the paper's
        token substitution; aligned modalities pair token i with token i, hence M == K).
    The sparsity loss `lambda * sum_l sum_m ||s^l_m||_1` (paper: L1 on the scores, lambda = 1e-4,
    theta = 2e-2) pushes scores of uninformative tokens below theta. It is summed over tokens,
    layers and modalities as in the official code, per example (the step averages it over the
    batch's real examples, so that lambda does not depend on the batch size).
    The transformer layers are separate per modality (the paper's heterogeneous setting) or
    shared but for their LayerNorms (`shared_weights`, the default for homogeneous modalities
    such as RGB-depth, as the paper does there); score nets and projections stay per modality.

    Config: `num_layers`, `num_heads`, `mlp_ratio`, `dropout`, `shared_weights`, `threshold`
    (theta), `sparsity_weight` (lambda).
    Streams: `(e_a [B, N, D], e_b [B, N, D])`; aux loss `tokenfusion_sparsity`; metric
    `tokenfusion_substituted`, the fraction of tokens replaced (over layers and modalities); both
    per example.
    """

    NAME = "tokenfusion"
    ALIGNED = True
    DEFAULTS = {**TRANSFORMER_DEFAULTS, **SHARED_DEFAULTS, "threshold": 0.02,
                "sparsity_weight": 1e-4}
    HOMOGENEOUS_DEFAULTS = {"shared_weights": True}

    def setup(self, config, *, rngs):
        if not 0.0 <= config.threshold <= 1.0:
            raise ValueError(f"tokenfusion: threshold must lie in [0, 1], got {config.threshold}")
        dim = self.dim
        self.threshold = float(config.threshold)
        self.sparsity_weight = float(config.sparsity_weight)
        self.blocks_a, self.blocks_b = self.stacks(config, rngs=rngs)
        n = config.num_layers
        self.scores_a = nnx.List([ScoreNet(dim, rngs=rngs) for _ in range(n)])
        self.scores_b = nnx.List([ScoreNet(dim, rngs=rngs) for _ in range(n)])
        self.proj_b_to_a = nnx.List([nnx.Linear(dim, dim, rngs=rngs) for _ in range(n)])
        self.proj_a_to_b = nnx.List([nnx.Linear(dim, dim, rngs=rngs) for _ in range(n)])

    def layer(
        self, index: int, a: jax.Array, b: jax.Array, *, deterministic: bool = True
    ) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
        """Layer `index`: `a, b [B, N, D]` -> `(a', b' [B, N, D], s_a, s_b [B, N])`."""
        s_a, s_b = self.scores_a[index](a), self.scores_b[index](b)
        ha = self._block(self.blocks_a[index], a, s_a, deterministic)
        hb = self._block(self.blocks_b[index], b, s_b, deterministic)
        a_next = select(self._keep(s_a), ha, self.proj_b_to_a[index](hb))
        b_next = select(self._keep(s_b), hb, self.proj_a_to_b[index](ha))
        return a_next, b_next, s_a, s_b

    def _keep(self, score: jax.Array) -> jax.Array:
        """`[B, N] -> [B, N, 2]`: one-hot (keep the token, substitute it)."""
        keep = score >= self.threshold
        return jnp.stack([keep, ~keep], axis=-1)

    @staticmethod
    def _block(block, x: jax.Array, score: jax.Array, deterministic: bool) -> jax.Array:
        x = x + score[..., None] * block.attend(x, deterministic=deterministic)
        return x + block.feed_forward(x, deterministic=deterministic)

    def __call__(self, a: jax.Array, b: jax.Array, *, deterministic: bool = True) -> FusionOutput:
        """`a [B, N, D]`, `b [B, N, D]` -> streams `([B, N, D], [B, N, D])` and the weighted
        score sparsity loss."""
        self.check(a, b)
        l1 = substituted = jnp.zeros(a.shape[:1], jnp.float32)
        for index in range(len(self.blocks_a)):
            a, b, s_a, s_b = self.layer(index, a, b, deterministic=deterministic)
            l1 = l1 + jnp.sum(s_a, axis=1) + jnp.sum(s_b, axis=1)
            substituted = substituted + jnp.mean(s_a < self.threshold, axis=1)
            substituted = substituted + jnp.mean(s_b < self.threshold, axis=1)
        return output(
            a,
            b,
            aux_losses={"tokenfusion_sparsity": self.sparsity_weight * l1},
            metrics={"tokenfusion_substituted": substituted / max(1, 2 * len(self.blocks_a))},
        )
