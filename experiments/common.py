"""What every experiment config shares: the run fields, the `file.py:arg` parser and the checks
of the arguments every file takes (flow, blocks, partitions, fusion, pretrained).

Config files follow big_vision: `get_config(arg)` where `arg` is `"k=v,k2=v2,flag"`, e.g.
`--config=experiments/nyudv2.py:flow=glow,blocks=8`; any field is overridden afterwards with
`--config.optimizer.learning_rate=3e-4`. Each file sets its experiment's values itself, top to
bottom; a field it leaves alone keeps the default of the package that reads it
(`mango_jax.data`, `mango_jax.model`, `mango_jax.encoders`, `mango_jax.fusion`,
`mango_jax.flows`, `mango_jax.train.optim`) or of `base_config` below. Fields the model derives
(MANGO's `flow.dim` and token counts, `num_steps` from `num_epochs`) are filled in by
`experiments.main.finalize` before the config is printed and saved.
"""

from __future__ import annotations

import os

import ml_collections

from mango_jax import data, flows, fusion, model, robustness
from mango_jax.errors import ConfigError
from mango_jax.train import optim


def parse_arg(arg: str | None, defaults: dict) -> ml_collections.ConfigDict:
    """`"a=1,b=x,flag"` -> ConfigDict over `defaults` (types follow the defaults; a bare name
    sets a boolean). Unknown names are errors that list the valid ones."""
    parsed = dict(defaults)
    for item in filter(None, (arg or "").split(",")):
        name, _, value = item.partition("=")
        name = name.strip()
        if name not in defaults:
            raise ConfigError(f"unknown config argument {name!r}; valid: {sorted(defaults)}")
        default = defaults[name]
        if not _:
            parsed[name] = True
        elif isinstance(default, bool):
            parsed[name] = value.lower() in ("1", "true", "yes", "on")
        else:
            try:
                parsed[name] = type(default)(value)
            except ValueError:
                raise ConfigError(f"{name}={value!r}: expected {type(default).__name__} like "
                                  f"{default!r}") from None
    return ml_collections.ConfigDict(parsed)


def base_config(experiment: str, dataset: str) -> ml_collections.ConfigDict:
    """The package configs (data, model, optimizer) and the run fields no experiment changes.

    Every experiment file then sets its schedule and checkpoint policy: batch_size /
    eval_batch_size (global batch, split over processes and devices), num_steps (0: derive from
    num_epochs), num_epochs, log_every, eval_every (0: only at the end), checkpoint_every,
    best_metric (unset: keep no best checkpoint) / best_mode ('max' | 'min'), eval_splits
    (evaluated at the end into results.json).

    Here: experiment (name written into results.json). seed: model init and dropout.
    keep_checkpoints: latest checkpoints kept. compute_dtype: 'float32' or 'bfloat16'
    (float32 master weights and log-dets). parallelism: 'jit' (GSPMD) or 'pmap' (per-device
    program, explicit gradient all-reduce). mesh.fsdp: devices that split each large parameter
    (1 = pure data parallelism). compare: fusion names to train one after another under the
    same budget (one workdir each) and tabulate; empty: just this config. inception_weights:
    FID Inception-v3 `.npz` (mango_jax.metrics.convert_inception); when set, translation runs
    also report FID and KID. dense_task: the task head decodes a token grid (set by
    `select_fusion`): the compared methods take their dense defaults. homogeneous_modalities:
    both modalities are images of one grid (RGB-depth): the compared methods take their
    homogeneous defaults (TokenFusion and GeminiFusion share their transformer layers).
    """
    config = ml_collections.ConfigDict()
    config.experiment = experiment
    config.seed = 0
    config.data = data.default_config(dataset)
    config.model = model.default_config()
    config.optimizer = optim.default_config()
    config.keep_checkpoints = 2
    config.best_metric = ml_collections.config_dict.placeholder(str)
    config.compute_dtype = "float32"
    config.parallelism = "jit"
    config.mesh = ml_collections.ConfigDict({"fsdp": 1})
    config.compare = ()
    config.inception_weights = ml_collections.config_dict.placeholder(str)
    config.dense_task = False
    config.homogeneous_modalities = False
    config.robustness = robustness.default_config()  # python -m experiments.robustness
    return config


