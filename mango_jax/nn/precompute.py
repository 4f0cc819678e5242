"""Inference copies of a model, in which what depends on the parameters alone is computed once.

A module with such work (LICA's token mixing `W` and `W⁻¹`, built from its LU factors in
O(N³)) defines `precompute()` (arrays) and reads `self.precomputed` when it is set. Training
never sets it; `freeze` does, for inference at any batch size, where the per-call O(N³) would
otherwise dominate small batches.
"""

from __future__ import annotations

import jax
from flax import nnx

from mango_jax.nn.stacked import stack_depth


class Precomputed(nnx.Variable):
    """A function of a module's parameters, stored by `freeze`: neither trained nor saved."""


def freeze(model: nnx.Module) -> nnx.Module:
    """A copy of `model` for inference: every submodule with a `precompute()` method holds its
    result (computed in one jitted call) as `precomputed`.

    The copy's parameters no longer reach those values, so it must not be trained or edited:
    freeze the model again after changing its parameters.
    """
    frozen = nnx.clone(model)
    found = [(path, m) for path, m in nnx.iter_modules(frozen)
             if callable(getattr(m, "precompute", None))]
    if not found:
        return frozen
    splits = [nnx.split(m) for _, m in found]

    def value(graphdef, depth):
        fn = lambda state: nnx.merge(graphdef, state).precompute()  # noqa: E731
        for _ in range(depth):  # stacked modules: once per repeat
            fn = jax.vmap(fn)
        return fn

    @jax.jit
    def values(states):
        return [value(graphdef, stack_depth(path))(state)
                for (path, _), (graphdef, _), state in zip(found, splits, states, strict=True)]

    for (_, module), v in zip(found, values([s for _, s in splits]), strict=True):
        module.precomputed = nnx.data(Precomputed(v))
    return frozen
