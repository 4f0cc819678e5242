"""What NYUDv2 and SUN RGB-D share: list-file parsing, checks, the TFDS features, the grain map.

Prepared examples hold encoded images (`rgb`: the source PNG/JPEG bytes, `depth`: the source
single-channel PNG, 8 or 16 bit, `label`: an 8-bit PNG of class ids 0..C-1 with 255 = ignore,
already mapped from the source convention), the example's `name`, `height` and `width`.
"""

from __future__ import annotations

import concurrent.futures
import os
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from mango_jax.data import core, imaging
from mango_jax.data.core import DataFormatError, DataNotFoundError, DatasetInfo
from mango_jax.data.spec import DatasetSpec

IGNORE = 255
DEPTH_SCALES = ("geminifusion", "tokenfusion")
EVAL_LABELS = ("original", "resized")
_DEPTH_MODES = ("L", "I;16", "I;16B", "I;16L", "I", "F")


def read_list_file(path: str, *, columns: Sequence[str]) -> list[tuple[int, dict[str, str]]]:
    """Lines of whitespace-separated relative paths -> [(line number, {column: path})]."""
    core.require_file(path, f"a list file with one example per line: {' '.join(columns)}")
    out = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, start=1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split()
            if len(parts) != len(columns):
                raise DataFormatError(
                    f"{path}:{i}: expected {len(columns)} whitespace-separated paths "
                    f"({' '.join(columns)}), got {len(parts)}: {line!r}"
                )
            out.append((i, assign_roles(parts, columns)))
    if not out:
        raise DataFormatError(f"{path} lists no examples.")
    return out


_ROLE_WORDS = {"depth": ("depth",), "label": ("label", "mask", "gt", "seg")}


def assign_roles(parts: Sequence[str], columns: Sequence[str]) -> dict[str, str]:
    """Columns by position, unless the folder names say otherwise unambiguously.

    The documented order is image, label, depth; a line such as `RGB/0.jpg Depth/0.png
    labels/0.png` is still read right because exactly one path mentions depth and one a label.
    """
    by_position = dict(zip(columns, parts))
    if set(columns) != {"rgb", "label", "depth"}:
        return by_position
    found = {}
    for role, words in _ROLE_WORDS.items():
        hits = [p for p in parts if any(w in os.path.dirname(p).lower() for w in words)]
        if len(hits) != 1:
            return by_position
        found[role] = hits[0]
    rest = [p for p in parts if p not in found.values()]
    if len(rest) != 1 or found["depth"] == found["label"]:
        return by_position
    return {"rgb": rest[0], "label": found["label"], "depth": found["depth"]}


def load_image(path: str, what: str) -> tuple[bytes, Image.Image]:
    """The file's bytes and the decoded image; errors name the file and `what` was expected."""
    if not os.path.isfile(path):
        raise DataNotFoundError(f"Missing file {path!r}: expected {what}.")
    with open(path, "rb") as f:
        data = f.read()
    try:
        im = imaging.open_image(data)
    except Exception as e:
        raise DataFormatError(f"Corrupt or unreadable image {path!r} ({what}): {e}") from e
    return data, im


RGB_ENCODINGS = ("jpeg95", "source")


def encode_rgb(rgb: np.ndarray, rgb_encoding: str) -> bytes:
    """uint8 (H, W, 3) -> JPEG quality 95 ('jpeg95') or PNG ('source', lossless)."""
    if rgb_encoding == "jpeg95":
        return core.encode_jpeg(rgb, quality=95)
    return core.encode_png(rgb)


def check_rgb(path: str, rgb_encoding: str = "jpeg95") -> tuple[bytes, tuple[int, int]]:
    """Decodes the whole image (catches truncation); returns the bytes to store and (h, w).

    'source' keeps the file's bytes (converted to PNG only if it is not RGB); 'jpeg95' keeps JPEG
    files as they are and re-encodes anything else as JPEG quality 95 (5x smaller than PNG and
    3x faster to decode, which the 256 x 256 training pipeline needs).
    """
    if rgb_encoding not in RGB_ENCODINGS:
        raise ValueError(f"rgb_encoding must be one of {RGB_ENCODINGS}; got {rgb_encoding!r}")
    data, im = load_image(path, "an RGB image (PNG or JPEG)")
    if im.mode != "RGB" and im.mode not in ("L", "P", "RGBA", "LA", "CMYK", "YCbCr"):
        raise DataFormatError(f"{path!r}: RGB image has unsupported mode {im.mode!r}.")
    if im.mode == "RGB" and (rgb_encoding == "source" or im.format == "JPEG"):
        return data, (im.height, im.width)
    return encode_rgb(np.asarray(im.convert("RGB")), rgb_encoding), (im.height, im.width)