def check_data(data_config: ml_collections.ConfigDict) -> None:
    """The dataset's own checks (`DatasetSpec.validate`), whose refusals are config mistakes."""
    from mango_jax.data.spec import get_spec

    try:
        get_spec(data_config.name).validate(data_config)
    except ValueError as err:
        raise ConfigError(f"data: {err}") from None


def set_fusion(config: ml_collections.ConfigDict, name: str) -> None:
    """Switches the model to fusion method `name` (its dense defaults where
    `config.dense_task`, its homogeneous ones where `config.homogeneous_modalities`), keeping
    MANGO's depth as the budget."""
    depth = config.model.fusion.flow.num_blocks if config.model.fusion.name == "mango" else None
    config.model.fusion = fusion.default_config(
        name, dense=config.dense_task, homogeneous=config.homogeneous_modalities)
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


# The paper's configs (nyudv2, sunrgbd, taskonomy, mmimdb) share what follows.

PARTITION_PATTERNS = {
    "mmca": ("mmca_ab", "mmca_ba", "coupling"),
    "mmca+imca": ("mmca_ab", "mmca_ba", "imca_1", "imca_2", "imca_3", "imca_4", "coupling"),
    "mmca+imca+lica": flows.DEFAULT_BLOCK_PATTERN,
}
# Fusion of pooled vectors (one token out): no dense head can decode them.
POOLED_FUSIONS = tuple(name for name, cls in fusion.REGISTRY.items() if not cls.KEEPS_TOKENS)


def check_flow(args: ml_collections.ConfigDict) -> None:
    """The arguments of G: `flow` its layer kind (Table 4), `blocks` its depth L (Tables 6-7),
    `partitions` (where a file takes it) the ICA kinds of a MANGO block (Table 5), whose
    `PARTITION_PATTERNS` entry is the block pattern: a kind left out of the ablation removes
    its layers from every block (the coupling layer stays), as the table adds MMCA, then IMCA,
    then LICA."""
    layer = args.get("flow", "mango")
    if layer not in flows.LAYERS:
        raise ConfigError(f"flow={layer!r}; valid: {'|'.join(flows.LAYERS)}")
    if args.blocks < 1:
        raise ConfigError(f"blocks={args.blocks}; G needs at least one block")
    partitions = args.get("partitions", "mmca+imca+lica")
    if partitions not in PARTITION_PATTERNS:
        raise ConfigError(f"partitions={partitions!r}; valid: {'|'.join(PARTITION_PATTERNS)}")
    if layer != "mango" and partitions != "mmca+imca+lica":
        raise ConfigError(f"partitions={partitions} ablates MANGO's block; flow={layer} has "
                          "no ICA partitions (drop one of the two arguments)")


def select_fusion(config: ml_collections.ConfigDict, value: str, *, dense: bool) -> None:
    """`fusion=name`, `a+b+...` (trained one after another, then tabulated) or `all`.

    Call it after the MANGO fields are final: a baseline takes MANGO's depth as its layers.
    `dense`: the task head decodes a token grid, which pooled-vector fusions do not keep; it is
    recorded as `config.dense_task`, so every method takes its dense defaults (DynMM: the
    fusion-level decision), also when several are compared.
    """
    config.dense_task = dense
    valid = tuple(n for n in fusion.NAMES if not (dense and n in POOLED_FUSIONS))
    methods = valid if value == "all" else tuple(value.split("+"))
    pooled = [m for m in methods if m in POOLED_FUSIONS and dense]
    if pooled:
        raise ConfigError(f"fusion {pooled} pools each modality to one vector, which a dense "
                         f"(segmentation / translation) head cannot decode; choose from {valid}")
    unknown = [m for m in methods if m not in valid]
    if unknown:
        raise ConfigError(f"unknown fusion {unknown}; choose from {valid} or 'all', joined by '+'")
    if len(methods) > 1:
        config.compare = methods
    elif methods[0] != "mango":
        set_fusion(config, methods[0])


