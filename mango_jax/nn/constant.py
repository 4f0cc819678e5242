"""State that a model's config fixes at construction, such as a seeded permutation."""

from __future__ import annotations

from flax import nnx


class Constant(nnx.Variable):
    """An array fixed by the config when the model is built: neither trained nor saved.

    It is state rather than a static attribute so that modules differing only in such arrays
    share one structure (and can be stacked and scanned, `flows.base.Sequential`). Checkpoints
    leave it out (`train.checkpoint`): whoever restores one builds the model from the run's
    config, which recomputes it, so runs saved before an attribute became a Constant still load.
    """