def check_depth(path: str) -> tuple[bytes, tuple[int, int], int]:
    """Single-channel depth PNG (8 or 16 bit); returns (bytes, (h, w), bits)."""
    data, im = load_image(path, "a single-channel depth PNG (8 or 16 bit, not HHA)")
    if im.mode in ("RGB", "RGBA"):
        arr = np.asarray(im)
        if not (np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 0],
                                                                           arr[..., 2])):
            raise DataFormatError(
                f"{path!r}: depth must be a single-channel image (raw depth, not HHA or a "
                f"colour map); this one has three different channels."
            )
        im = im.getchannel(0)
        data = core.encode_png(np.asarray(im))
    elif im.mode not in _DEPTH_MODES:
        raise DataFormatError(f"{path!r}: depth image has unsupported mode {im.mode!r}.")
    bits = 8 if im.mode == "L" else 16
    return data, (im.height, im.width), bits


def check_label(
    path: str, *, num_classes: int, mapping: Callable[[np.ndarray, str], np.ndarray]
) -> tuple[bytes, tuple[int, int]]:
    """Decodes a label map, maps it to 0..C-1 / 255 with `mapping`, re-encodes as 8-bit PNG."""
    data, im = load_image(path, "a single-channel label PNG")
    if im.mode not in ("L", "P", "I;16", "I;16B", "I;16L", "I"):
        raise DataFormatError(
            f"{path!r}: label must be a single-channel (or palette) PNG of class ids; got mode "
            f"{im.mode!r}."
        )
    raw = np.asarray(im)
    mapped = mapping(raw, path)
    bad = (mapped != IGNORE) & ((mapped < 0) | (mapped >= num_classes))
    if bad.any():  # pragma: no cover - mappings raise first
        raise DataFormatError(f"{path!r}: labels out of range after mapping.")
    if im.mode == "L" and np.array_equal(mapped, raw):
        return data, (im.height, im.width)
    return core.encode_png(mapped.astype(np.uint8)), (im.height, im.width)


def identity_mapping(num_classes: int):
    """Labels already 0..C-1 with 255 = ignore (TokenFusion / GeminiFusion NYUDv2 masks)."""

    def fn(raw: np.ndarray, path: str) -> np.ndarray:
        bad = (raw != IGNORE) & (raw >= num_classes)
        if bad.any() or (raw < 0).any():
            vals = np.unique(raw[bad | (raw < 0)])[:8].tolist()
            raise DataFormatError(
                f"{path!r}: label values {vals} out of range; expected class ids 0-"
                f"{num_classes - 1} and 255 = ignore."
            )
        return raw.astype(np.int64)

    return fn


def shift_mapping(num_classes: int):
    """Labels stored 0..C with 0 = unlabelled: subtract 1, 0 wraps to 255 (DFormer SUN RGB-D)."""

    def fn(raw: np.ndarray, path: str) -> np.ndarray:
        raw = raw.astype(np.int64)
        bad = (raw < 0) | (raw > num_classes)
        if bad.any():
            vals = np.unique(raw[bad])[:8].tolist()
            raise DataFormatError(
                f"{path!r}: label values {vals} out of range; expected 0 (unlabelled) to "
                f"{num_classes}."
            )
        out = raw - 1
        out[raw == 0] = IGNORE
        return out

    return fn


def header_size(path: str) -> tuple[int, int]:
    """(height, width) from the image header only (no decoding)."""
    try:
        with Image.open(path) as im:
            return im.height, im.width
    except FileNotFoundError as e:
        raise DataNotFoundError(f"Missing file {path!r}.") from e
    except Exception as e:
        raise DataFormatError(f"Corrupt or unreadable image {path!r}: {e}") from e