# The paper's checkpoints: folder name under data/weights/ -> the hub repository it comes from.
WEIGHTS_DIR = os.path.join("data", "weights")
PAPER_WEIGHTS = {"vit-mae-base": "facebook/vit-mae-base",
                 "clip-vit-base-patch16": "openai/clip-vit-base-patch16"}


class WeightsNotFoundError(FileNotFoundError):
    """A configured checkpoint is not on disk (the commands print it as one line,
    experiments.cli)."""


def download_command(name: str, path: str | None = None) -> str:
    """The command that puts PAPER_WEIGHTS[name] at `path` (default data/weights/<name>)."""
    path = path or os.path.join(WEIGHTS_DIR, name)
    return f"hf download {PAPER_WEIGHTS[name]} --local-dir {path}"


def set_pretrained(config: ml_collections.ConfigDict, value: str, weights: dict) -> None:
    """`pretrained=paper`: each modality's encoder from `data/weights/<name>/` (`weights`:
    {modality: name of PAPER_WEIGHTS}); '' (the default) leaves them to
    `--config.model.encoder.pretrained.<modality>=PATH` (unset: random init; a checkpoint for
    `mango_jax.encoders.load_pretrained`, see data/weights/README.md, fixes that encoder's
    shape; one-channel inputs get the RGB patch kernel summed over colours)."""
    if value not in ("", "paper"):
        raise ConfigError(f"pretrained={value!r}; valid: paper (or leave it out: random init)")
    for modality, name in weights.items():
        config.model.encoder.pretrained[modality] = (
            os.path.join(WEIGHTS_DIR, name) if value else
            ml_collections.config_dict.placeholder(str))


def use_pretrained(config: ml_collections.ConfigDict) -> None:
    """What a run with checkpoints needs, checked before anything is built: every configured
    checkpoint exists (else `WeightsNotFoundError` naming the path and its download command),
    image inputs are normalised with their checkpoint's statistics (rgb: its mean / std; depth,
    which goes through the colour-summed RGB kernel: their channel means, see the data config's
    depth_mean), and a pretrained (CLIP) text encoder reads CLIP ids."""
    from mango_jax.encoders.preprocessing import image_statistics

    data_config = config.data
    for modality, path in config.model.encoder.pretrained.items():
        if not path:
            continue
        if not os.path.exists(path):
            name = os.path.basename(os.path.normpath(path))
            how = (f"download it with `{download_command(name, path)}`" if name in PAPER_WEIGHTS
                   else "see data/weights/README.md")
            raise WeightsNotFoundError(f"model.encoder.pretrained.{modality}: no checkpoint at "
                                       f"{path!r}; {how}")
        kind = {"rgb": "rgb", "image": "rgb", "depth": "depth"}.get(modality)
        if kind and f"{kind}_mean" in data_config:
            mean, std = image_statistics(path)
            if kind == "rgb":
                data_config.rgb_mean, data_config.rgb_std = mean, std
            else:
                data_config.depth_mean = sum(mean) / len(mean)
                data_config.depth_std = sum(std) / len(std)
        if modality == "text" and data_config.get("tokenizer") != "clip":
            raise ConfigError(
                f"model.encoder.pretrained.text={path!r} is CLIP's text tower, which reads CLIP "
                "ids: set --config.data.form=original --config.data.tokenizer=clip "
                "--config.data.max_text_len=77 (the original release prepared with "
                "--tokenizer=CLIP_FOLDER), or use experiments/mmimdb.py:pretrained=paper")


def set_runlocal(config: ml_collections.ConfigDict) -> None:
    """Two steps at tiny sizes (8-pixel patches, D = 16, one encoder block, one block of G),
    reading data in the calling process, so a config runs end to end on fixture data."""
    config.update(num_steps=2, batch_size=8, eval_batch_size=8, log_every=1, eval_every=2,
                  checkpoint_every=2)
    config.data.update(num_workers=0, num_threads=1, prefetch_batches=1)
    config.model.update(dim=16, decoder_width=16)
    config.model.encoder.update(patch_size=8, depth=1, num_heads=2, vector_hidden=32,
                                text_max_len=16)
    config.model.fusion.flow.update(num_blocks=1, num_heads=2, coupling_hidden=16)
    config.optimizer.warmup_steps = 1
