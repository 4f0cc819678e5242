"""The interface each dataset module implements, and the registry of datasets."""

from __future__ import annotations

import importlib
from typing import Any

import ml_collections

from mango_jax.data.core import DataNotFoundError, DatasetInfo

DATASETS = ("mfeat", "mmimdb", "nyudv2", "sunrgbd", "taskonomy", "paired")

SPLIT_ALIASES = {"validation": "val", "dev": "val", "valid": "val", "testing": "test"}


class DatasetSpec:
    """Per-dataset glue between a config, its TFDS builder and the grain transform."""

    name: str = ""
    builder_cls: Any = None
    splits: tuple[str, ...] = ()
    cache_in_memory: bool = False  # small vector datasets: read the split once

    def add_defaults(self, cfg: ml_collections.ConfigDict) -> None:
        """Adds the dataset-specific fields of `default_config`."""

    def validate(self, cfg: ml_collections.ConfigDict) -> None:
        """Raises ValueError for an impossible config (unknown modality, ...)."""

    def config_name(self, cfg: ml_collections.ConfigDict) -> str | None:
        """The TFDS builder config this data config reads (None when there are none)."""
        return None

    def missing_message(self, cfg: ml_collections.ConfigDict) -> str:
        raise NotImplementedError

    def prepare_default(self, cfg: ml_collections.ConfigDict) -> bool:
        """Prepares without user files where possible (mfeat); returns whether it did."""
        return False

    def prepare(self, *, data_dir: str, manual_dir: str | None, **options) -> str:
        raise NotImplementedError

    def info(self, cfg: ml_collections.ConfigDict, builder) -> DatasetInfo:
        raise NotImplementedError

    def transform(self, cfg: ml_collections.ConfigDict, info: DatasetInfo, *, train: bool):
        """A picklable `f(record, rng) -> dict of np arrays` (rng is None when not training)."""
        raise NotImplementedError

    # Shared helpers -------------------------------------------------------------------------

    def prepared_dir(self, cfg: ml_collections.ConfigDict) -> str:
        """The version folder this data config reads."""
        from mango_jax.data import core

        return core.version_dir(self.builder_cls, cfg.data_dir, self.config_name(cfg))

    def is_prepared(self, cfg: ml_collections.ConfigDict) -> bool:
        from mango_jax.data import core

        return core.is_prepared(self.builder_cls, cfg.data_dir, self.config_name(cfg))

    def builder(self, cfg: ml_collections.ConfigDict):
        if not self.is_prepared(cfg):
            raise DataNotFoundError(self.missing_message(cfg))
        return self.builder_cls(data_dir=cfg.data_dir, config=self.config_name(cfg))

    def canonical_split(self, split: str) -> str:
        s = SPLIT_ALIASES.get(split, split)
        if s not in self.splits:
            raise ValueError(f"{self.name} has splits {self.splits}; got {split!r}")
        return s


def get_spec(name: str) -> DatasetSpec:
    if name not in DATASETS:
        raise ValueError(f"Unknown dataset {name!r}; expected one of {DATASETS}")
    module = importlib.import_module(f"mango_jax.data.{name}")
    return module.SPEC
