"""The coupling skeleton, and RealNVP affine coupling over channels (Dinh, Sohl-Dickstein &
Bengio 2017, eqs. 6-9)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from mango_jax.flows.base import InvertibleLayer, logdet_dtype
from mango_jax.nn.constant import Constant


def bounded_log_scale(raw: jax.Array, max_log_scale: float) -> jax.Array:
    """`c · tanh(raw / c)`: identity near 0, never beyond ±c, so one layer scales by ≤ e^c."""
    return max_log_scale * jnp.tanh(raw / max_log_scale)


def affine_forward(x, raw_log_scale, shift, max_log_scale, sum_axes):
    """`y = x · exp(s) + t` and its log-det `Σ s` over `sum_axes` (in ≥ float32)."""
    log_scale = bounded_log_scale(raw_log_scale, max_log_scale)
    y = x * jnp.exp(log_scale).astype(x.dtype) + shift.astype(x.dtype)
    return y, jnp.sum(log_scale.astype(logdet_dtype(x.dtype)), axis=sum_axes)


def affine_inverse(y, raw_log_scale, shift, max_log_scale, sum_axes):
    """Inverse of `affine_forward`; returns `x` and the inverse log-det `-Σ s`."""
    log_scale = bounded_log_scale(raw_log_scale, max_log_scale)
    x = (y - shift.astype(y.dtype)) * jnp.exp(-log_scale).astype(y.dtype)
    return x, -jnp.sum(log_scale.astype(logdet_dtype(y.dtype)), axis=sum_axes)


class Conditioner(nnx.Module):
    """Token-wise MLP `[B, N, d_in] -> ([B, N, d_out], [B, N, d_out])` with a zero last layer.

    The zero last layer makes a freshly built coupling layer exactly the identity. The input is
    layer-normalised and the last layer is read out with a `1/√hidden` multiplier, so the
    log-scale and shift move by O(|w|) for output weights w, whatever the width and the scale
    of the incoming tokens: this keeps deep stacks invertible when the weights drift.
    """

    def __init__(self, d_in: int, d_out: int, hidden: int, *, rngs: nnx.Rngs,
                 param_dtype=jnp.float32):
        self.norm = nnx.LayerNorm(d_in, rngs=rngs, param_dtype=param_dtype)
        self.hidden = nnx.Linear(d_in, hidden, rngs=rngs, param_dtype=param_dtype)
        self.mid = nnx.Linear(hidden, hidden, rngs=rngs, param_dtype=param_dtype)
        self.out = nnx.Linear(hidden, 2 * d_out, rngs=rngs, param_dtype=param_dtype,
                              kernel_init=nnx.initializers.zeros_init())
        self.readout = hidden ** -0.5

    def __call__(self, x):
        h = jax.nn.gelu(self.hidden(self.norm(x)))
        h = jax.nn.gelu(self.mid(h))
        raw_log_scale, shift = jnp.split(self.out(h) * self.readout, 2, axis=-1)
        return raw_log_scale, shift


class Coupling(InvertibleLayer):
    """A coupling layer: `x -> (x_cond, x_moved)`, `θ = conditioner(x_cond)`,
    `y_moved = f(x_moved; θ)`, `y = merge(x, y_moved)`; the inverse runs `f⁻¹` with the same θ,
    since `x_cond` passes through unchanged. The Jacobian is block-triangular, so the log-det is
    f's alone.

    Subclasses plug in the partition (`partition`, `merge`), the conditioner (`condition`: θ as
    a tuple) and the transform (`transform`, `untransform`: values and log-det `[B]`); the
    default transform is the bounded affine map (`affine_forward`) with `self.max_log_scale`.
    """

    max_log_scale: float

    def partition(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        raise NotImplementedError(f"{type(self).__name__} must implement partition")

    def merge(self, x: jax.Array, cond: jax.Array, moved: jax.Array) -> jax.Array:
        raise NotImplementedError(f"{type(self).__name__} must implement merge")

    def condition(self, cond: jax.Array) -> tuple[jax.Array, ...]:
        """The transform's parameters from the conditioning part (default: `conditioner`)."""
        return self.conditioner(cond)

    def transform(self, moved, params):
        return affine_forward(moved, *params, self.max_log_scale, (1, 2))

    def untransform(self, moved, params):
        return affine_inverse(moved, *params, self.max_log_scale, (1, 2))

    def __call__(self, x):
        cond, moved = self.partition(x)
        moved, logdet = self.transform(moved, self.condition(cond))
        return self.merge(x, cond, moved), logdet

    def inverse(self, y):
        cond, moved = self.partition(y)
        moved, logdet = self.untransform(moved, self.condition(cond))
        return self.merge(y, cond, moved), logdet


class AffineCoupling(Coupling):
    """Affine coupling over channels of `[B, N, D]`.

    One channel half (`parity` 0: the first ⌈D/2⌉ channels; 1: the rest) conditions an
    elementwise affine map of the other half. The log-scale is `c·tanh(raw/c)` with
    `c = max_log_scale`, so each layer's Jacobian has singular values in `[e^-c, e^c]`.

    For even D the parity is a `Constant` and the halves are dynamic slices, so that layers of
    either parity share one structure and G's blocks stack and scan one by one instead of in
    pairs (`Sequential`); for odd D the halves differ in width and the parity is static.
    """

    def __init__(self, dim: int, hidden: int, *, parity: int = 0, max_log_scale: float = 2.0,
                 rngs: nnx.Rngs, param_dtype=jnp.float32):
        if dim < 2:
            raise ValueError(f"AffineCoupling needs at least 2 channels, got dim={dim}")
        self.split = (dim + 1) // 2
        self.max_log_scale = max_log_scale
        if dim % 2:
            self.parity = parity % 2
        else:
            self.parity = Constant(jnp.asarray(parity % 2, jnp.int32))
        d_cond = self.split if parity % 2 == 0 else dim - self.split
        self.conditioner = Conditioner(d_cond, dim - d_cond, hidden, rngs=rngs,
                                       param_dtype=param_dtype)

    def _starts(self):
        """Where the conditioning and the moved halves start (even D)."""
        start = self.parity[...] * self.split
        return start, self.split - start

    def partition(self, x):
        if isinstance(self.parity, int):
            first, second = x[..., : self.split], x[..., self.split:]
            return (first, second) if self.parity == 0 else (second, first)
        cond, moved = self._starts()
        return (jax.lax.dynamic_slice_in_dim(x, cond, self.split, axis=-1),
                jax.lax.dynamic_slice_in_dim(x, moved, self.split, axis=-1))

    def merge(self, x, cond, moved):
        if isinstance(self.parity, int):
            return jnp.concatenate([cond, moved] if self.parity == 0 else [moved, cond], axis=-1)
        return jax.lax.dynamic_update_slice_in_dim(x, moved, self._starts()[1], axis=-1)
