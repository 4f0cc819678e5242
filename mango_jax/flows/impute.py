"""Imputing one part of a flow's input from the other: `x̂_B = argmax_{x_B} log p(x_A, x_B)`.

For a joint density, the maximiser over x_B with x_A fixed is the mode of p(x_B | x_A) (the
joint and the conditional differ by p(x_A), a constant in x_B); for a Gaussian joint it is the
conditional mean. An exact flow gives `log p` and its gradient in closed form, so the mode is
found by gradient ascent: Adam with a cosine-decayed step size over a fixed step budget (one
jitted loop, vectorised over the batch: each example's objective depends on its own x_B only),
optionally projected after every step onto the set the inputs live on (MANGO: scale-fixed
tokens).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax


def conditional_mode(log_prob: Callable[[jax.Array], jax.Array], known: jax.Array,
                     init: jax.Array, *, missing: str, steps: int, step_size: float,
                     project: Callable[[jax.Array], jax.Array] | None = None) -> jax.Array:
    """`argmax_x log_prob(concat)` over the missing part `x` (shape of `init`, `[B, T, D]`).

    log_prob: `[B, M + K, D] -> [B]`, the joint log-density of the concatenated tokens.
    known: the observed part; missing: 'a' (x comes first) or 'b' (x comes second).
    """
    if missing not in ("a", "b"):
        raise ValueError(f"missing={missing!r}; expected 'a' or 'b'")
    project = project or (lambda x: x)

    def objective(x):
        joint = jnp.concatenate([x, known] if missing == "a" else [known, x], axis=1)
        return -jnp.sum(log_prob(joint))

    optimizer = optax.adam(optax.cosine_decay_schedule(step_size, max(int(steps), 1)))
    x = project(init.astype(jnp.float32))

    def body(_, carry):
        x, opt_state = carry
        updates, opt_state = optimizer.update(jax.grad(objective)(x), opt_state, x)
        return project(optax.apply_updates(x, updates)), opt_state

    x, _ = jax.lax.fori_loop(0, int(steps), body, (x, optimizer.init(x)))
    return jax.lax.stop_gradient(x)
