"""AttnFlow baseline of the Table 4 ablation (Sukthanker, Huang, Kumar, Timofte & Van Gool,
"Generative Flows with Invertible Attentions", CVPR 2022).

AttnFlow inserts two invertible attentions into a Glow-type flow: the map-based iMap and the
scaled dot-product iTrans, both made invertible by a checkerboard mask. As MANGO's block is its
attention layers followed by one coupling, a block here is ActNorm, one `IMap`, one `ITrans`
(masks alternating with the block index) and one affine channel coupling of Glow's kind
(`realnvp.PartitionedCoupling`, halves alternating with the block). Glow's invertible 1×1
convolution is left out: the checkerboard masks and the alternating halves already mix the
channels, and its dense 256-wide product and inverse cost about 4e-7 of float32 rounding per
block, which took the perturbed G at the paper's size from about 6e-6 to 1.5e-5 reconstruction
error (`python -m experiments.flow_table`).

The paper masks a `[C, H, W]` feature map with a 3-D checkerboard and leaves several details open
(how the pooled map is bounded, how iTrans's attention stays invertible, which determinant is
taken). On tokens `x: [B, N, D]` with H heads of `d = D/H` channels we implement, with `j` the
channel index inside its head and the block's parity `p`:

    M[n, j] = 1 if (n + j + p) is even      (conditioning entries; the others are "moved")

The moved entries of token n are the channels j with `(n + j + p)` odd, i.e. every other channel,
and which half alternates from token to token as on the paper's checkerboard.

**iMap** (paper Sec. 3.1: masked input → 1×1 convolution → average pooling → sigmoid map):

    ℓ[n, h] = b(log σ(pool_h(W (M ⊙ x)[n] + β) + 2) − log σ(2))     one per token and head
    y = x ⊙ exp(M ⊙ s̃ + (1 − M) ⊙ ℓ),   s̃_j = b(log σ(s_j + 2) − log σ(2)),
    b(u) = c·tanh(u / c)

A 1×1 convolution followed by averaging over a head's channels is one linear map `D → H`, which
is how it is parameterised. The paper's gates are sigmoids; shifted by 2 and divided by σ(2)
(`realnvp.sigmoid_log_scale`, as Glow's coupling scale) they start at 1 and lie in
`[e^{−c}, 1/σ(2)]`, so a stack of iMaps cannot blow the activations up.
*Why it inverts:* y's conditioning entries are `x ⊙ e^{s̃}` and depend on nothing else; the gates
ℓ depend on the conditioning entries only. Ordering the entries (conditioning, moved), the
Jacobian is block lower-triangular with diagonal blocks `diag(e^{s̃})` and `diag(e^{ℓ})`, so
`log|det| = Σ_M s̃ + Σ_{1−M} ℓ` exactly. Inverse: `x_M = y_M e^{−s̃}`, recompute ℓ from it,
`x_{1−M} = y_{1−M} e^{−ℓ}`.

**iTrans** (paper Sec. 3.2: queries and keys from the masked input, values the unmasked part; the
learnable offset on the attention's diagonal of the authors' release). Let T_t be the tokens of
parity t; their moved channels are `J_t = {j : j ≡ t + p + 1 (mod 2)}`. Per head h and t:

    Q, K = LN(Linear(M ⊙ x))[T_t, h],   S = softmax(Q Kᵀ e^{τ_h})      (|T_t| × |T_t|, dense)
    Ã = a_h I + (1 − a_h) S,   a_h = a_min + (1 − a_min) σ(θ_h),   A = diag(‖Ã_i‖₂)⁻¹ Ã
    y[T_t, h, j] = A x[T_t, h, j]  for j ∈ J_t;     conditioning entries pass through.

*Why it inverts:* Ã is strictly row-diagonally dominant (`Ã_ii − Σ_{k≠i} |Ã_ik| ≥ 2a − 1 > 0`
for a > 1/2), so `‖Ã⁻¹‖_∞ ≤ 1/(2a − 1)`, and as in MANGO's ICA (`mango_jax.flows.ica`)
`κ_∞(A) ≤ 1 / (a_min (2 a_min − 1))` for every parameter value. Its Gershgorin discs lie in the
right half-plane, so `det A > 0`. A depends on the conditioning entries only, which pass through:
ordering the entries (conditioning, moved) the Jacobian is block lower-triangular with the
identity and a block-diagonal of copies of the A's, hence

    log|det| = Σ_t |J_t| Σ_h log det A_{h,t},

taken from the LU factors of A (dense, `O(N³/8)` per head: tractable, and exact). The inverse
recomputes A from the conditioning entries and solves `A x = y` with the same LU. The paper's
optional causal mask on S is not used: it would make A triangular, i.e. MANGO's ICA on a
checkerboard partition, and the dense attention is what distinguishes AttnFlow. The floor a_min
comes from MANGO's `ica_mixing_budget` over the `num_blocks` iTrans layers
(`min_identity_for_depth`), so both flows get the same conditioning budget.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mango_jax.flows.actnorm import ActNorm
from mango_jax.flows.base import HIGHEST, InvertibleLayer, Sequential, logdet_dtype
from mango_jax.flows.coupling import bounded_log_scale
from mango_jax.flows.ica import (
    BoundedAttention,
    min_identity_for_depth,
    mix_identity,
    normalize_rows,
)
from mango_jax.flows.realnvp import channel_coupling, sigmoid_log_scale

# `flow.attnflow` (mango_jax.flows.default_config).
DEFAULTS = {
    # Width of the first and last convolution of the coupling conditioner along the tokens.
    "kernel_size": 3,
}

def checkerboard(num_tokens: int, num_heads: int, head_dim: int, parity: int) -> np.ndarray:
    """`M: [N, D]` bool, True on the conditioning entries: `(n + j + parity)` even, `j` the
    channel's index inside its head."""
    n = np.arange(num_tokens)[:, None]
    j = np.tile(np.arange(head_dim), num_heads)[None, :]
    return (n + j + parity) % 2 == 0


