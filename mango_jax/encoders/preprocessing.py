"""The input statistics a pretrained image encoder expects."""

from __future__ import annotations

import json
import os

from mango_jax.data.imaging import IMAGENET_MEAN, IMAGENET_STD


def image_statistics(path: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) per channel of inputs scaled to [0, 1], for the checkpoint at `path` (a file
    or a model folder): `image_mean` / `image_std` of the folder's `preprocessor_config.json`
    (the hub's record of how the model was trained), else ImageNet's, which MAE was trained with
    and which its release (timm / `mae_pretrain_vit_base`) implies without writing them down."""
    folder = path if os.path.isdir(path) else os.path.dirname(path)
    file = os.path.join(folder, "preprocessor_config.json")
    if not os.path.isfile(file):
        return tuple(IMAGENET_MEAN), tuple(IMAGENET_STD)
    try:
        with open(file, encoding="utf-8") as f:
            config = json.load(f)
        mean, std = (tuple(float(x) for x in config[k]) for k in ("image_mean", "image_std"))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{file!r}: expected JSON with 'image_mean' and 'image_std' lists of "
                         f"3 numbers ({type(e).__name__}: {e})") from e
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise ValueError(f"{file!r}: image_mean {mean} / image_std {std} must be 3 numbers each, "
                         "std positive")
    return mean, std
