"""Repeated modules stored stacked: one module whose every array has a leading axis over the
repeats, held under the attribute `STACKED` (`flows.base.Sequential` with `scan=True`), so that
a `lax.scan` runs them and the optimiser updates one array per repeated parameter. Code that
walks a model's modules or parameters finds such arrays by that name on their path.
"""

from __future__ import annotations

import jax
import numpy as np

STACKED = "stacked"


def stack_depth(path) -> int:
    """How many leading repeat axes the arrays of the module or parameter at `path` (keys or
    plain names) carry."""
    return sum(getattr(key, "key", getattr(key, "name", key)) == STACKED for key in path)


def restack(saved, target):
    """`saved`, a pure dict of a checkpoint written while repeats were stored one by one, in
    the layout of `target` (the pure dict of the model that stores them stacked), where they
    differ: under `STACKED` one group of `period` children whose arrays stack the repeats in
    order, and under `layers` the children after the last whole group. Elsewhere unchanged,
    keys taking the target's types (a checkpoint read without a target has string keys), so an
    optimiser state, whose moments mirror the parameters, converts the same way."""
    if not isinstance(saved, dict) or not isinstance(target, dict):
        return saved
    keys = {str(k): k for k in target}
    saved = {keys.get(str(k), k): v for k, v in saved.items()}
    if STACKED in target and STACKED not in saved and "layers" in saved:
        old = [saved["layers"][k] for k in sorted(saved["layers"], key=int)]
        rest = sorted(target.get("layers", {}), key=int)
        count = len(old) - len(rest)
        group = sorted(target[STACKED], key=int)
        if count < 0 or count % len(group):
            raise ValueError(f"a saved Sequential of {len(old)} children does not fit "
                             f"{len(group)} stacked ones and {len(rest)} more")
        saved = {**saved, STACKED: {
            key: jax.tree.map(lambda *leaves: np.stack(leaves), *old[j:count:len(group)])
            for j, key in enumerate(group)},
            "layers": dict(zip(rest, old[count:], strict=True))}
    return {k: restack(v, target[k]) if k in target else v for k, v in saved.items()}
