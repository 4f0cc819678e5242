"""MANGO (or any fusion method) on your own paired dataset (`mango_jax.data.paired`).

    python -m mango_jax.data.prepare --dataset=paired --manual_dir=PATH --name=NAME
    python -m experiments.main --config=experiments/paired.py:name=NAME --workdir=runs/NAME
    python -m experiments.main --config=experiments/paired.py:name=NAME,fusion=concat+mbt
    python -m experiments.main --config=experiments/paired.py:name=NAME,runlocal   # smoke run

Arguments: name (the prepared dataset, required), data_dir (where it was prepared, default
data), modalities (two manifest columns joined by '+', default both in manifest order), fusion
(names from `mango_jax.fusion.NAMES` joined by '+', or 'all'), flow (G's layer kind), blocks
(flow blocks / fusion layers), dim (token width D; 0: from the data), tokens (tokens per
modality; 0: from the data), patch (ViT patch; 0: from the data), epochs, batch, runlocal (a few
steps at tiny sizes).

Sizes from the data: the recipe is `experiments/mfeat.py`'s (a small-data setting: D = 64, MLP
tokenizers of 8 tokens and width 256, 4 MANGO blocks, dropout 0.2, 60 epochs, batch 64); the
patch is the smallest of 4, 8, 16, 32 that divides every image side and gives at most 256
patches; text keeps its longest train length; when the two modalities' token counts differ,
both are resampled to the smaller count (dense tasks: to the image's patch count, which the
decoder lays out on the grid). The batch is at most the train split, in multiples of 8.
"""

from __future__ import annotations

from experiments.common import base_config, check_flow, parse_arg, select_fusion, set_runlocal
from mango_jax import encoders, flows
from mango_jax.data import paired
from mango_jax.errors import ConfigError

ARGS = {"name": "", "data_dir": "data", "modalities": "", "fusion": "mango", "flow": "mango",
        "blocks": 4, "dim": 0, "tokens": 0, "patch": 0, "epochs": 60, "batch": 64,
        "runlocal": False}


def choose_patch(shapes, max_tokens: int) -> int:
    """The smallest patch in (4, 8, 16, 32) dividing every image side with <= max_tokens
    patches per image; else the largest power of two dividing every side."""
    sides = [s for shape in shapes for s in shape[:2]]
    for p in (4, 8, 16, 32):
        if all(s % p == 0 for s in sides) and all(
                (h // p) * (w // p) <= max_tokens for h, w, *_ in shapes):
            return p
    p = 32
    while any(s % p for s in sides):
        p //= 2
    return p


def get_config(arg: str | None = None):
    args = parse_arg(arg, ARGS)
    check_flow(args)
    if not args.name:
        raise ConfigError("experiments/paired.py needs name=NAME, the prepared dataset (python "
                         "-m mango_jax.data.prepare --dataset=paired --manual_dir=PATH "
                         "--name=NAME)")
    meta = paired.read_metadata(args.data_dir, args.name)
    config = base_config(f"paired_{args.name}", "paired")
    config.data.data_dir = args.data_dir
    config.data.paired_name = args.name
    modalities = (tuple(args.modalities.split("+")) if args.modalities
                  else tuple(meta["manifest_columns"]))
    config.data.modalities = modalities
    info = paired.dataset_info(args.name, meta, modalities)
    dense = info.task in ("segmentation", "translation")

    model = config.model  # experiments/mfeat.py's recipe
    model.update(dim=args.dim or 64, head_dropout=0.2)
    model.encoder.update(vector_tokens=8, vector_hidden=256, dropout=0.2)
    model.fusion.nll_weight = 0.01
    model.fusion.flow.update(layer=args.flow, num_blocks=args.blocks,
                             block_pattern=flows.DEFAULT_BLOCK_PATTERN, num_heads=4,
                             coupling_hidden=128)

    config.optimizer.update(learning_rate=2e-3, weight_decay=0.05, warmup_steps=50)
    config.update(batch_size=max(8, min(args.batch, info.split_sizes["train"] // 8 * 8)),
                  eval_batch_size=64 if dense or "image" in info.modality_kinds.values() else 200,
                  num_steps=0, num_epochs=args.epochs, log_every=100, eval_every=300,
                  checkpoint_every=300)
    config.best_metric = {"multiclass": "accuracy", "multilabel": "micro_f1",
                          "segmentation": "miou", "translation": "mae"}[info.task]
    config.best_mode = "min" if info.task == "translation" else "max"
    config.eval_splits = tuple(s for s in ("val", "test") if s in info.split_sizes)
    if "val" not in info.split_sizes:  # Nothing to validate on: evaluate at the end only.
        config.eval_every = 0
        config.best_metric = None

    if args.runlocal:
        set_runlocal(config)
        config.update(num_steps=6, eval_every=3 if "val" in info.split_sizes else 0,
                      checkpoint_every=3, eval_batch_size=16)
        model.encoder.vector_tokens = 4
    images = [info.modality_shapes[m] for m in modalities if info.modality_kinds[m] == "image"]
    if images:
        model.encoder.patch_size = args.patch or choose_patch(images,
                                                              16 if args.runlocal else 256)
    if "tokens" in info.modality_kinds.values():
        model.encoder.text_max_len = max(info.modality_shapes[m][0] for m in modalities
                                         if info.modality_kinds[m] == "tokens")
    counts = [encoders.natural_tokens(info.modality_kinds[m], info.modality_shapes[m],
                                      model.encoder) for m in modalities]
    if args.tokens:
        model.tokens_per_modality = args.tokens
    elif counts[0] != counts[1]:
        first_image = next((c for m, c in zip(modalities, counts, strict=True)
                            if info.modality_kinds[m] == "image"), None)
        model.tokens_per_modality = first_image if dense else min(counts)
    select_fusion(config, args.fusion, dense=dense)  # last: a baseline takes G's depth
    return config
