"""Finding runs and reading their `results.json` (`mango_jax.results.Results`, any schema)."""

from __future__ import annotations

import dataclasses
import glob
import json
import logging
import os
from collections.abc import Iterable

from mango_jax import paper
from mango_jax.results import Results

SIZES = ("tiny", "small", "base", "large")


@dataclasses.dataclass
class Run:
    """A run's results and the settings the paper's tables sort it by."""

    name: str  # its workdir
    results: Results
    robustness: dict | None = None  # its robustness.json (experiments.robustness), if any

    @property
    def experiment(self) -> str:
        return self.results.experiment

    @property
    def family(self) -> str:
        return self.results.fusion

    @property
    def flow_layer(self) -> str | None:
        return self.results.fusion_details.get("flow_layer")

    @property
    def num_blocks(self) -> int | None:
        """MANGO's blocks as its `describe()` gives them, a baseline's its `num_layers`."""
        blocks = self.results.fusion_details.get("num_blocks")
        if blocks is None:
            blocks = self.results.config.get("model", {}).get("fusion", {}).get("num_layers")
        return blocks

    @property
    def partitions(self) -> frozenset | None:
        parts = self.results.fusion_details.get("partitions")
        return None if parts is None else frozenset(parts)

    @property
    def latent_model(self) -> bool | None:
        return self.results.latent_model

    def setting(self, key: str):
        """One of `paper.MAIN_CONFIG`'s settings."""
        return getattr(self, key)

    def matches(self, **settings) -> bool:
        return all(self.setting(k) == v for k, v in settings.items())

    @property
    def split(self) -> str | None:
        """The split our paper-table numbers come from: 'test', else 'val', else the first."""
        splits = self.results.splits
        return next((s for s in ("test", "val") if s in splits), next(iter(splits), None))

    @property
    def metrics(self) -> dict:
        return self.results.splits.get(self.split, {}) if self.split else {}

    @property
    def variant_tokens(self) -> set:
        """What tells the paper's rows of one family apart: the backbone variant and, for a
        unimodal run, the modality it keeps."""
        tokens = set()
        variant = self.results.variant
        if variant:
            tokens.add(variant.lower())
            tokens.update(t for t in SIZES if t in variant.lower())
        sources = self.results.sources
        if self.family == "unimodal" and sources:
            kept = self.results.config.get("model", {}).get("fusion", {}).get("modality", "a")
            source = sources[0 if kept == "a" or len(sources) == 1 else 1]
            tokens.add(paper.INPUTS.get(source, source))
        return tokens


def expand(patterns: Iterable[str]) -> list[str]:
    """Workdirs / results.json paths from names and glob patterns, in order, without repeats."""
    paths = []
    for pattern in patterns:
        pattern = pattern.strip()
        if not pattern:
            continue
        matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        if not matches:
            logging.warning("no path matches %s", pattern)
        for p in matches:
            if p not in paths:
                paths.append(p)
    return paths


def _robustness(workdir: str) -> dict | None:
    path = os.path.join(workdir, "robustness.json")
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def load_runs(patterns: Iterable[str]) -> tuple[list[Run], list[str]]:
    """Reads every `results.json`; returns the runs and the reasons paths were skipped."""
    runs, skipped = [], []
    for path in expand(patterns):
        file = path if os.path.isfile(path) else os.path.join(path, "results.json")
        if not os.path.isfile(file):
            skipped.append(f"{path}: no results.json")
            continue
        try:
            results = Results.load(file)
        except (OSError, ValueError) as e:
            skipped.append(f"{file}: unreadable ({e})")
            continue
        name = os.path.normpath(os.path.dirname(file) if os.path.isfile(path) else path)
        runs.append(Run(name=name, results=results, robustness=_robustness(name)))
    for s in skipped:
        logging.warning("skipped %s", s)
    return runs, skipped