def _check_heads(dim: int, num_heads: int) -> int:
    if dim % num_heads:
        raise ValueError(f"dim={dim} must be divisible by num_heads={num_heads}")
    return dim // num_heads


class IMap(InvertibleLayer):
    """AttnFlow's map-based invertible attention on `[B, N, D]` (equations in the module doc)."""

    def __init__(self, dim: int, num_heads: int, *, parity: int, max_log_scale: float,
                 rngs: nnx.Rngs, param_dtype=jnp.float32):
        self.num_heads = num_heads
        self.head_dim = _check_heads(dim, num_heads)
        self.parity = parity % 2
        self.max_log_scale = max_log_scale
        self.pool = nnx.Linear(dim, num_heads, rngs=rngs, param_dtype=param_dtype,
                               kernel_init=nnx.initializers.zeros_init())
        self.log_scale = nnx.Param(jnp.zeros((dim,), param_dtype))

    def _mask(self, x):
        return checkerboard(x.shape[1], self.num_heads, self.head_dim, self.parity)

    def _fixed(self):
        """`s̃: [D]`, the input-independent log-scale of the conditioning entries."""
        return bounded_log_scale(sigmoid_log_scale(self.log_scale[...]), self.max_log_scale)

    def _log_gate(self, x_cond, mask):
        """Per-entry log-scale `[B, N, D]` from the conditioning entries `x_cond = M ⊙ x`."""
        gate = bounded_log_scale(sigmoid_log_scale(self.pool(x_cond)), self.max_log_scale)
        return jnp.where(mask, self._fixed(), jnp.repeat(gate, self.head_dim, axis=-1))

    def _logdet(self, log_gate, dtype):
        return jnp.sum(log_gate.astype(logdet_dtype(dtype)), axis=(1, 2))

    def __call__(self, x):
        mask = self._mask(x)
        log_gate = self._log_gate(x * mask, mask)
        return x * jnp.exp(log_gate).astype(x.dtype), self._logdet(log_gate, x.dtype)

    def inverse(self, y):
        mask = self._mask(y)
        log_gate = self._log_gate(y * mask * jnp.exp(-self._fixed()).astype(y.dtype), mask)
        return y * jnp.exp(-log_gate).astype(y.dtype), -self._logdet(log_gate, y.dtype)


