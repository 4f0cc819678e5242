"""What every experiment config shares: the run fields and the `file.py:arg` parser.

Config files follow big_vision: `get_config(arg)` where `arg` is `"k=v,k2=v2,flag"`, e.g.
`--config=experiments/nyudv2.py:flow=glow,blocks=8`; any field is overridden afterwards with
`--config.optimizer.learning_rate=3e-4`.
"""

from __future__ import annotations

import ml_collections

from mango_jax import data, fusion, model
from mango_jax.train import optim


def parse_arg(arg: str | None, defaults: dict) -> ml_collections.ConfigDict:
    """`"a=1,b=x,flag"` -> ConfigDict over `defaults` (types follow the defaults; a bare name
    sets a boolean). Unknown names are errors that list the valid ones."""
    parsed = dict(defaults)
    for item in filter(None, (arg or "").split(",")):
        name, _, value = item.partition("=")
        name = name.strip()
        if name not in defaults:
            raise ValueError(f"unknown config argument {name!r}; valid: {sorted(defaults)}")
        default = defaults[name]
        if not _:
            parsed[name] = True
        elif isinstance(default, bool):
            parsed[name] = value.lower() in ("1", "true", "yes", "on")
        elif isinstance(default, int):
            parsed[name] = int(value)
        elif isinstance(default, float):
            parsed[name] = float(value)
        else:
            parsed[name] = value
    return ml_collections.ConfigDict(parsed)


def base_config(experiment: str, dataset: str) -> ml_collections.ConfigDict:
    """Run fields with defaults; the experiment file fills in the rest.

    experiment: name written into results.json. seed: model init and dropout.
    batch_size / eval_batch_size: global batch (split over processes and devices).
    num_steps (0: derive from num_epochs). log_every, eval_every (0: only at the end),
    checkpoint_every, keep_checkpoints, best_metric / best_mode: checkpoint policy.
    eval_splits: evaluated at the end into results.json. compute_dtype: 'float32' or
    'bfloat16' (float32 master weights and log-dets). parallelism: 'jit' (GSPMD) or 'pmap'
    (per-device program, explicit gradient all-reduce). mesh.fsdp: devices that split each
    large parameter (1 = pure data parallelism). compare: fusion names to train one after
    another under the same budget (one workdir each) and tabulate; empty: just this config.
    """
    config = ml_collections.ConfigDict()
    config.experiment = experiment
    config.seed = 0
    config.data = data.default_config(dataset)
    config.model = model.default_config()
    config.optimizer = optim.default_config()
    config.batch_size = 64
    config.eval_batch_size = 64
    config.num_steps = 0
    config.num_epochs = 10
    config.log_every = 50
    config.eval_every = 0
    config.checkpoint_every = 500
    config.keep_checkpoints = 2
    config.best_metric = ml_collections.config_dict.placeholder(str)
    config.best_mode = "max"
    config.eval_splits = ("val", "test")
    config.compute_dtype = "float32"
    config.parallelism = "jit"
    config.mesh = ml_collections.ConfigDict({"fsdp": 1})
    config.compare = ()
    return config


def set_fusion(config: ml_collections.ConfigDict, name: str) -> None:
    """Switches the model to fusion method `name`, keeping MANGO's depth as the budget."""
    depth = config.model.fusion.flow.num_blocks if config.model.fusion.name == "mango" else None
    config.model.fusion = fusion.default_config(name)
    if depth is not None and "num_layers" in config.model.fusion:
        config.model.fusion.num_layers = depth


def method_configs(config: ml_collections.ConfigDict) -> dict[str, ml_collections.ConfigDict]:
    """One config per fusion method in `config.compare` (or the config itself)."""
    if not config.compare:
        return {config.model.fusion.name: config}
    out = {}
    for name in config.compare:
        method = config.copy_and_resolve_references()
        method.compare = ()
        if name != method.model.fusion.name:
            set_fusion(method, name)
        out[name] = method
    return out
