"""Multi-head attention, the MLP and the pre-LayerNorm transformer layer.

One home for them, shared by the encoders and the attention-based fusion methods, so that the
baselines differ only in how their streams meet, not in how a layer is built.
"""

from __future__ import annotations

import jax
from flax import nnx

# MLP activations by the names checkpoints' config.json use. The baselines keep tanh-GELU (the
# committed tables were trained with it); pretrained encoders take what their checkpoint names:
# MAE exact GELU, CLIP quick-GELU x·σ(1.702x).
ACTIVATIONS = {
    "gelu_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "quick_gelu": lambda x: x * jax.nn.sigmoid(1.702 * x),
}


def activation(name: str):
    """The activation function `name` (a key of ACTIVATIONS), or an error listing them."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose from {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def check_heads(dim: int, num_heads: int) -> None:
    """Fails early, with the fix, when the width cannot be split into heads."""
    if num_heads < 1 or dim % num_heads:
        raise ValueError(
            f"num_heads={num_heads} must be a positive divisor of the token width dim={dim}; "
            "set config.num_heads to one of "
            f"{[h for h in range(1, dim + 1) if dim % h == 0]}."
        )


class MultiHeadAttention(nnx.Module):
    """Multi-head scaled dot-product attention, `softmax(Q K^T / sqrt(d)) V` (Vaswani et al. 2017).

    Keys and values may come from different inputs (GeminiFusion feeds them separately).
    Leading axes are batch axes, so a per-position attention is a call with `[B*N, 1, D]` queries.
    """

    def __init__(self, dim: int, num_heads: int, *, dropout: float, rngs: nnx.Rngs):
        check_heads(dim, num_heads)
        self.num_heads = num_heads
        self.query = nnx.Linear(dim, dim, rngs=rngs)
        self.key = nnx.Linear(dim, dim, rngs=rngs)
        self.value = nnx.Linear(dim, dim, rngs=rngs)
        self.out = nnx.Linear(dim, dim, rngs=rngs)
        self.dropout = nnx.Dropout(dropout, rngs=rngs)

    def __call__(
        self,
        query: jax.Array,
        key: jax.Array | None = None,
        value: jax.Array | None = None,
        *,
        key_mask: jax.Array | None = None,
        causal: bool = False,
        deterministic: bool = True,
    ) -> jax.Array:
        """`query [..., T, D]`, `key [..., S, D]` (default: query), `value [..., S, D]` (default:
        key) -> `[..., T, D]`; `key_mask [..., S]` (bool) hides padded keys; `causal` lets
        query i see keys j <= i only."""
        key = query if key is None else key
        value = key if value is None else value
        batch = query.shape[:-2]

        def heads(x: jax.Array) -> jax.Array:
            x = x.reshape(-1, *x.shape[-2:])
            return x.reshape(*x.shape[:-1], self.num_heads, -1)

        mask = None
        if key_mask is not None:
            mask = key_mask.reshape(-1, 1, 1, key_mask.shape[-1])
        y = jax.nn.dot_product_attention(
            heads(self.query(query)), heads(self.key(key)), heads(self.value(value)), mask=mask,
            is_causal=causal)
        y = y.reshape(*batch, query.shape[-2], -1)
        return self.dropout(self.out(y), deterministic=deterministic)


class Mlp(nnx.Module):
    """Position-wise feed-forward network `D -> mlp_ratio*D -> D`, tanh-GELU unless told."""

    def __init__(self, dim: int, mlp_ratio: float, *, dropout: float, rngs: nnx.Rngs,
                 act: str = "gelu_tanh"):
        activation(act)  # fails early on an unknown name
        self.act = act
        hidden = max(1, int(round(dim * mlp_ratio)))
        self.fc1 = nnx.Linear(dim, hidden, rngs=rngs)
        self.fc2 = nnx.Linear(hidden, dim, rngs=rngs)
        self.dropout = nnx.Dropout(dropout, rngs=rngs)

    def __call__(self, x: jax.Array, *, deterministic: bool = True) -> jax.Array:
        h = self.dropout(ACTIVATIONS[self.act](self.fc1(x)), deterministic=deterministic)
        return self.dropout(self.fc2(h), deterministic=deterministic)


class TransformerBlock(nnx.Module):
    """Pre-LayerNorm transformer layer: `x + Attn(LN(x), LN_c(context))`, then `x + MLP(LN(x))`.

    The two residual branches are exposed (`attend`, `feed_forward`) because TokenFusion scales
    the attention branch by its token scores and GeminiFusion inserts its fusion between them.
    With `cross=True` the block owns a second LayerNorm for the context it attends to (MulT's
    crossmodal layer normalises both the target and the source stream). `act` and `eps` (the
    LayerNorms') default to the baselines' tanh-GELU and 1e-6; pretrained encoders pass their
    checkpoint's.
    """

    def __init__(
        self,
        dim: int,
        *,
        num_heads: int,
        mlp_ratio: float,
        dropout: float,
        rngs: nnx.Rngs,
        cross: bool = False,
        act: str = "gelu_tanh",
        eps: float = 1e-6,
    ):
        self.norm1 = nnx.LayerNorm(dim, epsilon=eps, rngs=rngs)
        self.norm_context = nnx.LayerNorm(dim, epsilon=eps, rngs=rngs) if cross else None
        self.attention = MultiHeadAttention(dim, num_heads, dropout=dropout, rngs=rngs)
        self.norm2 = nnx.LayerNorm(dim, epsilon=eps, rngs=rngs)
        self.mlp = Mlp(dim, mlp_ratio, dropout=dropout, rngs=rngs, act=act)

    def attend(
        self,
        x: jax.Array,
        context: jax.Array | None = None,
        *,
        key_mask: jax.Array | None = None,
        causal: bool = False,
        deterministic: bool = True,
    ) -> jax.Array:
        """Attention branch `[B, N, D] -> [B, N, D]`, attending to `context [B, S, D]` if given;
        `key_mask [B, N]` (self-attention only) hides padded tokens, `causal` later ones."""
        h = self.norm1(x)
        if context is None:
            return self.attention(h, key_mask=key_mask, causal=causal,
                                  deterministic=deterministic)
        if self.norm_context is None:
            raise ValueError("this TransformerBlock was built with cross=False; it has no context")
        return self.attention(h, self.norm_context(context), deterministic=deterministic)

    def feed_forward(self, x: jax.Array, *, deterministic: bool = True) -> jax.Array:
        """MLP branch: `[B, N, D] -> [B, N, D]`."""
        return self.mlp(self.norm2(x), deterministic=deterministic)

    def __call__(self, x: jax.Array, context: jax.Array | None = None, *,
                 deterministic: bool = True, **masks) -> jax.Array:
        """Both residual branches; `masks`: `attend`'s `key_mask` and `causal`."""
        x = x + self.attend(x, context, deterministic=deterministic, **masks)
        return x + self.feed_forward(x, deterministic=deterministic)
