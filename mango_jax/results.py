"""One run's `results.json`: the training loop writes a `Results`, the report reads one back.

The file holds one object per evaluated split and the run's facts under `meta`:

    {"val": {"accuracy": 0.98, ...}, "test": {...},
     "meta": {"schema_version": 1, "experiment": "mfeat", "fusion": "mango", ...}}

Metric values are what the evaluator returns (fractions, not percent). `meta` holds exactly the
fields of `Results` besides `splits`; files of an older schema are brought up to this one by
`mango_jax.migrate.results` when they are read.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from mango_jax import migrate

SCHEMA_VERSION = migrate.RESULTS_VERSION


@dataclasses.dataclass
class Results:
    """The results of one run.

    experiment: the config's `experiment` (dataset name for the paper's experiments).
    fusion: the fusion method's registry name (`model.fusion.name`).
    splits: {split: {metric: value}} of the final evaluation.
    fusion_details: what the method's `describe()` returns (MANGO: flow_layer, num_blocks,
      partitions). diagnostics: what its `diagnostics()` returns (figures' file names, ...).
    latent_model: whether the run used the latent model (section 3.3).
    sources: the two modalities (`data.modalities`). target: the predicted target.
    variant: the config's optional `variant` (backbone size), which picks one of the paper's
      rows of a family that has several (Table 1's TokenFusion Tiny / Small).
    params: trainable parameters of the whole model. steps: training steps done.
    train_time_s: wall time of training (None for `--mode=eval`). eval_time_s: of the final
      evaluation. wall_time_s: of the whole run up to writing the file; compile_s: the XLA
      compilation within it. devices: platform, device kind and counts the run used.
    config: the run's config as saved in `config.json` (with its `version`).
    """

    experiment: str
    fusion: str
    splits: dict[str, dict[str, float]]
    fusion_details: dict[str, Any] = dataclasses.field(default_factory=dict)
    diagnostics: dict[str, Any] = dataclasses.field(default_factory=dict)
    latent_model: bool | None = None
    sources: list[str] = dataclasses.field(default_factory=list)
    target: str = ""
    variant: str | None = None
    params: int | None = None
    steps: int | None = None
    train_time_s: float | None = None
    eval_time_s: float | None = None
    wall_time_s: float | None = None
    compile_s: float | None = None
    devices: dict[str, Any] = dataclasses.field(default_factory=dict)
    config: dict[str, Any] = dataclasses.field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    def to_json(self) -> dict:
        meta = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name != "splits"}
        return {**self.splits, "meta": meta}

    @classmethod
    def from_json(cls, data: dict, where: str = "results.json") -> Results:
        """A `Results` from a parsed file of any schema version (`where` names it in errors)."""
        if not isinstance(data, dict):
            raise ValueError(f"{where}: not a JSON object")
        data = migrate.results(data, where)
        meta = dict(data["meta"])
        known = {f.name for f in dataclasses.fields(cls)} - {"splits"}
        unknown = sorted(set(meta) - known)
        if unknown:
            raise ValueError(f"{where}: unknown meta fields {unknown} for results schema "
                             f"{SCHEMA_VERSION}")
        missing = [k for k in ("experiment", "fusion") if k not in meta]
        if missing:
            raise ValueError(f"{where}: meta lacks {missing}")
        splits = {k: v for k, v in data.items() if k != "meta"}
        bad = [k for k, v in splits.items() if not isinstance(v, dict)]
        if bad:
            raise ValueError(f"{where}: {bad} are not split objects {{metric: value}}")
        return cls(splits=splits, **meta)

    def save(self, path: str) -> None:
        with open(path, "w") as f:
            json.dump(self.to_json(), f, indent=2)

    @classmethod
    def load(cls, path: str) -> Results:
        """Reads `path`; raises OSError or ValueError (json.JSONDecodeError included), naming
        the file, when it cannot be read as results of any schema version."""
        with open(path) as f:
            try:
                data = json.load(f)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}: not JSON ({e})") from None
        return cls.from_json(data, path)
