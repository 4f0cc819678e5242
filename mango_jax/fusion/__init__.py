"""Fusion modules: MANGO and the methods it is compared against, behind one interface.

A model is `encoders -> a [B, M, D], b [B, K, D] -> fusion -> task head per stream, logits
averaged`. Every fusion module is built by `build(config, dim=D, tokens=(M, K), rngs=...)` and
called as `module(a, b, deterministic=...) -> FusionOutput(streams, aux_losses, metrics)`.

Each method is one `mango_jax.fusion.base.FusionModule` subclass in a module of this package,
entered into the registry by `@register`: its `NAME`, its fields and defaults (`DEFAULTS`,
`DENSE_DEFAULTS`, `HOMOGENEOUS_DEFAULTS`), whether it keeps tokens (`KEEPS_TOKENS`).
`default_config(name)` gives them; the classes' docstrings define each method and field. Every
module of the package is imported here, so a new method is a new file.
"""

from __future__ import annotations

import copy
import importlib
import pkgutil

import ml_collections
from flax import nnx

from mango_jax.fusion.base import REGISTRY, FusionModule, FusionOutput

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

NAMES: tuple[str, ...] = tuple(REGISTRY)

__all__ = ["NAMES", "REGISTRY", "FusionModule", "FusionOutput", "build", "default_config"]


def _unknown(name: object) -> ValueError:
    return ValueError(f"unknown fusion method {name!r}; valid names: {', '.join(NAMES)}")


def default_config(name: str, *, dense: bool = False,
                   homogeneous: bool = False) -> ml_collections.ConfigDict:
    """The fields and defaults of method `name`, with `name` set; `dense`: the defaults for a
    task head that decodes a token grid (the class's `DENSE_DEFAULTS` over its `DEFAULTS`);
    `homogeneous`: for two modalities of one kind and grid, such as RGB-depth (its
    `HOMOGENEOUS_DEFAULTS` over both)."""
    if name not in REGISTRY:
        raise _unknown(name)
    cls = REGISTRY[name]
    fields = {**cls.DEFAULTS, **(cls.DENSE_DEFAULTS if dense else {}),
              **(cls.HOMOGENEOUS_DEFAULTS if homogeneous else {})}
    return ml_collections.ConfigDict({"name": name, **copy.deepcopy(fields)})


def build(
    config: ml_collections.ConfigDict,
    *,
    dim: int,
    tokens: tuple[int, int],
    rngs: nnx.Rngs,
) -> FusionModule:
    """Builds the fusion module `config.name` for streams of width `dim` and `tokens = (M, K)`.

    Fields missing from `config` take their defaults; a field the method does not have is an
    error (it is most likely a typo).
    """
    name = config.get("name")
    if name not in REGISTRY:
        raise _unknown(name)
    full = default_config(name)
    unknown = sorted(set(config.keys()) - set(full.keys()))
    if unknown:
        raise ValueError(
            f"fusion method {name!r} has no field(s) {unknown}; its fields are "
            f"{sorted(k for k in full.keys() if k != 'name')}"
        )
    full.update(config)
    return REGISTRY[name](full, dim=dim, tokens=tuple(int(t) for t in tokens), rngs=rngs)
