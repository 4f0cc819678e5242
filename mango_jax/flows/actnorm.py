"""ActNorm (Kingma & Dhariwal 2018, Glow, section 3.1): a per-channel affine map."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from mango_jax.flows.base import InvertibleLayer, logdet_dtype


class ActNorm(InvertibleLayer):
    """`y = (x + bias) · exp(log_scale)` per channel of `[B, N, D]`; log-det `N · Σ log_scale`.

    Starts as the identity. Glow initialises it from data so that the first batch leaves with
    zero mean and unit variance per channel: call `initialize(x)` once before training (the
    Glow baseline does; inside MANGO it stays data-independent so that the flow is a pure
    function of its parameters).
    """

    def __init__(self, dim: int, *, param_dtype=jnp.float32):
        self.bias = nnx.Param(jnp.zeros((dim,), param_dtype))
        self.log_scale = nnx.Param(jnp.zeros((dim,), param_dtype))

    def initialize(self, x: jax.Array, eps: float = 1e-6) -> None:
        """Data-dependent initialisation from a batch `x: [B, N, D]`."""
        mean = jnp.mean(x, axis=(0, 1))
        std = jnp.std(x, axis=(0, 1))
        self.bias[...] = (-mean).astype(self.bias[...].dtype)
        self.log_scale[...] = (-jnp.log(std + eps)).astype(self.log_scale[...].dtype)

    def _logdet(self, x):
        log_scale = self.log_scale[...].astype(logdet_dtype(x.dtype))
        return jnp.full(x.shape[:1], x.shape[1] * jnp.sum(log_scale))

    def __call__(self, x):
        y = (x + self.bias[...]) * jnp.exp(self.log_scale[...])
        return y.astype(x.dtype), self._logdet(x)

    def inverse(self, y):
        x = y * jnp.exp(-self.log_scale[...]) - self.bias[...]
        return x.astype(y.dtype), -self._logdet(y)