def folder_examples(
    root: str,
    items: Sequence[tuple[int, dict[str, str]]],
    list_path: str,
    *,
    num_classes: int,
    mapping,
    rgb_encoding: str = "jpeg95",
    num_threads: int = 8,
) -> Iterable[tuple[str, dict]]:
    """Checks and encodes the examples of a list file (in list order), `num_threads` at a time."""

    def one(item):
        line, rel = item
        paths = {k: os.path.join(root, v) for k, v in rel.items()}
        for k, p in paths.items():
            if not os.path.isfile(p):
                raise DataNotFoundError(
                    f"Missing file {p!r} ({k}), listed on line {line} of {list_path}."
                )
        rgb, hw_rgb = check_rgb(paths["rgb"], rgb_encoding)
        depth, hw_depth, _ = check_depth(paths["depth"])
        label, hw_label = check_label(paths["label"], num_classes=num_classes, mapping=mapping)
        if not hw_rgb == hw_depth == hw_label:
            raise DataFormatError(
                f"Line {line} of {list_path}: sizes differ: {rel['rgb']} {hw_rgb}, "
                f"{rel['depth']} {hw_depth}, {rel['label']} {hw_label} (height, width); the "
                f"RGB image, depth and label of an example must be the same size."
            )
        ex = {"rgb": rgb, "depth": depth, "label": label, "name": rel["rgb"],
              "height": hw_rgb[0], "width": hw_rgb[1]}
        return f"{line:07d}", ex

    with concurrent.futures.ThreadPoolExecutor(max(num_threads, 1)) as pool:
        chunk = 64
        for start in range(0, len(items), chunk):
            yield from pool.map(one, items[start : start + chunk])


def folder_splits(root: str, lists: dict[str, str], *, columns: Sequence[str], num_classes: int,
                  mapping, rgb_encoding: str) -> tuple[dict, list[int]]:
    """The example generators of a folder form (one list file per split, relative paths in
    `columns` order) and the largest label `[height, width]` over all splits.

    Every label file is checked to exist and its size read from its header first, so a missing
    file fails before any example is written.
    """
    parsed, sizes = {}, []
    for split, fname in lists.items():
        path = os.path.join(root, fname)
        items = read_list_file(path, columns=columns)
        for line, rel in items:
            label_path = os.path.join(root, rel["label"])
            if not os.path.isfile(label_path):
                raise DataNotFoundError(
                    f"Missing file {label_path!r} (label), listed on line {line} of {path}."
                )
            sizes.append(header_size(label_path))
        parsed[split] = (path, items)
    generators = {
        split: folder_examples(root, items, path, num_classes=num_classes, mapping=mapping,
                               rgb_encoding=rgb_encoding)
        for split, (path, items) in parsed.items()
    }
    return generators, max_hw(sizes)


def features() -> tfds.features.FeaturesDict:
    return tfds.features.FeaturesDict({
        "rgb": tfds.features.Tensor(shape=(), dtype=np.object_, doc="encoded RGB PNG/JPEG"),
        "depth": tfds.features.Tensor(
            shape=(), dtype=np.object_, doc="encoded single-channel depth PNG (8 or 16 bit)"
        ),
        "label": tfds.features.Tensor(
            shape=(), dtype=np.object_, doc="8-bit PNG of class ids, 255 = ignore"
        ),
        "name": tfds.features.Tensor(shape=(), dtype=np.object_, doc="source file"),
        "height": tfds.features.Scalar(dtype=np.int32),
        "width": tfds.features.Scalar(dtype=np.int32),
    })


# --------------------------------------------------------------------------------------------
# The grain map.


class SegmentationBuilder(core.ArrayRecordBuilder, skip_registration=True):
    """What the RGB-D segmentation builders share: the RGB storage choice, the features, the
    metadata of every source form and the reading of a folder form.

    Subclasses set `NUM_CLASSES`, `CLASS_NAMES`, `DESCRIPTION` and `HOMEPAGE`.
    """

    NUM_CLASSES: int
    CLASS_NAMES: tuple[str, ...]

    def __init__(self, *, rgb_encoding: str = "jpeg95", **kwargs):
        if rgb_encoding not in RGB_ENCODINGS:
            raise ValueError(f"rgb_encoding must be one of {RGB_ENCODINGS}; got {rgb_encoding!r}")
        self.rgb_encoding = rgb_encoding
        super().__init__(**kwargs)

    def _features(self):
        return features()

    def _start_metadata(self, form: str) -> tfds.core.MetadataDict:
        """Records what every source form records; returns the metadata for the rest."""
        meta = self.info.metadata
        meta["form"] = form
        meta["class_names"] = list(self.CLASS_NAMES)
        meta["rgb_encoding"] = self.rgb_encoding
        return meta

    def _folder_splits(self, root: str, lists: dict[str, str], *, columns: Sequence[str],
                       mapping, depth_format: str) -> dict:
        """A folder form's generators (`folder_splits`); records `depth_format` and the
        largest label size."""
        meta = self.info.metadata
        meta["depth_format"] = depth_format
        generators, meta["max_label_hw"] = folder_splits(
            root, lists, columns=columns, num_classes=self.NUM_CLASSES, mapping=mapping,
            rgb_encoding=self.rgb_encoding)
        return generators


