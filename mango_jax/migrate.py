"""Versioned migration of a workdir's files, so that runs written before a config field or the
results layout changed still evaluate, resume (`mango_jax.load`, `experiments.main --mode=eval`)
and report (`experiments.report`).

`config.json` carries `version` (`CONFIG_VERSION`; a file without it is version 0) and
`results.json` carries `meta.schema_version` (`RESULTS_VERSION`; without it, 0). Reading a file
applies the steps from its version to the current one, in order; a renamed field adds a step
here and bumps the version.

Config versions:
  0. The flow baselines' settings are flat prefixed keys of `model.fusion.flow`
     (`glow_kernel_size`, `flowpp_num_components`, ...), and AttnFlow's coupling reads
     `glow_kernel_size`.
  1. Each baseline layer has its own sub-config, `flow.<layer>.<field>` (`flow.glow.kernel_size`,
     `flow.attnflow.kernel_size`, ...).

Results schemas:
  0. No `schema_version`. Runs from before `fusion_details` hold MANGO's flow_layer, num_blocks
     and partitions at the top of `meta`; `meta.config` is a version-0 config; other keys are
     free-form.
  1. `mango_jax.results.Results`: `meta` has exactly its fields.

Checkpoints hold parameters by their module paths, which these changes kept. Their one change
of paths, G's repeated blocks stored stacked under `flow.scan` (its default since 2026-12-07;
runs saved before held them one by one), is converted when a checkpoint is restored
(`train.checkpoint`, `nn.stacked.restack`), so it needs no step here either.
"""

from __future__ import annotations

import copy
import json

import ml_collections

CONFIG_VERSION = 1
RESULTS_VERSION = 1

# Version 0's flat keys of `model.fusion.flow` -> (sub-config, field) of version 1.
_FLAT_FLOW_KEYS = {
    "realnvp_kernel_size": ("realnvp", "kernel_size"),
    "glow_steps_per_block": ("glow", "steps_per_block"),
    "glow_kernel_size": ("glow", "kernel_size"),
    "flowpp_num_components": ("flowpp", "num_components"),
    "flowpp_width": ("flowpp", "width"),
    "flowpp_max_mean": ("flowpp", "max_mean"),
    "flowpp_max_component_log_scale": ("flowpp", "max_component_log_scale"),
    "flowpp_inverse_tolerance": ("flowpp", "inverse_tolerance"),
    "flowpp_inverse_max_iterations": ("flowpp", "inverse_max_iterations"),
}


def _config_0_to_1(config: dict) -> None:
    flow = config.get("model", {}).get("fusion", {}).get("flow")
    if not isinstance(flow, dict):
        return
    for old, (layer, name) in _FLAT_FLOW_KEYS.items():
        if old in flow:
            flow.setdefault(layer, {})[name] = flow.pop(old)
    if "kernel_size" in flow.get("glow", {}):  # what AttnFlow's coupling used
        flow.setdefault("attnflow", {})["kernel_size"] = flow["glow"]["kernel_size"]


_CONFIG_STEPS = (_config_0_to_1,)  # step i turns version i into i + 1


def _version(value, latest: int, what: str, where: str) -> int:
    if not isinstance(value, int) or not 0 <= value <= latest:
        raise ValueError(f"{where}: {what} {value!r} is not one this mango_jax reads (0 to "
                         f"{latest}); a newer version of mango_jax wrote it")
    return value


def config(data: dict, where: str = "config.json") -> dict:
    """A `config.json` dict of any version, migrated to `CONFIG_VERSION` (a new dict)."""
    data = copy.deepcopy(data)
    version = _version(data.pop("version", 0), CONFIG_VERSION, "config version", where)
    for step in _CONFIG_STEPS[version:]:
        step(data)
    return {"version": CONFIG_VERSION, **data}


def config_json(cfg: ml_collections.ConfigDict) -> str:
    """`config.json`'s text: the config with its `version`."""
    return json.dumps({"version": CONFIG_VERSION, **json.loads(cfg.to_json_best_effort())},
                      indent=2)


def read_config(path: str) -> ml_collections.ConfigDict:
    """The run's config from its `config.json` of any version, as the current code names it."""
    with open(path) as f:
        data = config(json.load(f), path)
    del data["version"]
    return ml_collections.ConfigDict(data)


_DETAILS = ("flow_layer", "num_blocks", "partitions")  # MANGO's describe() of schema 1
_RESULTS_0_FIELDS = ("experiment", "fusion", "fusion_details", "diagnostics", "latent_model",
                     "sources", "target", "variant", "params", "steps", "train_time_s", "config")


def _results_0_to_1(data: dict, where: str) -> None:
    meta = data.get("meta")
    if not isinstance(meta, dict):
        raise ValueError(f"{where}: no 'meta' object (not a results.json of mango_jax)")
    details = meta.get("fusion_details")
    if not isinstance(details, dict):
        details = {k: meta[k] for k in _DETAILS if k in meta}
    meta = {k: meta[k] for k in _RESULTS_0_FIELDS if k in meta and meta[k] is not None}
    meta["fusion_details"] = details
    if isinstance(meta.get("config"), dict):
        meta["config"] = config(meta["config"], f"{where} (meta.config)")
    data["meta"] = meta


_RESULTS_STEPS = (_results_0_to_1,)


def results(data: dict, where: str = "results.json") -> dict:
    """A parsed `results.json` of any schema, migrated to the current one (a new dict)."""
    data = copy.deepcopy(data)
    meta = data.get("meta")
    version = _version(meta.get("schema_version", 0) if isinstance(meta, dict) else 0,
                       RESULTS_VERSION, "results schema_version", where)
    for step in _RESULTS_STEPS[version:]:
        step(data, where)
    data["meta"]["schema_version"] = RESULTS_VERSION
    return data
