"""Float64 NumPy re-implementations of the fusion building blocks, written from the papers'
equations, to check the JAX modules against."""

from __future__ import annotations

import jax
import numpy as np
from flax import nnx


def params(module: nnx.Module) -> dict:
    """The module's parameters as a nested dict of float64 arrays."""
    pure = nnx.to_pure_dict(nnx.state(module, nnx.Param))
    return jax.tree.map(lambda x: np.asarray(x, np.float64), pure)


def linear(p: dict, x: np.ndarray) -> np.ndarray:
    y = x @ p["kernel"]
    return y + p["bias"] if "bias" in p else y


def layer_norm(p: dict, x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * p["scale"] + p["bias"]


def gelu(x: np.ndarray) -> np.ndarray:
    """The tanh form, jax.nn.gelu's default."""
    return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x**3)))


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    e = np.exp(x - x.max(axis, keepdims=True))
    return e / e.sum(axis, keepdims=True)


def attention(p: dict, q_in, k_in, v_in, heads: int) -> np.ndarray:
    """Multi-head attention, `q_in [..., T, D]`, `k_in, v_in [..., S, D]` -> `[..., T, D]`."""
    q, k, v = linear(p["query"], q_in), linear(p["key"], k_in), linear(p["value"], v_in)
    split = lambda x: x.reshape(*x.shape[:-1], heads, -1)
    q, k, v = split(q), split(k), split(v)
    logits = np.einsum("...thd,...shd->...hts", q, k) / np.sqrt(q.shape[-1])
    y = np.einsum("...hts,...shd->...thd", softmax(logits), v)
    return linear(p["out"], y.reshape(*y.shape[:-2], -1))


def mlp(p: dict, x: np.ndarray) -> np.ndarray:
    return linear(p["fc2"], gelu(linear(p["fc1"], x)))


def block(p: dict, x: np.ndarray, heads: int, context: np.ndarray | None = None) -> np.ndarray:
    """Pre-LN transformer layer; with a context, MulT's crossmodal layer."""
    h = layer_norm(p["norm1"], x)
    kv = h if context is None else layer_norm(p["norm_context"], context)
    x = x + attention(p["attention"], h, kv, kv, heads)
    return x + mlp(p["mlp"], layer_norm(p["norm2"], x))
