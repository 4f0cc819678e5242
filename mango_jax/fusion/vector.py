"""Fusion of pooled modality vectors: additive, multiplicative, bilinear, tensor, low-rank tensor,
multiplicative-interaction and gated fusion.

Each method first pools a stream by its token mean, `z_a = mean_i a_i` (`[B, D]`), and returns
one fused vector as a single-token stream `[B, 1, D]`. The fusion literature orders them by the
cross-modal interactions they can express: additive (`w1 x_A + w2 x_B`), multiplicative
(`w3 (x_A x x_B)`), then bilinear, tensor and low-rank tensor fusion, and gating.

`hidden_dim` (bilinear, tensor, mi_matrix): their weights grow as D^3, so each pooled vector can
first be mapped to `hidden_dim` by a linear layer, like the small modality embedding
sub-networks TFN (Zadeh et al. 2017) applies before its outer product. None keeps D.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from mango_jax.fusion.base import FusionModule, FusionOutput, mean_pool, output, register


class _VectorFusion(FusionModule):
    """Pools both streams; subclasses define `fuse(z_a [B, D], z_b [B, D]) -> [B, D]`."""

    KEEPS_TOKENS = False

    def __call__(self, a: jax.Array, b: jax.Array, *, deterministic: bool = True) -> FusionOutput:
        """`a [B, M, D]`, `b [B, K, D]` -> one stream `[B, 1, D]`."""
        self.check(a, b)
        return output(self.fuse(mean_pool(a), mean_pool(b))[:, None, :])


def _embedders(
    config: ml_collections.ConfigDict, dim: int, rngs: nnx.Rngs
) -> tuple[nnx.Linear | None, nnx.Linear | None]:
    """The optional `D -> hidden_dim` embeddings of z_a and z_b."""
    if config.hidden_dim is None:
        return None, None
    if config.hidden_dim < 1:
        raise ValueError(f"hidden_dim must be a positive int or None, got {config.hidden_dim}")
    return (
        nnx.Linear(dim, config.hidden_dim, rngs=rngs),
        nnx.Linear(dim, config.hidden_dim, rngs=rngs),
    )


def _embed(layer: nnx.Linear | None, z: jax.Array) -> jax.Array:
    return z if layer is None else layer(z)


@register
class Additive(_VectorFusion):
    """Additive fusion (lecture 003): `z = W_a z_a + W_b z_b + c`; no cross-modal interaction
    term, so every output is a sum of a function of a and a function of b."""

    NAME = "additive"

    def setup(self, config, *, rngs):
        dim = self.dim
        self.proj_a = nnx.Linear(dim, dim, rngs=rngs)
        self.proj_b = nnx.Linear(dim, dim, use_bias=False, rngs=rngs)

    def fuse(self, za, zb):
        return self.proj_a(za) + self.proj_b(zb)


@register
class Multiplicative(_VectorFusion):
    """Multiplicative fusion (lecture 003): `z = W (z_a * z_b) + c`, the element-wise
    interaction term alone."""

    NAME = "multiplicative"

    def setup(self, config, *, rngs):
        dim = self.dim
        self.proj = nnx.Linear(dim, dim, rngs=rngs)

    def fuse(self, za, zb):
        return self.proj(za * zb)


@register
class Bilinear(_VectorFusion):
    """Bilinear fusion (lecture 003, `Z = w(x_A^T x_B)`): `z_o = z_a^T W_o z_b + c_o`, a linear
    map of the outer product `vec(z_a z_b^T)`, i.e. every pairwise product of features.

    Config: `hidden_dim` (None or int, see the module docstring).
    """

    NAME = "bilinear"
    DEFAULTS = {"hidden_dim": None}
    APPEND_ONE = False

    def setup(self, config, *, rngs):
        dim = self.dim
        self.embed_a, self.embed_b = _embedders(config, dim, rngs)
        width = (config.hidden_dim or dim) + int(self.APPEND_ONE)
        self.proj = nnx.Linear(width * width, dim, rngs=rngs)

    def outer(self, za: jax.Array, zb: jax.Array) -> jax.Array:
        """`[B, D], [B, D] -> [B, D_a' * D_b']`: the flattened outer product of the embedded
        (and, for TFN, 1-augmented) vectors."""
        za, zb = _embed(self.embed_a, za), _embed(self.embed_b, zb)
        if self.APPEND_ONE:
            one = jnp.ones((za.shape[0], 1), za.dtype)
            za, zb = jnp.concatenate([za, one], -1), jnp.concatenate([zb, one], -1)
        return (za[:, :, None] * zb[:, None, :]).reshape(za.shape[0], -1)

    def fuse(self, za, zb):
        return self.proj(self.outer(za, zb))


@register
class TensorFusion(Bilinear):
    """Tensor Fusion Network (Zadeh et al., EMNLP 2017), bimodal:
    `z = W vec([z_a; 1] (x) [z_b; 1]) + c`.

    Appending 1 keeps the unimodal terms z_a, z_b and a constant next to the bimodal products
    z_a z_b^T in one (D+1)^2 tensor, which the linear layer W projects back to D.

    Config: `hidden_dim` (None or int, see the module docstring).
    """

    NAME = "tensor"
    APPEND_ONE = True


@register
class LowRankTensorFusion(_VectorFusion):
    """Low-rank Multimodal Fusion (Liu et al., ACL 2018), modality-specific factors.

    TFN's weight tensor is decomposed as `W = sum_{i=1}^r w_a^(i) (x) w_b^(i)` (each factor
    `[(D+1), D]`), so `z = sum_{i=1}^r (w_a^(i)T [z_a; 1]) * (w_b^(i)T [z_b; 1]) + c` without ever
    forming the outer product. The official code's per-rank fusion weights are absorbed into the
    factors.

    Config: `rank` (r >= 1).
    """

    NAME = "lrtf"
    DEFAULTS = {"rank": 4}

    def setup(self, config, *, rngs):
        dim = self.dim
        if config.rank < 1:
            raise ValueError(f"lrtf: config.rank must be >= 1, got {config.rank}")
        init = nnx.initializers.xavier_normal(in_axis=1, out_axis=2, batch_axis=(0,))
        shape = (config.rank, dim + 1, dim)
        self.factor_a = nnx.Param(init(rngs.params(), shape))
        self.factor_b = nnx.Param(init(rngs.params(), shape))
        self.bias = nnx.Param(jnp.zeros((dim,)))

    def fuse(self, za, zb):
        one = jnp.ones((za.shape[0], 1), za.dtype)
        pa = jnp.einsum("bp,rpo->bro", jnp.concatenate([za, one], -1), self.factor_a[...])
        pb = jnp.einsum("bq,rqo->bro", jnp.concatenate([zb, one], -1), self.factor_b[...])
        return jnp.sum(pa * pb, axis=1) + self.bias[...]


@register
class MIMatrix(_VectorFusion):
    """Multiplicative interactions, matrix form (Jayakumar et al., ICLR 2020):
    `z = W(z_b) z_a + b(z_b)` with `W(z_b) = reshape(W' z_b + V)` and `b(z_b) = U z_b + c`,
    i.e. `z = z_b^T W' z_a + z_b^T U + V z_a + c`: modality b generates the weights of a
    linear layer applied to modality a (a hypernetwork), so z is affine in each modality.

    Config: `hidden_dim` (None or int, see the module docstring).
    """

    NAME = "mi_matrix"
    DEFAULTS = {"hidden_dim": None}

    def setup(self, config, *, rngs):
        dim = self.dim
        self.embed_a, self.embed_b = _embedders(config, dim, rngs)
        width = config.hidden_dim or dim
        self.weight_net = nnx.Linear(width, width * dim, rngs=rngs)
        self.bias_net = nnx.Linear(width, dim, rngs=rngs)

    def fuse(self, za, zb):
        za, zb = _embed(self.embed_a, za), _embed(self.embed_b, zb)
        weight = self.weight_net(zb).reshape(zb.shape[0], za.shape[-1], self.dim)
        return jnp.einsum("bi,bio->bo", za, weight) + self.bias_net(zb)


@register
class GMU(_VectorFusion):
    """Gated Multimodal Unit (Arevalo et al., ICLR workshop 2017):
    `h_a = tanh(W_a z_a)`, `h_b = tanh(W_b z_b)`, `g = sigmoid(W_g [z_a; z_b])`,
    `h = g * h_a + (1 - g) * h_b`: a per-feature convex combination of the two modalities whose
    weight depends on both. Bias-free, as in the paper's equations.
    """

    NAME = "gmu"

    def setup(self, config, *, rngs):
        dim = self.dim
        self.proj_a = nnx.Linear(dim, dim, use_bias=False, rngs=rngs)
        self.proj_b = nnx.Linear(dim, dim, use_bias=False, rngs=rngs)
        self.gate_proj = nnx.Linear(2 * dim, dim, use_bias=False, rngs=rngs)

    def gate(self, za: jax.Array, zb: jax.Array) -> jax.Array:
        """`[B, D], [B, D] -> [B, D]` in (0, 1): the weight of modality a per feature."""
        return jax.nn.sigmoid(self.gate_proj(jnp.concatenate([za, zb], axis=-1)))

    def fuse(self, za, zb):
        g = self.gate(za, zb)
        return g * jnp.tanh(self.proj_a(za)) + (1.0 - g) * jnp.tanh(self.proj_b(zb))
