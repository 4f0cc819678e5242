"""Seeded test-time corruptions of one modality, by input kind, at a level p ∈ [0, 1].

Level 0 is the identity for every corruption; level 1 is its strongest form. The noises follow
MultiBench (Liang et al. 2021; feature vectors: Gaussian noise and random feature drop; images:
Gaussian noise, salt-and-pepper, contrast loss) and DynMM (Xue & Marculescu 2023; depth:
`x + σ·mean|x|·N(0, 1)`); token ids are replaced by the padding token.

    stats = InputStats(mean, std, low, high)        # of the modality's train split, as batched
    x, mask = corrupt("gaussian", x, 0.5, key, stats)

Every function is pure and jit-able with `level` traced, so one compiled program serves all
levels. Scales are those of the model's input (after the pipeline's normalisation), taken from
the train split, so "std p" means p train standard deviations of that feature.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

# The corruptions of each input kind (`input_kind`); the first is the one a summary leads with.
KINDS: dict[str, tuple[str, ...]] = {
    "vector": ("gaussian", "drop"),
    "image": ("gaussian", "salt_pepper", "contrast"),
    "depth": ("depth_noise", "gaussian"),
    "tokens": ("padding",),
}


class InputStats(NamedTuple):
    """Train-split statistics of one modality's input: per-element `mean` and `std` (the
    example's shape) and the scalar range `low`, `high` (salt-and-pepper's values)."""

    mean: jax.Array
    std: jax.Array
    low: jax.Array
    high: jax.Array


def input_kind(info, modality: str) -> str:
    """'vector', 'image', 'depth' (an image modality named like depth) or 'tokens'."""
    kind = info.modality_kinds[modality]
    if kind == "image" and "depth" in modality.lower():
        return "depth"
    return kind


def _uniform(key, x):
    return jax.random.uniform(key, x.shape, jnp.float32)


def gaussian(x, level, key, stats: InputStats):
    """`x + p · std · N(0, 1)`, std the feature's (pixel's) train-split std."""
    noise = jax.random.normal(key, x.shape, jnp.float32)
    return (x + level * stats.std * noise).astype(x.dtype)


def drop(x, level, key, stats: InputStats):
    """Each feature independently replaced by its train mean with probability p (the mean is
    "no information" for a standardised feature; p = 1 is input filling)."""
    dropped = _uniform(key, x) < level
    return jnp.where(dropped, jnp.broadcast_to(stats.mean, x.shape), x).astype(x.dtype)


def salt_pepper(x, level, key, stats: InputStats):
    """Each value set to the train maximum (salt) or minimum (pepper), each with prob. p / 2."""
    u = _uniform(key, x)
    out = jnp.where(u < level / 2, stats.high, x)
    return jnp.where((u >= level / 2) & (u < level), stats.low, out).astype(x.dtype)


def contrast(x, level, key, stats: InputStats):
    """Contrast loss: `m + (1 − p)(x − m)`, m the image's own mean per channel (p = 1: a flat
    image)."""
    del key, stats
    m = jnp.mean(x, axis=tuple(range(1, x.ndim - 1)), keepdims=True)
    return (x + level * (m - x)).astype(x.dtype)  # Exactly x at p = 0.


def depth_noise(x, level, key, stats: InputStats):
    """DynMM's depth noise `x + σ · mean|x| · N(0, 1)` with σ = p, mean|x| over each example."""
    del stats
    scale = jnp.mean(jnp.abs(x), axis=tuple(range(1, x.ndim)), keepdims=True)
    return (x + level * scale * jax.random.normal(key, x.shape, jnp.float32)).astype(x.dtype)


def padding(x, level, key, stats: InputStats, pad_id: int = 0):
    """Each token id replaced by the padding id with probability p."""
    del stats
    return jnp.where(_uniform(key, x) < level, jnp.asarray(pad_id, x.dtype), x)


FUNCTIONS = {"gaussian": gaussian, "drop": drop, "salt_pepper": salt_pepper,
             "contrast": contrast, "depth_noise": depth_noise, "padding": padding}


def corrupt(name: str, x, level, key, stats: InputStats, mask=None, *, pad_id: int = 0):
    """`(x', mask')`: corruption `name` of the batch `x [B, ...]` at `level`; `mask` (token
    modalities' padding mask, True on real tokens) is cleared where a token became padding."""
    if name not in FUNCTIONS:
        raise ValueError(f"unknown corruption {name!r}; valid: {sorted(FUNCTIONS)}")
    if name == "padding":
        replaced = _uniform(key, x) < level  # The draw `padding` makes with the same key.
        out = padding(x, level, key, stats, pad_id)
        return out, None if mask is None else mask & ~replaced
    return FUNCTIONS[name](x, level, key, stats), mask
