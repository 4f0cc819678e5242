"""MANGO on NYUDv2 RGB-D semantic segmentation (40 classes; paper Tables 1, 4-7).

    python -m experiments.main --config=experiments/nyudv2.py --workdir=runs/nyu
    python -m experiments.main --config=experiments/nyudv2.py:flow=glow --workdir=runs/nyu_glow
    python -m experiments.main --config=experiments/nyudv2.py:partitions=mmca   # Table 5
    python -m experiments.main --config=experiments/nyudv2.py:blocks=6,latent=false  # Tables 6-7
    python -m experiments.main --config=experiments/nyudv2.py:fusion=tokenfusion+geminifusion
    python -m experiments.main --config=experiments/nyudv2.py:runlocal --config.data.data_dir=D

Arguments: flow (mango|realnvp|glow|flowpp|attnflow: G's layer, Table 4), blocks (L, default 12;
the tables use 6, 8, 12, 16; baselines take it as their layer count), partitions
(mmca|mmca+imca|mmca+imca+lica, Table 5: the ICA kinds of a MANGO block; a left-out kind's layers
are removed, the coupling layer stays: 2 ICA + coupling, 6 ICA + coupling, or the paper's
8 ICA + coupling; `ica_mixing_budget` is shared by fewer layers, so each may mix more), latent
(true|false, Tables 6-7: the ViT blocks of E, or only its patch embedding), fusion (a name of
`mango_jax.fusion.NAMES` that keeps tokens, several joined by '+', or 'all'), runlocal (2 steps
at 32x32 pixels, D = 16, one block: a smoke run on fixture data), pretrained (paper: MAE's
ViT-B/16 from `data/weights/vit-mae-base/` for both modalities; unset: random init).

The paper's protocol: L = 12 blocks of 8 ICA layers (2 MMCA, 4 IMCA, 2 LICA) + one affine
coupling layer; MAE encoders for RGB and depth; TokenFusion's task head and learning
hyper-parameters; 256x256 inputs. Where it is silent or our code differs, we chose:
- E: MAE ViT-B/16 (patch 16, width 768, 12 blocks, 12 heads) per modality, the smallest MAE
  checkpoint: `pretrained=paper` loads `data/weights/vit-mae-base/` (transformers' ViTMAE
  folder; download command in data/weights/README.md) for rgb and depth, or
  `--config.model.encoder.pretrained.rgb=PATH` / `.depth=PATH` any checkpoint
  `mango_jax.encoders.load_pretrained` reads (the depth encoder gets the RGB patch kernel
  summed over colours); unset, E starts from random weights. With a checkpoint, rgb is
  normalised with its statistics and depth with their channel means (data `depth_mean` /
  `depth_std`: 0.449 / 0.226 for MAE's ImageNet statistics), as a grey ImageNet image.
  D = 768 throughout (our encoders and G share the width), so the model has 308M parameters
  (E 2 x 85M, G 136M, head 0.8M) against the paper's 72.9M (Table 8), which two ViT-B
  encoders alone exceed; results.json records ours (`meta.params`).
- Tokens: 256 per modality (a 16x16 patch grid), 512 in G; no resampling.
- G: 8 heads, coupling hidden width 512, contiguous IMCA halves, `ica_mixing_budget` 4.8
  (the package defaults). λ (NLL weight, bits/dim) = 0.01.
- Head: our dense decoder (tokens -> patch grid -> 4 bilinear x2 upsamplings) at width 256,
  SegFormer-B1's decoder width, in place of TokenFusion's SegFormer MLP head.
- Data: depth / 255 as one channel (`depth_scale='geminifusion'`; official-.mat users set
  'tokenfusion'); training scale 0.5-2.0, 256 crop, flip; eval squashes to 256x256.
- Optimiser: TokenFusion's AdamW (`semantic_segmentation/main.py`, PolyWarmupAdamW): 6e-5,
  weight decay 0.01, betas (0.9, 0.999), 1,500 linear warm-up iterations, then poly decay with
  power 1 to 0 over 40,000 iterations. Not expressible here: its 10x rate for the decoder and its
  three restarted stages (peaks 6e-5, 3e-5, 1.5e-5); one poly decay over the whole run stands in
  for them. Its no-decay on norm weights is nearest to `optimizer.decay_exclusions` (MAE's set,
  also sparing biases, positions and class token; by default on the pretrained encoders).
  Gradient clipping (norm 1) is ours: it guards the flow's NLL against early spikes.
  Batch 8 (TokenFusion: 6, which 4 or 8 devices cannot split), 40,000 steps (about 400 epochs;
  TokenFusion: 3 x 100 epochs at batch 6, about 40,000 iterations).
- Baselines: TokenFusion and GeminiFusion share their transformer layers between RGB and
  depth, with a LayerNorm per modality, as their papers do on RGB-D (`shared_weights`).
- Eval: single scale; logits resized to each label's size, argmax, 255 ignored, one confusion
  matrix over the 654 test images (pixel acc, mean acc, mIoU). results.json scores the final
  step; TokenFusion reported its best epoch on this same test split, which the kept best-mIoU
  checkpoint (evaluated every 2,000 steps) reproduces if wanted.
"""

from __future__ import annotations

from experiments.common import (
    PARTITION_PATTERNS,
    base_config,
    check_flow,
    parse_arg,
    select_fusion,
    set_pretrained,
    set_runlocal,
)

ARGS = {"flow": "mango", "blocks": 12, "partitions": "mmca+imca+lica", "latent": True,
        "fusion": "mango", "pretrained": "", "runlocal": False}


def segmentation_config(dataset: str, arg: str | None):
    """The protocol above on `dataset` ('nyudv2' or 'sunrgbd', whose file calls this)."""
    args = parse_arg(arg, ARGS)
    check_flow(args)
    config = base_config(dataset, dataset)
    config.data.image_size = 256
    config.homogeneous_modalities = True  # RGB-depth: TokenFusion and GeminiFusion share layers

    # E: MAE ViT-B/16 per modality; its width is the model's D, shared by G and the head.
    config.model.update(dim=768, latent_model=args.latent, decoder_width=256)
    config.model.encoder.update(patch_size=16, depth=12, num_heads=12, mlp_ratio=4.0)
    set_pretrained(config, args.pretrained, {"rgb": "vit-mae-base", "depth": "vit-mae-base"})
    # G and λ.
    config.model.fusion.nll_weight = 0.01
    config.model.fusion.flow.update(
        layer=args.flow, num_blocks=args.blocks, block_pattern=PARTITION_PATTERNS[args.partitions],
        num_heads=8, coupling_hidden=512, ica_mixing_budget=4.8)

    # TokenFusion's AdamW; 40,000 steps at batch 8.
    config.optimizer.update(learning_rate=6e-5, weight_decay=0.01, b1=0.9, b2=0.999, eps=1e-8,
                            warmup_steps=1500, schedule="poly", poly_power=1.0,
                            end_lr_factor=0.0, grad_clip_norm=1.0)
    config.update(batch_size=8, eval_batch_size=16, num_steps=40_000, num_epochs=0,
                  log_every=100, eval_every=2_000, checkpoint_every=2_000,
                  best_metric="miou", best_mode="max", eval_splits=("test",))

    if args.runlocal:
        set_runlocal(config)
        config.data.image_size = 32
    select_fusion(config, args.fusion, dense=True)  # last: a baseline takes G's depth
    return config


def get_config(arg: str | None = None):
    return segmentation_config("nyudv2", arg)
