"""`compile_clock` counts XLA compilations inside its context only (`make run`'s compile time)."""

import jax
import jax.numpy as jnp

from mango_jax.train import loop


def test_compile_clock_counts_only_compiles_inside_its_context():
    f = jax.jit(lambda x: jnp.sin(x) * 3.0 + 1.0)
    with loop.compile_clock() as clock:
        f(jnp.ones(7)).block_until_ready()
        compiled = clock["compile_s"]
        f(jnp.ones(7)).block_until_ready()  # cached: nothing compiles
        assert clock["compile_s"] == compiled
    assert compiled > 0
    jax.jit(lambda x: x - 2.0)(jnp.ones(3)).block_until_ready()
    assert clock["compile_s"] == compiled
