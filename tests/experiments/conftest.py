"""Fixtures of the entry-point tests."""

import jax
import pytest


@pytest.fixture(scope="module")
def compilation_cache(tmp_path_factory):
    """One persistent JAX compilation cache for a test module: its runs of one program (eval and
    resume of a run, steps the runs have in common) load what the first compiled."""
    options = {"jax_compilation_cache_dir": str(tmp_path_factory.mktemp("jax_cache")),
               "jax_persistent_cache_min_compile_time_secs": 0.0,
               "jax_persistent_cache_min_entry_size_bytes": 0}
    before = {name: getattr(jax.config, name) for name in options}
    for name, value in options.items():
        jax.config.update(name, value)
    yield
    for name, value in before.items():
        jax.config.update(name, value)
