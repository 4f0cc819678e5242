"""RealNVP baseline of the Table 4 ablation (Dinh, Sohl-Dickstein & Bengio 2017).

Affine coupling (eqs. 6-9, `mango_jax.flows.coupling.affine_forward`) with fixed partitions that
alternate from block to block, as RealNVP alternates checkerboard and channel-wise masks
(section 3.4). Tokens `[B, N, D]` take the place of pixels:

- token partitions: the halves (the first N/2 tokens condition the last N/2, then the reverse;
  with M = K these are modality A and B, token i of A paired with token i of B) and the
  checkerboard (even tokens condition the odd ones, then the reverse);
- channel partitions: the first ⌈D/2⌉ channels condition the rest, then the reverse.

A token coupling pairs the i-th conditioning token with the i-th moved token, so N must be even.
The conditioner is RealNVP's and Glow's convolutional network in 1-D over the token axis
(`ConvConditioner`): a token coupling also sees the neighbours along the (raster-ordered) token
sequence, the only cross-token interaction RealNVP has.

Block b is one coupling: even blocks a token coupling (halves A→B, channels, halves B→A,
channels, checkerboard even→odd, ..., odd→even, cycling every 8 blocks), odd blocks a channel
coupling of alternating parity. One coupling per block, as MANGO's block has one coupling: with
two, the perturbed G at the paper's size (24 couplings) no longer reconstructs to 1e-5 in float32
(measured 1.1e-5). 9.0M parameters at the paper's size (MANGO 30.8M).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mango_jax.flows.base import Sequential
from mango_jax.flows.coupling import Coupling

# `flow.realnvp` (mango_jax.flows.default_config).
DEFAULTS = {
    # Width of the first and last convolution of the conditioner along the token axis.
    "kernel_size": 3,
}

TOKEN_PARTITIONS = ("halves", "halves_reversed", "checkerboard", "checkerboard_reversed")
TOKENS, CHANNELS = 1, 2


def token_partition(kind: str, num_tokens: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """`(conditioning, moved)` token indices of equal length for a token partition `kind`."""
    if num_tokens % 2:
        raise ValueError(f"token couplings pair conditioning and moved tokens, so N = M + K must "
                         f"be even; got N={num_tokens}")
    idx = np.arange(num_tokens)
    if kind.startswith("halves"):
        first, second = idx[: num_tokens // 2], idx[num_tokens // 2:]
    elif kind.startswith("checkerboard"):
        first, second = idx[0::2], idx[1::2]
    else:
        raise ValueError(f"unknown token partition {kind!r}; expected one of {TOKEN_PARTITIONS}")
    if kind.endswith("_reversed"):
        first, second = second, first
    return tuple(int(i) for i in first), tuple(int(i) for i in second)


def channel_partition(dim: int, parity: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """`(conditioning, moved)` channels: parity 0 conditions on the first ⌈D/2⌉ (as
    `AffineCoupling`), parity 1 on the rest."""
    if dim < 2:
        raise ValueError(f"a channel coupling needs at least 2 channels, got dim={dim}")
    idx = np.arange(dim)
    first, second = idx[: (dim + 1) // 2], idx[(dim + 1) // 2:]
    if parity % 2:
        first, second = second, first
    return tuple(int(i) for i in first), tuple(int(i) for i in second)


def split(x: jax.Array, axis: int, cond, moved) -> tuple[jax.Array, jax.Array]:
    """The conditioning and moved parts of `x: [B, N, D]` along `axis`."""
    return jnp.take(x, np.asarray(cond), axis=axis), jnp.take(x, np.asarray(moved), axis=axis)


def merge(x: jax.Array, axis: int, moved, values: jax.Array) -> jax.Array:
    """`x` with its `moved` entries along `axis` replaced by `values` (the rest pass through)."""
    index = [slice(None)] * x.ndim
    index[axis] = np.asarray(moved)
    return x.at[tuple(index)].set(values.astype(x.dtype))


class ConvConditioner(nnx.Module):
    """Glow's coupling network NN() (section 3.3), in 1-D over the token axis.

    `[B, n, d_in] -> ([B, n, d_out], [B, n, d_out])`: conv(k) → norm → ReLU → 1×1 → norm → ReLU
    → zero-initialised 1×1, so a freshly built coupling is the identity. Glow normalises the
    hidden layers with ActNorm and RealNVP with batch normalisation; LayerNorm over the hidden
    channels does the same without depending on the batch, and keeps the scale and shift
    independent of the input's magnitude (without it the perturbed G at the paper's size
    reconstructed only to 0.6). Glow's last layer is a 3-wide convolution; a 1×1 keeps its
    fan-in (so the output's size under a given weight noise) equal to MANGO's coupling.
    """

    def __init__(self, d_in: int, d_out: int, hidden: int, kernel_size: int, *,
                 rngs: nnx.Rngs, param_dtype=jnp.float32):
        self.first = nnx.Conv(d_in, hidden, kernel_size, rngs=rngs, param_dtype=param_dtype)
        self.first_norm = nnx.LayerNorm(hidden, rngs=rngs, param_dtype=param_dtype)
        self.mid = nnx.Linear(hidden, hidden, rngs=rngs, param_dtype=param_dtype)
        self.mid_norm = nnx.LayerNorm(hidden, rngs=rngs, param_dtype=param_dtype)
        self.out = nnx.Linear(hidden, 2 * d_out, rngs=rngs, param_dtype=param_dtype,
                              kernel_init=nnx.initializers.zeros_init())

    def __call__(self, x):
        h = jax.nn.relu(self.first_norm(self.first(x)))
        h = jax.nn.relu(self.mid_norm(self.mid(h)))
        raw_log_scale, shift = jnp.split(self.out(h), 2, axis=-1)
        return raw_log_scale, shift


def sigmoid_log_scale(raw: jax.Array) -> jax.Array:
    """`log(σ(raw + 2) / σ(2))`: Glow's coupling scale σ(raw + 2) (its released code), divided
    by σ(2) so that a zero conditioner is the identity.

    It never exceeds log(1/σ(2)) ≈ 0.13, so couplings with random or perturbed conditioners mostly
    contract and the shifts keep the activations at a bounded size. With a symmetric log-scale
    `c·tanh(raw/c)` the moved entries grow as e^{Σ s}: through the couplings of a perturbed G at
    the paper's size their norm grew by 10⁴-10⁷ and float32 could no longer invert it.
    """
    return jax.nn.log_sigmoid(raw + 2.0) - jax.nn.log_sigmoid(2.0)


class PartitionedCoupling(Coupling):
    """Affine coupling of `[B, N, D]` over a fixed partition of the tokens or of the channels.

    `cond` entries pass through and condition `y_moved = x_moved · exp(s) + t`, with
    `s = c·tanh(sigmoid_log_scale(raw)/c) ∈ (−c, 0.13]`, so the Jacobian is triangular with
    diagonal `exp(s)`; log-det `Σ s`. For a token partition the i-th conditioning token gives the
    scale and shift of the i-th moved token.
    """

    def __init__(self, dim: int, cond, moved, *, axis: int, hidden: int, kernel_size: int,
                 max_log_scale: float, rngs: nnx.Rngs, param_dtype=jnp.float32):
        if axis not in (TOKENS, CHANNELS):
            raise ValueError(f"axis must be {TOKENS} (tokens) or {CHANNELS} (channels), got {axis}")
        if axis == TOKENS and len(cond) != len(moved):
            raise ValueError(f"a token coupling pairs tokens: got {len(cond)} conditioning and "
                             f"{len(moved)} moved tokens")
        self.axis = axis
        self.cond = tuple(int(i) for i in cond)
        self.moved = tuple(int(i) for i in moved)
        self.max_log_scale = max_log_scale
        d_in, d_out = (dim, dim) if axis == TOKENS else (len(cond), len(moved))
        self.conditioner = ConvConditioner(d_in, d_out, hidden, kernel_size, rngs=rngs,
                                           param_dtype=param_dtype)

    def partition(self, x):
        return split(x, self.axis, self.cond, self.moved)

    def merge(self, x, cond, moved):
        return merge(x, self.axis, self.moved, moved)

    def condition(self, cond):
        raw, shift = self.conditioner(cond)
        return sigmoid_log_scale(raw), shift


def channel_coupling(config, parity: int, kernel_size: int, *, rngs: nnx.Rngs,
                     param_dtype) -> PartitionedCoupling:
    """A channel coupling with a convolutional conditioner (also Glow's and AttnFlow's)."""
    cond, moved = channel_partition(config.dim, parity)
    return PartitionedCoupling(config.dim, cond, moved, axis=CHANNELS,
                               hidden=config.coupling_hidden, kernel_size=kernel_size,
                               max_log_scale=config.max_log_scale, rngs=rngs,
                               param_dtype=param_dtype)


def make_block(config, block: int, tokens: tuple[int, int], *, rngs: nnx.Rngs,
               param_dtype) -> Sequential:
    """Block `block`: a token coupling over partition `(block / 2) mod 4` for even blocks, a
    channel coupling with parity `((block − 1) / 2) mod 2` for odd ones."""
    kernel = config.realnvp.kernel_size
    if block % 2:
        return Sequential([channel_coupling(config, block // 2, kernel, rngs=rngs,
                                            param_dtype=param_dtype)])
    cond, moved = token_partition(TOKEN_PARTITIONS[(block // 2) % 4], sum(tokens))
    return Sequential([PartitionedCoupling(
        config.dim, cond, moved, axis=TOKENS, hidden=config.coupling_hidden, kernel_size=kernel,
        max_log_scale=config.max_log_scale, rngs=rngs, param_dtype=param_dtype)])
