"""SUN RGB-D: RGB-D semantic segmentation, 37 classes, 5,285 train / 5,050 test.

Source form (DFormer / GeminiFusion): `train.txt` and `test.txt` in `--manual_dir`, each line
three whitespace-separated relative paths `RGB/train_0.jpg labels/train_0.png
Depth/train_0.png` (image, label, depth). Labels are stored 0-37 with 0 = unlabelled: we
subtract 1, so 0 wraps to 255 = ignore (values above 37 are refused). Depth is a
single-channel PNG (usually 16 bit), stored as found; see `depth_scale` in
`mango_jax.data.default_config`. Image sizes vary across the sensors (e.g. 530 x 730,
427 x 561); eval labels are padded with 255 to the largest size (`eval_label='original'`).
"""

from __future__ import annotations

import os

import tensorflow_datasets as tfds

from mango_jax.data import core, segmentation
from mango_jax.data.core import DataNotFoundError

NUM_CLASSES = 37
CLASS_NAMES = (
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf",
    "picture", "counter", "blinds", "desk", "shelves", "curtain", "dresser", "pillow", "mirror",
    "floor mat", "clothes", "ceiling", "books", "fridge", "tv", "paper", "towel",
    "shower curtain", "box", "whiteboard", "person", "night stand", "toilet", "sink", "lamp",
    "bathtub", "bag",
)
LISTS = {"train": "train.txt", "test": "test.txt"}
COLUMNS = ("rgb", "label", "depth")

MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Put the DFormer / GeminiFusion SUN RGB-D folder in --manual_dir: train.txt (5,285 lines) and
test.txt (5,050 lines), each line `RGB/train_0.jpg labels/train_0.png Depth/train_0.png`
(paths relative to the folder; labels 0-37 with 0 = unlabelled; depth a single-channel PNG),
with the RGB/, labels/ and Depth/ folders they name.
"""


class Sunrgbd(segmentation.SegmentationBuilder, skip_registration=True):
    """SUN RGB-D 37-class RGB-D segmentation."""

    name = "sunrgbd"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "DFormer / GeminiFusion folder form."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS

    NUM_CLASSES = NUM_CLASSES
    CLASS_NAMES = CLASS_NAMES
    DESCRIPTION = "SUN RGB-D, 37-class RGB-D semantic segmentation."
    HOMEPAGE = "https://rgbd.cs.princeton.edu/"

    def _split_generators(self, dl_manager):
        root = os.fspath(dl_manager.manual_dir)
        check_layout(root)
        self._start_metadata("folder")
        return self._folder_splits(root, LISTS, columns=COLUMNS,
                                   mapping=segmentation.shift_mapping(NUM_CLASSES),
                                   depth_format="as found in the Depth/ PNGs")


def check_layout(root: str) -> None:
    core.require_dir(root, "the SUN RGB-D folder (see data/sunrgbd/README.md)")
    missing = [f for f in LISTS.values() if not os.path.isfile(os.path.join(root, f))]
    if missing:
        raise DataNotFoundError(
            f"{root!r} lacks {' and '.join(missing)}.\n{MANUAL_DOWNLOAD_INSTRUCTIONS}"
        )


class SunrgbdSpec(segmentation.SegmentationSpec):
    name = "sunrgbd"
    builder_cls = Sunrgbd

    def check_manual_dir(self, root: str) -> None:
        check_layout(root)


SPEC = SunrgbdSpec()