class SegTransform:
    """Decode, (train) random scale / crop / flip, normalise. Picklable.

    The geometry is drawn once per example and applied to rgb, depth and the mask alike (the mask
    with nearest-neighbour resampling and 255 as padding, the images bilinear with 0 as padding,
    rgb padding being the ImageNet mean so that it normalises to about 0).
    """

    def __init__(self, *, modalities, image_size, scale_range, augment, train, depth_scale,
                 rgb_mean, rgb_std, eval_label, max_label_hw, depth_mean=0.0, depth_std=1.0):
        self.modalities = tuple(modalities)
        self.size = int(image_size)
        self.scale_range = (float(scale_range[0]), float(scale_range[1]))
        self.augment = bool(augment) and train
        self.train = train
        self.depth_scale = depth_scale
        # depth · factor − offset = (depth · scale − depth_mean) / depth_std
        scale = 1 / 5000 if depth_scale == "tokenfusion" else 1 / 255
        self.depth_factor = np.float32(scale / depth_std)
        self.depth_offset = np.float32(depth_mean / depth_std)
        self.normalize = imaging.RgbNormalizer(tuple(rgb_mean), tuple(rgb_std))
        self.eval_label = eval_label
        self.max_label_hw = tuple(int(x) for x in max_label_hw)
        self.rgb_fill = int(round(255 * float(np.mean(rgb_mean))))

    def geometry(self, hw, rng):
        s = self.size
        if self.augment and rng is not None:
            return imaging.scale_crop_geometry(
                hw, (s, s), (s, s), rng, scale_range=self.scale_range, flip=True
            )
        return imaging.full_geometry(hw, (s, s))

    def __call__(self, record, rng=None):
        """One example, compact: uint8 rgb, raw depth pixels, uint8 mask (see finalize_batch)."""
        rgb = imaging.open_image(record["rgb"])
        if rgb.mode != "RGB":
            rgb = rgb.convert("RGB")
        geom = self.geometry((rgb.height, rgb.width), rng)
        out = {}
        if "rgb" in self.modalities:
            out["rgb"] = imaging.apply_geometry(rgb, geom, resample=imaging.BILINEAR,
                                                fill=self.rgb_fill)
        if "depth" in self.modalities:
            depth = imaging.as_single_channel(imaging.open_image(record["depth"]))
            if depth.mode not in ("L", "I;16"):
                depth = depth.convert("F")
            out["depth"] = imaging.apply_geometry(depth, geom, resample=imaging.BILINEAR, fill=0)
        mask = imaging.open_image(record["label"])
        if mask.mode not in ("L", "P"):
            mask = mask.convert("L")
        if self.train or self.eval_label == "resized":
            out["label"] = imaging.apply_geometry(mask, geom, resample=imaging.NEAREST,
                                                  fill=IGNORE)
        else:
            arr = np.asarray(mask, dtype=np.uint8)
            out["label"] = imaging.pad_to(arr, self.max_label_hw, IGNORE)
            out["label_hw"] = np.asarray(arr.shape[:2], np.int32)
        return out

    def finalize_batch(self, batch):
        """Compact batch -> float32 normalised rgb [B,S,S,3], float32 depth [B,S,S,1|3],
        int32 label."""
        out = dict(batch)
        if "rgb" in out:
            out["rgb"] = self.normalize(out["rgb"])
        if "depth" in out:
            d = np.multiply(out["depth"], self.depth_factor, dtype=np.float32)[..., None]
            d -= self.depth_offset
            out["depth"] = np.repeat(d, 3, axis=-1) if self.depth_scale == "tokenfusion" else d
        out["label"] = out["label"].astype(np.int32)
        return out


