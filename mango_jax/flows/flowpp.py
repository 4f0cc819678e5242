"""Flow++ baseline of the Table 4 ablation (Ho, Chen, Srinivas, Duan & Abbeel 2019).

One Flow++ step per block (section 3): ActNorm → invertible 1×1 convolution
(`glow.ChannelMixLU`) → mixture-of-logistics CDF coupling (section 3.2) over the channels, whose
conditioner is a self-attention network over all N tokens (section 3.3), so every moved entry
depends on all tokens of both modalities. Variational dequantization (section 3.1) concerns
discrete pixels and does not apply to continuous features.

Coupling (eq. 9): with `(π, μ, s, a, b) = conditioner(x₁)` for every moved entry of `x₂`,

    F(x) = Σ_k π_k σ((x − μ_k) e^{−s_k}) ∈ (0, 1),   y = logit(F(x₂)) · e^{a} + b,
    log|det| = Σ [log F'(x₂) − log F(x₂) − log(1 − F(x₂)) + a],

with `log F`, `log(1 − F)` and `log F'` each a logsumexp of log-sigmoids, so the tails neither
round to 0 or 1 nor lose the log-det. The Jacobian is triangular (x₁ passes through and
conditions an elementwise increasing map of x₂), so the log-det is exact.

Bounded conditioning for every parameter value: `|μ_k| ≤ m` (soft clip); `s_k` and `a` use Glow's
sigmoid scale (`realnvp.sigmoid_log_scale`, soft-clipped at the bounds), so
`s_k ∈ [−s₀, c_s]` and `a ∈ [−c, s₀]` with `s₀ = log(1/σ(2)) ≈ 0.13`. Writing `g = logit ∘ F`,
`g' = F'/(F(1−F))`. By Jensen (u(1−u) is concave) `F' = Σ π_k e^{−s_k} F_k(1−F_k) ≤
max_k e^{−s_k} F(1−F)`, so `g' ≤ e^{s₀}`; and `g' ≥ F'/(1−F) ≥ min_k e^{−s_k} F_k(x)`, which for
x ≥ 0 (x ≤ 0 symmetrically with F'/F) is at least `e^{−c_s} σ(−m e^{s₀})`. Each entry's derivative
thus lies in `[e^{−c−c_s} σ(−m e^{s₀}), e^{2 s₀}]` (0.012 to 1.3 with the defaults). Symmetric
bounds on s and a let a perturbed G at the paper's size grow its activations geometrically
(reconstruction error 0.04); with these it stays near unit scale.

The conditioner runs at `flow.flowpp.width` = 128 channels (Flow++ used 96 on CIFAR-10): the output
layer's fan-in sets how far weight noise moves the mixture, and at width 512 the perturbed G at
the paper's size reconstructed only to 9e-5 (5.6e-6 at 128).

Inverse: `z = (y − b) e^{−a}`, then `g(x) = z` by Newton's method safeguarded by bisection
(`solve_mixture_logit`). The bracket is exact: every σ(t_k) equals σ(z) at `r_k = μ_k + z e^{s_k}`,
so `g ≤ z` at `min_k r_k` and `g ≥ z` at `max_k r_k`. Iteration stops once every entry's last
step is below `flow.flowpp.inverse_tolerance · max(|x|, 1)` (≤ 1e-6 relative) or after
`flow.flowpp.inverse_max_iterations`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mango_jax.flows.actnorm import ActNorm
from mango_jax.flows.base import Sequential, logdet_dtype
from mango_jax.flows.coupling import Coupling, bounded_log_scale
from mango_jax.flows.glow import ChannelMixLU
from mango_jax.flows.realnvp import CHANNELS, channel_partition, merge, sigmoid_log_scale, split

# `flow.flowpp` (mango_jax.flows.default_config).
DEFAULTS = {
    # Logistic components K of each moved entry's CDF (Flow++ uses 32 on CIFAR-10).
    "num_components": 4,
    # Channels of the attention conditioner (its gated feed-forward layer is coupling_hidden).
    "width": 128,
    # Bounds m of |μ_k| and c_s of |s_k| (see the conditioning bound in the module docstring).
    "max_mean": 1.0,
    "max_component_log_scale": 1.0,
    # Newton-bisection inverse: stop once every step is below tolerance · max(|x|, 1).
    "inverse_tolerance": 1e-6,
    "inverse_max_iterations": 50,
}


class AttentionConditioner(nnx.Module):
    """Flow++'s conditioner on tokens: `[B, N, d_in] -> [B, N, d_out]`.

    Embedding to `width` channels, one pre-norm multi-head self-attention block and one gated
    (GLU, `hidden` units) feed-forward block, both residual, as Flow++'s gated attention residual
    blocks; the zero-initialised output layer starts every coupling from the same mixture for all
    inputs.
    """

    def __init__(self, d_in: int, d_out: int, width: int, hidden: int, num_heads: int, *,
                 rngs: nnx.Rngs, param_dtype=jnp.float32):
        if width % num_heads:
            raise ValueError(f"flow.flowpp.width={width} must be divisible by "
                             f"num_heads={num_heads}")
        self.embed = nnx.Linear(d_in, width, rngs=rngs, param_dtype=param_dtype)
        self.attention_norm = nnx.LayerNorm(width, rngs=rngs, param_dtype=param_dtype)
        self.attention = nnx.MultiHeadAttention(num_heads, width, decode=False, keep_rngs=False,
                                                rngs=rngs, param_dtype=param_dtype)
        self.gate_norm = nnx.LayerNorm(width, rngs=rngs, param_dtype=param_dtype)
        self.gate = nnx.Linear(width, 2 * hidden, rngs=rngs, param_dtype=param_dtype)
        self.gate_out = nnx.Linear(hidden, width, rngs=rngs, param_dtype=param_dtype)
        self.out_norm = nnx.LayerNorm(width, rngs=rngs, param_dtype=param_dtype)
        self.out = nnx.Linear(width, d_out, rngs=rngs, param_dtype=param_dtype,
                              kernel_init=nnx.initializers.zeros_init())

    def __call__(self, x):
        h = self.embed(x)
        h = h + self.attention(self.attention_norm(h))
        value, gate = jnp.split(self.gate(self.gate_norm(h)), 2, axis=-1)
        h = h + self.gate_out(value * jax.nn.sigmoid(gate))
        return self.out(self.out_norm(h))


def mixture_logit(x: jax.Array, log_pi, mean, log_scale) -> tuple[jax.Array, jax.Array]:
    """`g(x) = logit F(x)` and `log g'(x)` of the logistic mixture; `x: [...]`, the rest
    `[..., K]`."""
    t = (x[..., None] - mean) * jnp.exp(-log_scale)
    log_cdf = jax.nn.log_sigmoid(t)
    log_sf = jax.nn.log_sigmoid(-t)
    log_f = jax.nn.logsumexp(log_pi + log_cdf, axis=-1)
    log_1mf = jax.nn.logsumexp(log_pi + log_sf, axis=-1)
    log_pdf = jax.nn.logsumexp(log_pi + log_cdf + log_sf - log_scale, axis=-1)
    return log_f - log_1mf, log_pdf - log_f - log_1mf


def solve_mixture_logit(z: jax.Array, log_pi, mean, log_scale, *, tolerance: float,
                        max_iterations: int) -> tuple[jax.Array, jax.Array]:
    """`x` with `logit F(x) = z` (all entries at once) and the number of iterations used.

    Newton's method inside the exact bracket `[min_k r_k, max_k r_k]`, `r_k = μ_k + z e^{s_k}`;
    a step that would leave the (shrinking) bracket is replaced by bisection, so it converges for
    every parameter value.
    """
    roots = mean + z[..., None] * jnp.exp(log_scale)
    lo, hi = jnp.min(roots, axis=-1), jnp.max(roots, axis=-1)
    x0 = jnp.sum(jnp.exp(log_pi) * roots, axis=-1)

    def unconverged(state):
        x, _, _, step, i = state
        return (i < max_iterations) & jnp.any(step > tolerance * jnp.maximum(jnp.abs(x), 1.0))

    def newton_or_bisect(state):
        x, lo, hi, _, i = state
        g, log_dg = mixture_logit(x, log_pi, mean, log_scale)
        residual = g - z
        lo = jnp.where(residual < 0, x, lo)
        hi = jnp.where(residual > 0, x, hi)
        newton = x - residual * jnp.exp(-log_dg)
        x_new = jnp.where((newton >= lo) & (newton <= hi), newton, 0.5 * (lo + hi))
        return x_new, lo, hi, jnp.abs(x_new - x), i + 1

    state = (x0, lo, hi, jnp.full_like(x0, jnp.inf), jnp.zeros((), jnp.int32))
    x, _, _, _, iterations = jax.lax.while_loop(unconverged, newton_or_bisect, state)
    return x, iterations


class MixtureLogisticCoupling(Coupling):
    """Flow++'s mixture-of-logistics CDF coupling over the channels of `[B, N, D]` (parity as
    `AffineCoupling`), with an `AttentionConditioner` over the tokens."""

    def __init__(self, dim: int, num_heads: int, width: int, hidden: int, *, parity: int,
                 num_components: int, max_mean: float, max_component_log_scale: float,
                 max_log_scale: float, tolerance: float, max_iterations: int, rngs: nnx.Rngs,
                 param_dtype=jnp.float32):
        if num_components < 1:
            raise ValueError(f"flow.flowpp.num_components must be ≥ 1, got {num_components}")
        self.cond, self.moved = channel_partition(dim, parity)
        self.num_components = num_components
        self.max_mean = max_mean
        self.max_component_log_scale = max_component_log_scale
        self.max_log_scale = max_log_scale
        self.tolerance = tolerance
        self.max_iterations = max_iterations
        self.conditioner = AttentionConditioner(
            len(self.cond), len(self.moved) * (3 * num_components + 2), width, hidden,
            num_heads, rngs=rngs, param_dtype=param_dtype)
        # Distinct initial means: with a zero output layer the components would otherwise get
        # identical gradients and never separate.
        spread = np.linspace(-0.5, 0.5, num_components) if num_components > 1 else np.zeros(1)
        self.mean_offset = nnx.Param(jnp.asarray(spread * max_mean, param_dtype))

    def condition(self, x1: jax.Array):
        """`(log π, μ, s: [B, N, D₂, K], a, b: [B, N, D₂])` for the conditioning part `x1`."""
        b, n, _ = x1.shape
        k = self.num_components
        raw = self.conditioner(x1).reshape(b, n, len(self.moved), 3 * k + 2)
        log_pi = jax.nn.log_softmax(raw[..., :k], axis=-1)
        mean = bounded_log_scale(raw[..., k: 2 * k] + self.mean_offset[...], self.max_mean)
        log_scale = bounded_log_scale(-sigmoid_log_scale(raw[..., 2 * k: 3 * k]),
                                      self.max_component_log_scale)
        a = bounded_log_scale(sigmoid_log_scale(raw[..., 3 * k]), self.max_log_scale)
        return log_pi, mean, log_scale, a, raw[..., 3 * k + 1]

    def _logdet(self, log_dg, a, dtype):
        return jnp.sum((log_dg + a).astype(logdet_dtype(dtype)), axis=(1, 2))

    def partition(self, x):
        return split(x, CHANNELS, self.cond, self.moved)

    def merge(self, x, cond, moved):
        return merge(x, CHANNELS, self.moved, moved)

    def transform(self, x2, params):
        log_pi, mean, log_scale, a, shift = params
        z, log_dg = mixture_logit(x2, log_pi, mean, log_scale)
        return z * jnp.exp(a) + shift, self._logdet(log_dg, a, x2.dtype)

    def untransform(self, y2, params):
        log_pi, mean, log_scale, a, shift = params
        x2, _ = solve_mixture_logit((y2 - shift) * jnp.exp(-a), log_pi, mean, log_scale,
                                    tolerance=self.tolerance, max_iterations=self.max_iterations)
        _, log_dg = mixture_logit(x2, log_pi, mean, log_scale)
        return x2, -self._logdet(log_dg, a, y2.dtype)


def make_block(config, block: int, tokens: tuple[int, int], *, rngs: nnx.Rngs,
               param_dtype) -> Sequential:
    """One Flow++ step: ActNorm, 1×1 convolution, mixture-of-logistics coupling (parity
    `block mod 2`)."""
    del tokens  # the attention conditioner takes any token count
    seed = config.seed * 1_000_003 + 1000 * block
    coupling = MixtureLogisticCoupling(
        config.dim, config.num_heads, config.flowpp.width, config.coupling_hidden, parity=block,
        num_components=config.flowpp.num_components, max_mean=config.flowpp.max_mean,
        max_component_log_scale=config.flowpp.max_component_log_scale,
        max_log_scale=config.max_log_scale, tolerance=config.flowpp.inverse_tolerance,
        max_iterations=config.flowpp.inverse_max_iterations, rngs=rngs, param_dtype=param_dtype)
    return Sequential([ActNorm(config.dim, param_dtype=param_dtype),
                       ChannelMixLU(config.dim, seed=seed, param_dtype=param_dtype), coupling])
