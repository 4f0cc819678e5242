"""MANGO on MM-IMDB movie-genre classification (poster + plot, 23 genres, multi-label; Table 3).

    python -m experiments.main --config=experiments/mmimdb.py --workdir=runs/mmimdb
    python -m experiments.main --config=experiments/mmimdb.py:form=original,blocks=8
    python -m experiments.main --config=experiments/mmimdb.py:fusion=late+lrtf+mi_matrix
    python -m experiments.main --config=experiments/mmimdb.py:pretrained=paper  # MAE + CLIP

Arguments: form (hdf5: MultiBench's `multimodal_imdb.hdf5`, the split of DynMM that the paper
uses, 15,552 / 2,608 / 7,799; original: the `mmimdb/` release and its split.json; default hdf5,
original with pretrained=paper), fusion (a name of `mango_jax.fusion.NAMES`, several joined by
'+', or 'all'), blocks (L, default 12), pretrained (paper: the poster's E from
`data/weights/vit-mae-base/`, the plot's from `data/weights/clip-vit-base-patch16/`, see
data/weights/README.md; unset: both from random init), runlocal (2 steps at 32x16 posters,
16 tokens, D = 16, one block).

The paper: L = 12, MAE's image encoder for the poster, CLIP's text encoder for the plot,
DynMM's split and head, TokenFusion's learning hyper-parameters, 256x256 images. Where it is
silent or our code differs, we chose:
- Poster: 256x160, the size MultiBench stores (the paper's 256x256 would stretch it); the
  original form's posters are resized to the same. E: MAE ViT-B/16 (patch 16, width 768,
  12 blocks, 12 heads), loaded with pretrained=paper or
  `--config.model.encoder.pretrained.image=PATH` (a checkpoint for
  `mango_jax.encoders.load_pretrained`; the poster is then normalised with its statistics).
- Plot: with pretrained=paper, CLIP ViT-B/16's text tower (width 512, projected to D) over
  CLIP's BPE ids, 77 at most: the original release prepared with `--tokenizer=CLIP_FOLDER`
  (`data.tokenizer='clip'`; the HDF5 holds only its own word indices, so form=hdf5 is refused
  there). Without it: token ids (the HDF5's own, or the original form's word vocabulary), 256
  at most, into a text transformer of the ViT's shape trained from scratch.
- Tokens: the poster gives 16 x 10 = 160 patches, the plot 256 positions. MMCA pairs the two
  modalities token by token, so `model.tokens_per_modality` = 160: the poster keeps its patch
  grid and the plot's 256 positions are resampled by 160 learned queries whose attention skips
  the padding, so G sees 320 tokens and none of them is a padding position.
- G: package defaults (8 heads, coupling width 512, contiguous IMCA halves), D = 768: 325M
  parameters in all (poster E 86M, text E 111M, G 129M); λ = 0.01. Head:
  mean-pooled Z, LayerNorm, dropout 0.1, linear to 23 logits; loss binary cross-entropy.
- Optimiser: TokenFusion's AdamW (6e-5, weight decay 0.01, poly power 1 to 0; what differs
  from TokenFusion: experiments/nyudv2.py), with warm-up scaled to the shorter run: 300 steps
  (its 1,500 of 40,000). Batch 128 (MultiBench's), 50 epochs = 6,075 steps (MultiBench: up to
  1,000 epochs with early stopping on validation).
- Eval: sigmoid > 0.5, micro and macro F1 over a whole split, on val (the paper's 2,608) and
  test (7,799; the report's Table 3 reads test) at the final step; the best-micro-F1 checkpoint
  (validated every 5 epochs) is kept.
"""

from __future__ import annotations

from experiments.common import (
    base_config,
    check_flow,
    parse_arg,
    select_fusion,
    set_pretrained,
    set_runlocal,
)
from mango_jax import flows
from mango_jax.data.mmimdb import CLIP_NEEDS_ORIGINAL
from mango_jax.data.tokenizer import CONTEXT_LENGTH
from mango_jax.errors import ConfigError

FORMS = {"hdf5": "multibench", "original": "original"}
ARGS = {"form": "", "fusion": "mango", "blocks": 12, "pretrained": "", "runlocal": False}


def get_config(arg: str | None = None):
    args = parse_arg(arg, ARGS)
    check_flow(args)
    form = args.form or ("original" if args.pretrained else "hdf5")
    if form not in FORMS:
        raise ConfigError(f"form={args.form!r}; valid: {'|'.join(FORMS)}")
    if args.pretrained and form == "hdf5":
        raise ConfigError(f"pretrained={args.pretrained} reads the plot with CLIP's text tower. "
                          + CLIP_NEEDS_ORIGINAL)
    config = base_config("mmimdb", "mmimdb")
    config.data.form = FORMS[form]
    config.data.modalities = ("image", "text")
    config.data.image_size = (256, 160)
    config.data.max_text_len = 256
    if args.pretrained:  # CLIP's ids, 77 at most
        config.data.tokenizer = "clip"
        config.data.max_text_len = CONTEXT_LENGTH

    # E: MAE ViT-B/16 for the poster, a text transformer of its shape (or CLIP's) for the plot.
    # The poster's 16 x 10 patches are the token count; the plot is resampled to it.
    config.model.update(dim=768, tokens_per_modality=160, head_dropout=0.1)
    config.model.encoder.update(patch_size=16, depth=12, num_heads=12, mlp_ratio=4.0,
                                text_max_len=config.data.max_text_len)
    set_pretrained(config, args.pretrained,
                   {"image": "vit-mae-base", "text": "clip-vit-base-patch16"})
    # G (at the package defaults) and λ.
    config.model.fusion.nll_weight = 0.01
    config.model.fusion.flow.update(
        layer="mango", num_blocks=args.blocks, block_pattern=flows.DEFAULT_BLOCK_PATTERN,
        num_heads=8, coupling_hidden=512)

    # TokenFusion's AdamW, warm-up scaled to the shorter run; 50 epochs at batch 128.
    config.optimizer.update(learning_rate=6e-5, weight_decay=0.01, b1=0.9, b2=0.999, eps=1e-8,
                            warmup_steps=300, schedule="poly", poly_power=1.0,
                            end_lr_factor=0.0, grad_clip_norm=1.0)
    config.update(batch_size=128, eval_batch_size=256, num_steps=0, num_epochs=50,
                  log_every=50, eval_every=605, checkpoint_every=605,
                  best_metric="micro_f1", best_mode="max", eval_splits=("val", "test"))

    if args.runlocal:
        set_runlocal(config)
        config.data.image_size = (32, 16)
        config.data.max_text_len = 16
        config.model.tokens_per_modality = 8
    select_fusion(config, args.fusion, dense=False)  # last: a baseline takes G's depth
    return config
