"""Standard-normal prior and the negative log-likelihood in bits per dimension."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from mango_jax.flows.base import logdet_dtype


def gaussian_log_prob(z: jax.Array) -> jax.Array:
    """`log N(z; 0, I)` summed over all but the batch axis: `[B, ...] -> [B]` (≥ float32)."""
    z = z.astype(logdet_dtype(z.dtype)).reshape(z.shape[0], -1)
    return -0.5 * jnp.sum(z * z, axis=-1) - 0.5 * z.shape[-1] * math.log(2 * math.pi)


def log_likelihood(z: jax.Array, logdet: jax.Array) -> jax.Array:
    """`log p(F) = log N(z; 0, I) + log|det ∂G/∂F|` in nats per example, z = G(F): `[B]`."""
    return gaussian_log_prob(z) + logdet.astype(logdet_dtype(z.dtype))


def nll_bits_per_dim(z: jax.Array, logdet: jax.Array) -> jax.Array:
    """`−log p(F) / (dims · ln 2)` per example: `[B]`."""
    return -log_likelihood(z, logdet) / (math.prod(z.shape[1:]) * math.log(2.0))
