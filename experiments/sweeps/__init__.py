"""Sweeps: lists of trials, each a config file, its argument string and `--config.*` overrides.

A sweep is a module of this package (`--sweep=table4`) or any Python file (`--sweep=my.py`)
with a `get_trials()` that returns `Trial`s; `python -m experiments.sweep` runs them (see there).

    def get_trials():
        return grid("experiments/nyudv2.py", flow=("glow", "mango"), blocks=(8, 12),
                    overrides={"num_steps": 20_000})

A trial's workdir name derives from its config, arguments and overrides
(`nyudv2-flow_glow-blocks_8-num_steps_20000`), so the same trial in two sweeps shares one
workdir and trains once.

Ready-made: `demo` (two short mfeat trials), `table4` (the flow layer), `table5` (the ICA
partitions), `table6_7` (blocks 6/8/12/16 × latent model on/off), each on NYUDv2 and SUN RGB-D
with everything else at the paper's configuration.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib
import importlib.util
import itertools
import os
import re
from collections.abc import Mapping, Sequence

from mango_jax.errors import ConfigError

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SEGMENTATION = ("experiments/nyudv2.py", "experiments/sunrgbd.py")
# The paper's MANGO configuration; the ablation tables vary one or two of these.
PAPER = {"flow": "mango", "blocks": 12, "partitions": "mmca+imca+lica", "latent": True}
MAX_NAME = 120


def _text(value) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.+-]+", "_", text)


@dataclasses.dataclass(frozen=True)
class Trial:
    """`--config=<config>:<arg>` plus `--config.<key>=<value>` for each override."""

    config: str
    arg: str = ""
    overrides: tuple[tuple[str, str], ...] = ()

    @property
    def name(self) -> str:
        parts = [os.path.splitext(os.path.basename(self.config))[0]]
        parts += [_slug(item.replace("=", "_", 1)) for item in self.arg.split(",") if item]
        parts += [f"{_slug(k)}_{_slug(v)}" for k, v in self.overrides]
        name = "-".join(parts)
        if len(name) > MAX_NAME:
            digest = hashlib.sha1(name.encode()).hexdigest()[:10]
            name = f"{name[:MAX_NAME - 11]}-{digest}"
        return name

    @property
    def args(self) -> dict[str, str]:
        """The argument string as a dict; a bare flag (`runlocal`) maps to 'true'."""
        out = {}
        for item in filter(None, self.arg.split(",")):
            key, sep, value = item.partition("=")
            out[key] = value if sep else "true"
        return out

    def flags(self) -> list[str]:
        config = f"{self.config}:{self.arg}" if self.arg else self.config
        return [f"--config={config}", *(f"--config.{k}={v}" for k, v in self.overrides)]


def trial(config: str, *, overrides: Mapping | None = None, **args) -> Trial:
    """A `Trial` from keyword arguments, in their order (booleans become true / false)."""
    return Trial(config, ",".join(f"{k}={_text(v)}" for k, v in args.items()),
                 tuple((k, _text(v)) for k, v in (overrides or {}).items()))


def grid(config: str, *, overrides: Mapping | None = None, fixed: Mapping | None = None,
         **axes: Sequence) -> list[Trial]:
    """Every combination of `axes` (name -> values), after the `fixed` arguments."""
    names = list(axes)
    return [trial(config, overrides=overrides, **(fixed or {}), **dict(zip(names, values)))
            for values in itertools.product(*(axes[n] for n in names))]


def paper_trials(**axes: Sequence) -> list[Trial]:
    """MANGO on NYUDv2 and SUN RGB-D at the paper's configuration, varying `axes`; the
    arguments always come in PAPER's order, so tables that share a setting share its trial."""
    names = list(axes)
    return [trial(config, **{**PAPER, **dict(zip(names, values))})
            for config in SEGMENTATION
            for values in itertools.product(*(axes[n] for n in names))]


def _module_from_file(path: str):
    if not os.path.isfile(path):
        raise ConfigError(f"--sweep={path}: no such file")
    spec = importlib.util.spec_from_file_location(f"_sweep_{_slug(path)}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load(sweep: str) -> list[Trial]:
    """The trials of sweep `sweep`: a module name of this package or a path to a .py file."""
    if sweep.endswith(".py"):
        module = _module_from_file(sweep)
    else:
        try:
            module = importlib.import_module(f"{__name__}.{sweep}")
        except ModuleNotFoundError as e:
            if e.name != f"{__name__}.{sweep}":
                raise
            raise ConfigError(f"no sweep {sweep!r}; ready-made: {', '.join(available())}, or "
                             "give the path of a .py file with get_trials()") from None
    if not hasattr(module, "get_trials"):
        raise ConfigError(f"sweep {sweep!r} has no get_trials() function")
    trials = list(module.get_trials())
    names = [t.name for t in trials]
    clashes = sorted({n for n in names if names.count(n) > 1})
    if clashes:
        raise ConfigError(f"sweep {sweep!r} has several trials named {clashes}; make their "
                         "arguments or overrides differ")
    return trials


@functools.cache
def _config_module(path: str):
    return _module_from_file(path)


def build_config(t: Trial):
    """The trial's config before its overrides (`get_config(arg)` of its config file)."""
    try:
        return _config_module(os.path.join(REPO, t.config)).get_config(t.arg or None)
    except ValueError as e:
        raise ConfigError(f"trial {t.name}: {e}") from None


def check(trials: Sequence[Trial]) -> None:
    """Builds every trial's config, so that a bad argument or override fails before anything
    is launched."""
    for t in trials:
        config = build_config(t)
        for key, _ in t.overrides:
            node = config
            for part in key.split("."):
                if part not in node:
                    raise ConfigError(f"trial {t.name}: the config has no field {key!r}")
                node = node[part]
        if config.get("compare"):
            raise ConfigError(f"trial {t.name} trains several methods ({config.compare}); give "
                             "each its own trial so that each has one workdir and results.json")


def available() -> list[str]:
    folder = os.path.dirname(__file__)
    return sorted(f[:-3] for f in os.listdir(folder)
                  if f.endswith(".py") and not f.startswith("_"))
