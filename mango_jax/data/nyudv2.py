"""NYUDv2 (NYU Depth v2, labelled subset): RGB-D semantic segmentation, 40 classes, 795 / 654.

Two source forms, told apart by what is in `--manual_dir`:

* **folder** (TokenFusion / GeminiFusion): `train.txt` and `val.txt` (the 654 test images), each
  line three whitespace-separated relative paths `rgb/000003.png masks/000003.png
  depth/000003.png`. Masks hold class ids 0-39 and 255 = ignore (any other value is refused);
  depth is a raw single-channel PNG (not HHA). Images are stored as found (white border already
  cropped in this form).
* **official**: `nyu_depth_v2_labeled.mat` (MATLAB v7.3 = HDF5, read with h5py; arrays are
  stored transposed: `images` (1449, 3, 640, 480), `depths` (1449, 640, 480) in metres, `labels`
  (1449, 640, 480) with 894 classes, 0 = unlabelled), `splits.mat` (`trainNdxs` 795,
  `testNdxs` 654, 1-based) and `classMapping40.mat` (`mapClass`, 894 entries with values 1-40),
  both MATLAB v5 (scipy.io.loadmat; v7.3 copies are read with h5py too). The 40-class label is
  `([0] + mapClass)[label894] - 1` with 0 -> 255. Depth is stored as a 16-bit PNG in
  millimetres; images are kept at 480 x 640 (the white border is not cropped).

Depth scaling is a config choice (`depth_scale`): 'geminifusion' (default; value / 255, one
channel) or 'tokenfusion' (value / 5000, repeated to three channels). It divides the stored PNG
values, so with the official form (16-bit millimetres) 'tokenfusion' gives metres / 5 and
'geminifusion' is not meaningful: set `depth_scale='tokenfusion'` there.
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow_datasets as tfds

from mango_jax.data import core, segmentation
from mango_jax.data.core import DataFormatError, DataNotFoundError

NUM_CLASSES = 40
CLASS_NAMES = (
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf",
    "picture", "counter", "blinds", "desk", "shelves", "curtain", "dresser", "pillow", "mirror",
    "floor mat", "clothes", "ceiling", "books", "refrigerator", "television", "paper", "towel",
    "shower curtain", "box", "whiteboard", "person", "night stand", "toilet", "sink", "lamp",
    "bathtub", "bag", "otherstructure", "otherfurniture", "otherprop",
)
LABELED_MAT = "nyu_depth_v2_labeled.mat"
SPLITS_MAT = "splits.mat"
MAPPING_MAT = "classMapping40.mat"
FOLDER_LISTS = {"train": "train.txt", "test": "val.txt"}
COLUMNS = ("rgb", "label", "depth")

MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Put ONE of these in the folder you pass as --manual_dir:
 (a) the TokenFusion / GeminiFusion NYUDv2 folder: train.txt (795 lines) and val.txt (654 lines),
     each line `rgb/000003.png<TAB>masks/000003.png<TAB>depth/000003.png` (paths relative to the
     folder), with the rgb/, masks/ (ids 0-39, 255 = ignore) and depth/ (single-channel PNG)
     folders they name;
 (b) the official files: nyu_depth_v2_labeled.mat (MATLAB v7.3, 2.8 GB, from
     http://horatio.cs.nyu.edu/mit/silberman/nyu_depth_v2/nyu_depth_v2_labeled.mat),
     splits.mat (trainNdxs / testNdxs) and classMapping40.mat (mapClass, 894 -> 40 classes).
"""


def detect_form(manual_dir: str) -> str:
    core.require_dir(manual_dir, "the NYUDv2 folder (see data/nyudv2/README.md)")
    has_mat = os.path.exists(os.path.join(manual_dir, LABELED_MAT))
    has_lists = os.path.exists(os.path.join(manual_dir, FOLDER_LISTS["train"]))
    if has_mat and has_lists:
        raise DataFormatError(
            f"{manual_dir!r} holds both {LABELED_MAT} and {FOLDER_LISTS['train']}: pass a folder "
            "with only one form of NYUDv2."
        )
    if has_mat:
        return "official"
    if has_lists:
        return "folder"
    raise DataNotFoundError(
        f"{manual_dir!r} holds neither {FOLDER_LISTS['train']} + {FOLDER_LISTS['test']} (the "
        f"TokenFusion/GeminiFusion folder) nor {LABELED_MAT} + {SPLITS_MAT} + {MAPPING_MAT} "
        f"(the official files).\n{MANUAL_DOWNLOAD_INSTRUCTIONS}"
    )