class SegmentationSpec(DatasetSpec):
    """Shared by `nyudv2` and `sunrgbd`; subclasses set `name`, `builder_cls` and
    `check_manual_dir`."""

    splits = ("train", "test")
    split_aliases = {"val": "test", "validation": "test"}

    @property
    def num_classes(self) -> int:
        return self.builder_cls.NUM_CLASSES

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.builder_cls.CLASS_NAMES

    def check_manual_dir(self, root: str) -> None:
        """Raises a `DataNotFoundError` naming what is missing if `root` is not a layout the
        builder reads; runs before anything is written."""
        raise NotImplementedError

    def prepare(self, *, data_dir, manual_dir, overwrite=False, rgb_encoding="jpeg95",
                **options):
        if options:
            raise ValueError(f"{self.name} takes no options; got {sorted(options)}")
        if manual_dir is None:
            raise DataNotFoundError(f"{self.name} needs --manual_dir.\n"
                                    + self.builder_cls.MANUAL_DOWNLOAD_INSTRUCTIONS)
        self.check_manual_dir(os.fspath(manual_dir))
        return core.prepare_atomically(
            self.builder_cls, data_dir=data_dir, manual_dir=manual_dir, overwrite=overwrite,
            builder_kwargs={"rgb_encoding": rgb_encoding},
        )

    def add_defaults(self, cfg):
        cfg.modalities = ("rgb", "depth")
        cfg.image_size = 256
        cfg.scale_range = (0.5, 2.0)
        cfg.augment = True
        cfg.depth_scale = "geminifusion"
        cfg.rgb_mean = imaging.IMAGENET_MEAN
        cfg.rgb_std = imaging.IMAGENET_STD
        cfg.depth_mean = 0.0
        cfg.depth_std = 1.0
        cfg.eval_label = "original"

    def validate(self, cfg):
        mods = tuple(cfg.modalities)
        if not mods or len(set(mods)) != len(mods) or any(m not in ("rgb", "depth")
                                                           for m in mods):
            raise ValueError(f"{self.name} modalities must be ('rgb', 'depth'); got {mods}")
        if cfg.depth_scale not in DEPTH_SCALES:
            raise ValueError(f"depth_scale must be one of {DEPTH_SCALES}; got {cfg.depth_scale!r}")
        if not cfg.depth_std > 0:
            raise ValueError(f"depth_std must be positive; got {cfg.depth_std}")
        if cfg.eval_label not in EVAL_LABELS:
            raise ValueError(f"eval_label must be one of {EVAL_LABELS}; got {cfg.eval_label!r}")
        lo, hi = cfg.scale_range
        if not 0 < lo <= hi:
            raise ValueError(f"scale_range must satisfy 0 < lo <= hi; got {cfg.scale_range}")

    def canonical_split(self, split):
        return super().canonical_split(self.split_aliases.get(split, split))

    def missing_message(self, cfg):
        return (
            f"{self.name} is not prepared under {cfg.data_dir!r} (expected "
            f"{core.version_dir(self.builder_cls, cfg.data_dir)}).\n"
            f"{self.builder_cls.MANUAL_DOWNLOAD_INSTRUCTIONS}\nThen run:\n"
            f"  python -m mango_jax.data.prepare --dataset={self.name} --manual_dir=PATH "
            f"--data_dir={cfg.data_dir}\n(see data/README.md and data/{self.name}/README.md)"
        )

    def info(self, cfg, builder):
        self.validate(cfg)
        s = int(cfg.image_size)
        meta = dict(builder.info.metadata)
        depth_c = 3 if cfg.depth_scale == "tokenfusion" else 1
        shapes = {"rgb": (s, s, 3), "depth": (s, s, depth_c)}
        max_hw = tuple(int(x) for x in meta["max_label_hw"])
        return DatasetInfo(
            name=self.name,
            task="segmentation",
            num_classes=self.num_classes,
            modality_shapes={m: shapes[m] for m in cfg.modalities},
            modality_kinds={m: "image" for m in cfg.modalities},
            vocab_size=None,
            label_shape=(s, s),
            eval_label_shape=max_hw if cfg.eval_label == "original" else (s, s),
            label_dtype="int32",
            ignore_index=IGNORE,
            class_names=tuple(self.class_names),
            split_sizes={k: v.num_examples for k, v in builder.info.splits.items()},
            metadata=meta,
        )

    def transform(self, cfg, info, *, train):
        return SegTransform(
            modalities=cfg.modalities,
            image_size=cfg.image_size,
            scale_range=cfg.scale_range,
            augment=cfg.augment,
            train=train,
            depth_scale=cfg.depth_scale,
            rgb_mean=cfg.rgb_mean,
            rgb_std=cfg.rgb_std,
            eval_label=cfg.eval_label,
            max_label_hw=info.metadata["max_label_hw"],
            depth_mean=cfg.depth_mean,
            depth_std=cfg.depth_std,
        )


def max_hw(sizes: Iterable[tuple[int, int]]) -> list[int]:
    hs, ws = zip(*sizes)
    return [int(max(hs)), int(max(ws))]

