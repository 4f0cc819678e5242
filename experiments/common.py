"""What every experiment config shares: the run fields and the `file.py:arg` parser.

Config files follow big_vision: `get_config(arg)` where `arg` is `"k=v,k2=v2,flag"`, e.g.
`--config=experiments/nyudv2.py:flow=glow,blocks=8`; any field is overridden afterwards with
`--config.optimizer.learning_rate=3e-4`.
"""

from __future__ import annotations

import os

import ml_collections

from mango_jax import data, flows, fusion, model, robustness
from mango_jax.fusion import vector as fusion_vector
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
    inception_weights: FID Inception-v3 `.npz` (mango_jax.metrics.convert_inception); when set,
    translation runs also report FID and KID. dense_task: the task head decodes a token grid
    (set by `select_fusion`): the compared methods take their dense defaults.
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
    config.inception_weights = ml_collections.config_dict.placeholder(str)
    config.dense_task = False
    config.robustness = robustness.default_config()  # python -m experiments.robustness
    return config


def set_fusion(config: ml_collections.ConfigDict, name: str) -> None:
    """Switches the model to fusion method `name` (its dense defaults where
    `config.dense_task`), keeping MANGO's depth as the budget."""
    depth = config.model.fusion.flow.num_blocks if config.model.fusion.name == "mango" else None
    config.model.fusion = fusion.default_config(name, dense=config.dense_task)
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
POOLED_FUSIONS = tuple(name for name, cls in fusion.BASELINES.items()
                       if cls.__module__ == fusion_vector.__name__)


def set_flow(config: ml_collections.ConfigDict, *, layer: str, blocks: int,
             partitions: str = "mmca+imca+lica") -> None:
    """G's layer kind (Table 4), depth L (Tables 6-7) and the ICA partition kinds of a MANGO
    block (Table 5). A partition kind left out of the ablation removes its layers from every
    block (the coupling layer stays), as the table adds MMCA, then IMCA, then LICA."""
    if layer not in flows.LAYERS:
        raise ValueError(f"flow={layer!r}; valid: {'|'.join(flows.LAYERS)}")
    if blocks < 1:
        raise ValueError(f"blocks={blocks}; G needs at least one block")
    if partitions not in PARTITION_PATTERNS:
        raise ValueError(f"partitions={partitions!r}; valid: {'|'.join(PARTITION_PATTERNS)}")
    if layer != "mango" and partitions != "mmca+imca+lica":
        raise ValueError(f"partitions={partitions} ablates MANGO's block; flow={layer} has no "
                         "ICA partitions (drop one of the two arguments)")
    flow = config.model.fusion.flow
    flow.layer = layer
    flow.num_blocks = blocks
    flow.block_pattern = PARTITION_PATTERNS[partitions]


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
        raise ValueError(f"fusion {pooled} pools each modality to one vector, which a dense "
                         f"(segmentation / translation) head cannot decode; choose from {valid}")
    unknown = [m for m in methods if m not in valid]
    if unknown:
        raise ValueError(f"unknown fusion {unknown}; choose from {valid} or 'all', joined by '+'")
    if len(methods) > 1:
        config.compare = methods
    elif methods[0] != "mango":
        set_fusion(config, methods[0])


def set_mae_vit_base(config: ml_collections.ConfigDict, image_modalities) -> None:
    """E as MAE's ViT-B/16 (He et al. 2022, the paper's [14]): patch 16, width 768, 12 blocks,
    12 heads, MLP ratio 4. The width is the model's D, shared by G and the head.

    `config.model.encoder.pretrained.<modality>` (one field per image modality, unset: random
    init) takes a checkpoint path for `mango_jax.encoders.load_pretrained` (see `set_pretrained`
    and data/weights/README.md); one-channel inputs get the RGB patch kernel summed over
    colours.
    """
    config.model.dim = 768
    encoder = config.model.encoder
    encoder.patch_size = 16
    encoder.depth = 12
    encoder.num_heads = 12
    encoder.mlp_ratio = 4.0
    for modality in image_modalities:
        encoder.pretrained[modality] = ml_collections.config_dict.placeholder(str)


# The paper's checkpoints: folder name under data/weights/ -> the hub repository it comes from.
WEIGHTS_DIR = os.path.join("data", "weights")
PAPER_WEIGHTS = {"vit-mae-base": "facebook/vit-mae-base",
                 "clip-vit-base-patch16": "openai/clip-vit-base-patch16"}


class WeightsNotFoundError(FileNotFoundError):
    """A configured checkpoint is not on disk (experiments.main prints it as one line)."""


def download_command(name: str, path: str | None = None) -> str:
    """The command that puts PAPER_WEIGHTS[name] at `path` (default data/weights/<name>)."""
    path = path or os.path.join(WEIGHTS_DIR, name)
    return f"hf download {PAPER_WEIGHTS[name]} --local-dir {path}"


