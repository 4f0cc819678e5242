"""MANGO on SUN RGB-D semantic segmentation (37 classes; paper Tables 1, 4-7).

    python -m experiments.main --config=experiments/sunrgbd.py --workdir=runs/sun
    python -m experiments.main --config=experiments/sunrgbd.py:flow=attnflow,blocks=16

Arguments as in experiments/nyudv2.py: flow, blocks, partitions, latent, fusion, pretrained,
runlocal.

The protocol and every choice the paper leaves open are NYUDv2's: only the dataset differs, and
experiments/nyudv2.py (`segmentation_config`) sets the values: MAE ViT-B/16 per modality
(`pretrained=paper`: `data/weights/vit-mae-base/`; or `--config.model.encoder.pretrained.rgb=PATH`,
`.depth=PATH`), 256 tokens per modality, L = 12, λ = 0.01, 256x256 inputs, TokenFusion's AdamW
(6e-5, weight decay 0.01, 1,500 warm-up, poly power 1), batch 8.
Specific to SUN RGB-D:
- Labels 0-37 on disk, 0 (unlabelled) -> 255; depth / 255 as one channel.
- Steps: the same 40,000 (TokenFusion's poly horizon; its code has no SUN RGB-D schedule),
  about 60 epochs of the 5,285 training images.
- Eval: the 5,050 test images, single scale, logits resized to each label's size; final step in
  results.json, best-mIoU checkpoint (every 2,000 steps) kept.
"""

from __future__ import annotations

from experiments.nyudv2 import segmentation_config


def get_config(arg: str | None = None):
    return segmentation_config("sunrgbd", arg)