# --------------------------------------------------------------------------------------------
# Official form.


def load_small_mat(path: str, keys: tuple[str, ...], what: str) -> dict[str, np.ndarray]:
    """Reads `keys` from a MATLAB v5 file (scipy) or a v7.3 one (h5py), as flat arrays."""
    core.require_file(path, what)
    import h5py
    import scipy.io

    try:
        if h5py.is_hdf5(path):  # MATLAB v7.3.
            with h5py.File(path, "r") as f:
                arrays = {k: np.asarray(f[k]) for k in keys if k in f}
                found = sorted(f.keys())
        else:  # MATLAB v5 (the official release).
            mat = scipy.io.loadmat(path)
            arrays = {k: mat[k] for k in keys if k in mat}
            found = sorted(k for k in mat if not k.startswith("__"))
    except Exception as e:
        raise DataFormatError(f"{path!r} is not a readable MATLAB file ({what}): {e}") from e
    for k in keys:
        if k not in arrays:
            raise DataFormatError(
                f"{path!r} has no key {k!r} ({what}); keys found: {found}."
            )
    return {k: np.asarray(v).reshape(-1) for k, v in arrays.items()}


def read_official_meta(manual_dir: str, num_images: int):
    splits = load_small_mat(
        os.path.join(manual_dir, SPLITS_MAT), ("trainNdxs", "testNdxs"),
        "the NYUDv2 split: trainNdxs (795) and testNdxs (654), 1-based image indices",
    )
    out = {}
    for split, key in (("train", "trainNdxs"), ("test", "testNdxs")):
        idx = splits[key]
        if idx.size == 0 or np.any(idx != np.round(idx)) or idx.min() < 1 or idx.max() > num_images:
            raise DataFormatError(
                f"{os.path.join(manual_dir, SPLITS_MAT)!r}: {key} must hold 1-based indices in "
                f"1..{num_images} (the images in {LABELED_MAT}); got values "
                f"{idx.min() if idx.size else None}..{idx.max() if idx.size else None}."
            )
        out[split] = idx.astype(np.int64) - 1
    if np.intersect1d(out["train"], out["test"]).size:
        raise DataFormatError(f"{SPLITS_MAT}: trainNdxs and testNdxs overlap.")
    mapping = load_small_mat(
        os.path.join(manual_dir, MAPPING_MAT), ("mapClass",),
        "the 894 -> 40 class mapping mapClass (values 1-40)",
    )["mapClass"]
    if mapping.size == 0 or np.any(mapping != np.round(mapping)) or mapping.min() < 1 or (
        mapping.max() > NUM_CLASSES
    ):
        raise DataFormatError(
            f"{os.path.join(manual_dir, MAPPING_MAT)!r}: mapClass values must be integers 1-40."
        )
    # label40 = ([0] + mapClass)[label894] - 1, with 0 -> 255.
    lut = np.concatenate([[0], mapping.astype(np.int64)]) - 1
    lut[lut < 0] = segmentation.IGNORE
    return out, lut


def open_labeled_mat(path: str):
    import h5py

    core.require_file(path, "the NYUDv2 labelled data, MATLAB v7.3 (HDF5)")
    if not h5py.is_hdf5(path):
        raise DataFormatError(
            f"{path!r} is not a MATLAB v7.3 (HDF5) file; nyu_depth_v2_labeled.mat is v7.3."
        )
    f = h5py.File(path, "r")
    try:
        for key in ("images", "depths", "labels"):
            if key not in f:
                raise DataFormatError(
                    f"{path!r} has no dataset {key!r}; keys found: {sorted(f.keys())}."
                )
        images, depths, labels = f["images"], f["depths"], f["labels"]
        if images.ndim != 4 or images.shape[1] != 3:
            raise DataFormatError(
                f"{path!r}: 'images' has shape {images.shape}; expected (N, 3, W, H) as MATLAB "
                "v7.3 stores 480 x 640 x 3 x N transposed, i.e. (1449, 3, 640, 480)."
            )
        n, _, w, h = images.shape
        for key, ds in (("depths", depths), ("labels", labels)):
            if ds.shape != (n, w, h):
                raise DataFormatError(
                    f"{path!r}: {key!r} has shape {ds.shape}; expected {(n, w, h)} to match "
                    f"'images' {images.shape} (N, W, H as stored)."
                )
        if w < h:
            raise DataFormatError(
                f"{path!r}: 'images' is stored as {images.shape}, i.e. (N, 3, {w}, {h}); the "
                "official file stores width before height, (1449, 3, 640, 480). Wrong axis "
                "order: was the file re-saved without MATLAB's transposition?"
            )
    except Exception:
        f.close()
        raise
    return f