def set_pretrained(config: ml_collections.ConfigDict, value: str, weights: dict) -> None:
    """`pretrained=paper`: each modality's encoder from `data/weights/<name>/` (`weights`:
    {modality: name of PAPER_WEIGHTS}); '' (the default) leaves them to
    `--config.model.encoder.pretrained.<modality>=PATH` (unset: random init)."""
    if value not in ("", "paper"):
        raise ValueError(f"pretrained={value!r}; valid: paper (or leave it out: random init)")
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
            raise ValueError(
                f"model.encoder.pretrained.text={path!r} is CLIP's text tower, which reads CLIP "
                "ids: set --config.data.form=original --config.data.tokenizer=clip "
                "--config.data.max_text_len=77 (the original release prepared with "
                "--tokenizer=CLIP_FOLDER), or use experiments/mmimdb.py:pretrained=paper")


def set_tokenfusion_adamw(config: ml_collections.ConfigDict) -> None:
    """TokenFusion's segmentation optimiser (`semantic_segmentation/main.py`, PolyWarmupAdamW):
    AdamW, peak 6e-5, weight decay 0.01, betas (0.9, 0.999), 1,500 linear warm-up iterations,
    then poly decay with power 1.0 to zero. Not expressible here: its 10x rate for the decoder
    and its three restarted stages (peaks 6e-5, 3e-5, 1.5e-5); one poly decay over the whole
    run stands in for them. Its no-decay on norm weights is nearest to
    `optimizer.decay_exclusions` (MAE's set, also sparing biases, positions and class token;
    by default on the pretrained encoders). Gradient clipping (norm 1) is ours: it
    guards the flow's NLL against early spikes."""
    opt = config.optimizer
    opt.learning_rate = 6e-5
    opt.weight_decay = 0.01
    opt.b1, opt.b2, opt.eps = 0.9, 0.999, 1e-8
    opt.warmup_steps = 1500
    opt.schedule = "poly"
    opt.poly_power = 1.0
    opt.end_lr_factor = 0.0
    opt.grad_clip_norm = 1.0


def set_runlocal(config: ml_collections.ConfigDict) -> None:
    """Two steps at tiny sizes (8-pixel patches, D = 16, one encoder block, one block of G),
    reading data in the calling process, so a config runs end to end on fixture data."""
    config.num_steps = 2
    config.batch_size = 8
    config.eval_batch_size = 8
    config.log_every = 1
    config.eval_every = 2
    config.checkpoint_every = 2
    config.data.num_workers = 0
    config.data.num_threads = 1
    config.data.prefetch_batches = 1
    model = config.model
    model.dim = 16
    model.decoder_width = 16
    model.encoder.patch_size = 8
    model.encoder.depth = 1
    model.encoder.num_heads = 2
    model.encoder.vector_hidden = 32
    model.encoder.text_max_len = 16
    flow = model.fusion.flow
    flow.num_blocks = 1
    flow.num_heads = 2
    flow.coupling_hidden = 16
    config.optimizer.warmup_steps = 1


IMAGE_ARGS = {"flow": "mango", "blocks": 12, "latent": True, "fusion": "mango",
              "pretrained": "", "runlocal": False}


def image_model(config: ml_collections.ConfigDict, args, *,
                partitions: str = "mmca+imca+lica") -> None:
    """The model of the image-to-image configs (segmentation, translation): MAE ViT-B/16 on
    each modality (`pretrained=paper`: `data/weights/vit-mae-base/` for each), G at the
    requested layer / depth / partitions, λ = 0.01, and the tiny sizes (32x32 pixels) under
    `runlocal`. Sets the fusion last."""
    set_mae_vit_base(config, config.data.modalities)
    set_pretrained(config, args.pretrained, dict.fromkeys(config.data.modalities, "vit-mae-base"))
    set_flow(config, layer=args.flow, blocks=args.blocks, partitions=partitions)
    config.model.latent_model = args.latent
    config.model.fusion.nll_weight = 0.01
    config.model.decoder_width = 256
    if args.runlocal:
        set_runlocal(config)
        config.data.image_size = 32
    select_fusion(config, args.fusion, dense=True)


def segmentation_config(dataset: str, arg: str | None) -> ml_collections.ConfigDict:
    """NYUDv2 / SUN RGB-D under the paper's protocol (the choices: experiments/nyudv2.py)."""
    args = parse_arg(arg, {**IMAGE_ARGS, "partitions": "mmca+imca+lica"})
    config = base_config(dataset, dataset)
    config.data.image_size = 256
    set_tokenfusion_adamw(config)
    config.batch_size = 8
    config.eval_batch_size = 16
    config.num_steps = 40_000
    config.log_every = 100
    config.eval_every = 2_000
    config.checkpoint_every = 2_000
    config.best_metric = "miou"
    config.eval_splits = ("test",)
    image_model(config, args, partitions=args.partitions)
    return config
