"""Imputing missing tokens of a flow's input from the observed ones: `x̂ = argmax log p(x)` over
the missing tokens, the observed ones fixed.

For a joint density, the maximiser over x_B with x_A fixed is the mode of p(x_B | x_A) (the
joint and the conditional differ by p(x_A), a constant in x_B); for a Gaussian joint it is the
conditional mean. An exact flow gives `log p` and its gradient in closed form, so the mode is
found by gradient ascent: Adam with a cosine-decayed step size over a fixed step budget (one
jitted loop, vectorised over the batch: each example's objective depends on its own tokens
only), optionally projected after every step onto the set the inputs live on (MANGO:
scale-fixed tokens). Which tokens are missing is a per-example mask, so one batch (and one
compiled program) can impute modality A for some examples and modality B for others.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax


def conditional_mode(log_prob: Callable[[jax.Array], jax.Array], x: jax.Array,
                     missing: jax.Array, *, steps: int, step_size: float,
                     project: Callable[[jax.Array], jax.Array] | None = None) -> jax.Array:
    """`x` with its `missing` tokens replaced by `argmax log_prob(x)` over them.

    log_prob: `[B, N, D] -> [B]`, the joint log-density of the tokens.
    x: `[B, N, D]`, the observed tokens and the ascent's start at the missing ones.
    missing: `[B, N]` bool, True on the tokens to impute. project: a token-wise map (applied to
      the missing tokens only).
    """
    free = jnp.asarray(missing, bool)[..., None]
    project = project or (lambda x: x)
    observed = x.astype(jnp.float32)

    def keep(x):
        return jnp.where(free, project(x), observed)

    def objective(x):
        return -jnp.sum(log_prob(x))

    optimizer = optax.adam(optax.cosine_decay_schedule(step_size, max(int(steps), 1)))
    x = keep(observed)

    def body(_, carry):
        x, opt_state = carry
        updates, opt_state = optimizer.update(jax.grad(objective)(x), opt_state, x)
        return keep(optax.apply_updates(x, updates)), opt_state

    x, _ = jax.lax.fori_loop(0, int(steps), body, (x, optimizer.init(x)))
    return jax.lax.stop_gradient(x)


def missing_mask(batch: int, tokens: tuple[int, int], side: str) -> jax.Array:
    """`[batch, M + K]` True on modality `side`'s tokens ('a': the first M, 'b': the last K)."""
    if side not in ("a", "b"):
        raise ValueError(f"side={side!r}; expected 'a' or 'b'")
    m, k = tokens
    row = jnp.arange(m + k) < m
    return jnp.broadcast_to(row if side == "a" else ~row, (batch, m + k))