def official_examples(manual_dir: str, rows: np.ndarray, lut: np.ndarray, rgb_encoding: str):
    path = os.path.join(manual_dir, LABELED_MAT)
    f = open_labeled_mat(path)
    try:
        images, depths, labels = f["images"], f["depths"], f["labels"]
        for i in rows:
            i = int(i)
            rgb = np.asarray(images[i]).transpose(2, 1, 0)
            if rgb.dtype != np.uint8:
                if rgb.min() < 0 or rgb.max() > 255:
                    raise DataFormatError(f"{path!r}: images[{i}] has values outside 0-255.")
                rgb = rgb.astype(np.uint8)
            depth_m = np.asarray(depths[i], np.float64).T
            if not np.all(np.isfinite(depth_m)) or depth_m.min() < 0:
                raise DataFormatError(f"{path!r}: depths[{i}] has negative or non-finite values.")
            depth_mm = np.clip(np.round(depth_m * 1000.0), 0, 65535).astype(np.uint16)
            lab = np.asarray(labels[i]).T.astype(np.int64)
            if lab.min() < 0 or lab.max() >= lut.size:
                raise DataFormatError(
                    f"{path!r}: labels[{i}] holds class {int(lab.max())}, out of range for the "
                    f"{lut.size - 1}-entry mapClass of {MAPPING_MAT} (expected 0-{lut.size - 1})."
                )
            yield f"{i + 1:05d}", {
                "rgb": segmentation.encode_rgb(np.ascontiguousarray(rgb), rgb_encoding),
                "depth": core.encode_png(depth_mm),
                "label": core.encode_png(lut[lab].astype(np.uint8)),
                "name": f"{LABELED_MAT}#{i + 1}",
                "height": int(rgb.shape[0]),
                "width": int(rgb.shape[1]),
            }
    finally:
        f.close()


# --------------------------------------------------------------------------------------------


class Nyudv2(segmentation.SegmentationBuilder, skip_registration=True):
    """NYUDv2 40-class RGB-D segmentation (from either source form)."""

    name = "nyudv2"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Folder (TokenFusion/GeminiFusion) and official .mat forms."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS

    NUM_CLASSES = NUM_CLASSES
    CLASS_NAMES = CLASS_NAMES
    DESCRIPTION = "NYU Depth v2 labelled subset, 40-class RGB-D semantic segmentation."
    HOMEPAGE = "https://cs.nyu.edu/~silberman/datasets/nyu_depth_v2.html"

    def _split_generators(self, dl_manager):
        root = os.fspath(dl_manager.manual_dir)
        form = detect_form(root)
        meta = self._start_metadata(form)
        if form == "official":
            f = open_labeled_mat(os.path.join(root, LABELED_MAT))
            n, _, w, h = f["images"].shape
            f.close()
            rows, lut = read_official_meta(root, n)
            meta["max_label_hw"] = [int(h), int(w)]
            meta["depth_format"] = "uint16 PNG, millimetres"
            return {s: official_examples(root, r, lut, self.rgb_encoding) for s, r in rows.items()}
        return self._folder_splits(root, FOLDER_LISTS, columns=COLUMNS,
                                   mapping=segmentation.identity_mapping(NUM_CLASSES),
                                   depth_format="as found in the depth/ PNGs")


class Nyudv2Spec(segmentation.SegmentationSpec):
    name = "nyudv2"
    builder_cls = Nyudv2

    def check_manual_dir(self, root: str) -> None:
        detect_form(root)


SPEC = Nyudv2Spec()