class ITrans(BoundedAttention):
    """AttnFlow's dot-product invertible attention on `[B, N, D]` (equations in the module doc)."""

    def __init__(self, dim: int, num_heads: int, *, parity: int, min_identity: float,
                 rngs: nnx.Rngs, param_dtype=jnp.float32):
        super().__init__(dim, num_heads, min_identity=min_identity, rngs=rngs,
                         param_dtype=param_dtype)
        self.parity = parity % 2

    def groups(self, num_tokens: int):
        """Static `(tokens T_t, moved channels J_t)` for t = 0, 1, leaving out empty groups."""
        out = []
        for t in (0, 1):
            tokens = np.arange(t, num_tokens, 2)
            channels = np.arange((t + self.parity + 1) % 2, self.head_dim, 2)
            if tokens.size and channels.size:
                out.append((tokens, channels))
        return out

    def attention(self, x: jax.Array, tokens: np.ndarray) -> jax.Array:
        """`A: [B, H, |T|, |T|]` (in ≥ float32) for the tokens `T`, from `x`'s conditioning
        entries only."""
        mask = checkerboard(x.shape[1], self.num_heads, self.head_dim, self.parity)
        x_cond = (x * mask)[:, tokens]
        probs = jax.nn.softmax(self.query_key_logits(x_cond), axis=-1)
        return normalize_rows(mix_identity(probs, self.identity_weight(logdet_dtype(x.dtype))))

    def _values(self, x, tokens, channels):
        """`x[T, h, J]` as `[B, H, |T|, |J|]`."""
        return jnp.transpose(self._heads(x)[:, tokens][..., channels], (0, 2, 1, 3))

    def _put(self, x, tokens, channels, values):
        xh = self._heads(x)
        block = xh[:, tokens].at[..., channels].set(
            jnp.transpose(values, (0, 2, 1, 3)).astype(x.dtype))
        return xh.at[:, tokens].set(block).reshape(x.shape)

    def _run(self, x, solve: bool):
        """Both colour groups in one batched LU: jaxlib 0.10's CPU LAPACK kernels block a thread
        of XLA's pool while they wait for their batch chunks on the same pool, so two
        independent LU calls deadlock a two-core machine. The smaller group is padded with an
        identity block (and zero values), which changes neither its solution nor its det."""
        groups = self.groups(x.shape[1])
        n = max(tokens.size for tokens, _ in groups)
        c = max(channels.size for _, channels in groups)
        attn, values = [], []
        for tokens, channels in groups:
            a = self.attention(x, tokens)
            pad = n - tokens.size
            eye = np.diag(np.arange(n) >= tokens.size).astype(np.float32)
            attn.append(jnp.pad(a, ((0, 0), (0, 0), (0, pad), (0, pad))) + eye.astype(a.dtype))
            v = self._values(x, tokens, channels).astype(a.dtype)
            values.append(jnp.pad(v, ((0, 0), (0, 0), (0, pad), (0, c - channels.size))))
        attn, values = jnp.stack(attn, axis=2), jnp.stack(values, axis=2)  # [B, H, G, n, ·]
        with jax.default_matmul_precision("highest"):
            lu, pivots = jax.scipy.linalg.lu_factor(attn)
            moved = (jax.scipy.linalg.lu_solve((lu, pivots), values) if solve
                     else jnp.einsum("bhgij,bhgjc->bhgic", attn, values, precision=HIGHEST))
        log_abs_det = jnp.sum(jnp.log(jnp.abs(jnp.diagonal(lu, axis1=-2, axis2=-1))), axis=-1)
        weights = np.asarray([channels.size for _, channels in groups], np.float32)
        logdet = jnp.einsum("bhg,g->b", log_abs_det, weights.astype(log_abs_det.dtype))
        out = x
        for g, (tokens, channels) in enumerate(groups):
            out = self._put(out, tokens, channels,
                            moved[:, :, g, : tokens.size, : channels.size])
        return out, (-logdet if solve else logdet).astype(logdet_dtype(x.dtype))

    def __call__(self, x):
        return self._run(x, solve=False)

    def inverse(self, y):
        return self._run(y, solve=True)


def make_block(config, block: int, tokens: tuple[int, int], *, rngs: nnx.Rngs,
               param_dtype) -> Sequential:
    """ActNorm, iMap with checkerboard parity `block mod 2`, iTrans with the other, then a channel
    coupling with parity `block mod 2`."""
    del tokens  # both attentions take any token count
    floor = min_identity_for_depth(config.ica_mixing_budget, config.num_blocks)
    return Sequential([
        ActNorm(config.dim, param_dtype=param_dtype),
        IMap(config.dim, config.num_heads, parity=block, max_log_scale=config.max_log_scale,
             rngs=rngs, param_dtype=param_dtype),
        ITrans(config.dim, config.num_heads, parity=block + 1, min_identity=floor, rngs=rngs,
               param_dtype=param_dtype),
        channel_coupling(config, block, config.attnflow.kernel_size, rngs=rngs,
                         param_dtype=param_dtype)])
