"""Shared pieces of the data layer: errors, `DatasetInfo`, atomic preparation, image codecs.

Every dataset is a TFDS `GeneratorBasedBuilder` written with `file_format='array_record'` and
read back with `builder.as_data_source()` (random access, no TensorFlow anywhere). Images are
stored *encoded* (the PNG/JPEG bytes of the source file, or bytes we encode with Pillow) in
`tfds.features.Tensor(shape=(), dtype=np.object_)` features and decoded in the grain map: TFDS's
own `Image` feature decodes with PIL only for uint8 (16-bit depth PNGs would fail) and would
decode inside the data source, before we can crop.

Preparation is atomic: a builder writes into `<data_dir>/<name>/.incomplete-<random>/` and only
the finished version folder is renamed into `<data_dir>/<name>/[<config>/]<version>/` at the end,
so an interrupted or failed preparation never leaves anything that later reads as complete.
"""

from __future__ import annotations

import dataclasses
import inspect
import io
import os
import shutil
import tempfile
import uuid
from collections.abc import Mapping
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

# Preparation logs through absl; the per-example progress bars only clutter logs and tests.
tfds.disable_progress_bar()

TASKS = ("multiclass", "multilabel", "segmentation", "translation")


class DataNotFoundError(FileNotFoundError):
    """The prepared dataset (or a raw file needed to prepare it) is missing."""


class DataFormatError(ValueError):
    """A raw file exists but does not have the layout, keys, shapes or values expected."""


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What the model and the training loop need to know about a dataset.

    Attributes:
        name: dataset name ('mfeat', 'mmimdb', 'nyudv2', 'sunrgbd', 'taskonomy').
        task: one of 'multiclass', 'multilabel', 'segmentation', 'translation'.
        num_classes: number of classes (None for translation).
        modality_shapes: name -> per-example shape of that modality as the iterator yields it.
        modality_kinds: name -> 'vector' | 'image' | 'tokens'.
        vocab_size: vocabulary size of the token modality (ids 0..vocab_size-1, 0 = padding);
      None when no modality is 'tokens'.
        label_shape: per-example shape of `batch['label']` in training batches.
        eval_label_shape: per-example shape of `batch['label']` in eval batches (differs from
            `label_shape` only for segmentation with `eval_label='original'`).
        label_dtype: NumPy dtype name of the label ('int32' or 'float32').
        ignore_index: 255 for segmentation, else None.
        class_names: class names in label order (None for translation).
        split_sizes: split name -> number of examples (before sharding or padding).
        metadata: extra read-only facts (standardisation statistics, vocabularies, ...).
    """

    name: str
    task: str
    num_classes: int | None
    modality_shapes: Mapping[str, tuple[int, ...]]
    modality_kinds: Mapping[str, str]
    vocab_size: int | None
    label_shape: tuple[int, ...]
    eval_label_shape: tuple[int, ...]
    label_dtype: str
    ignore_index: int | None
    class_names: tuple[str, ...] | None
    split_sizes: Mapping[str, int]
    metadata: Mapping[str, Any] = dataclasses.field(default_factory=dict, repr=False)

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")


class ArrayRecordBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Base of our builders.

    TFDS 4.9.10 finds a builder's source file through `importlib_resources`, a package that is
    not installed here (and not needed): look it up with `inspect` instead. `_info` disables
    shuffling, so examples are stored in key order and eval passes read them in a documented
    order. Subclasses set `DESCRIPTION` (and `HOMEPAGE`, `LICENSE` where there is one), build
    their features in `_features` and return the example generators from `_split_generators`
    (filling `self.info.metadata` there).
    """

    DESCRIPTION: str
    HOMEPAGE: str | None = None
    LICENSE: str | None = None

    def _features(self) -> tfds.features.FeaturesDict:
        raise NotImplementedError

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            description=self.DESCRIPTION,
            features=self._features(),
            homepage=self.HOMEPAGE,
            license=self.LICENSE,
            disable_shuffling=True,
            metadata=tfds.core.MetadataDict(),
        )

    def _generate_examples(self, **kwargs):  # pragma: no cover - _split_generators builds them
        raise NotImplementedError

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls):
        from etils import epath

        try:
            return epath.Path(inspect.getfile(cls))
        except (TypeError, OSError):  # pragma: no cover
            return None


# --------------------------------------------------------------------------------------------
# Atomic preparation.


def version_dir(builder_cls, data_dir: str, config_name: str | None = None) -> str:
    """`<data_dir>/<name>/[<config>/]<version>`: where a prepared dataset lives."""
    parts = [os.fspath(data_dir), builder_cls.name]
    if config_name:
        parts.append(config_name)
    parts.append(str(builder_cls.VERSION))
    return os.path.join(*parts)


def is_prepared(builder_cls, data_dir: str, config_name: str | None = None) -> bool:
    d = version_dir(builder_cls, data_dir, config_name)
    return os.path.isfile(os.path.join(d, "dataset_info.json")) and os.path.isfile(
        os.path.join(d, "features.json")
    )


def prepare_atomically(
    builder_cls,
    *,
    data_dir: str,
    manual_dir: str,
    config_name: str | None = None,
    builder_kwargs: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> str:
    """Builds `builder_cls` from `manual_dir` and renames the finished dataset into place.

    Returns the version folder. Any error leaves `data_dir` as it was (apart from the empty
    `<name>/` folder). When another process finished the same dataset first, its copy is kept.
    """
    data_dir = os.path.abspath(os.fspath(data_dir))
    final = version_dir(builder_cls, data_dir, config_name)
    if is_prepared(builder_cls, data_dir, config_name) and not overwrite:
        return final
    name_dir = os.path.join(data_dir, builder_cls.name)
    os.makedirs(name_dir, exist_ok=True)
    tmp_root = tempfile.mkdtemp(prefix=".incomplete-", dir=name_dir)
    try:
        builder = builder_cls(
            data_dir=tmp_root,
            config=config_name,
            file_format="array_record",
            **dict(builder_kwargs or {}),
        )
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(
                manual_dir=os.fspath(manual_dir), try_download_gcs=False
            )
        )
        built = version_dir(builder_cls, tmp_root, config_name)
        if not os.path.isfile(os.path.join(built, "dataset_info.json")):
            raise RuntimeError(f"TFDS did not produce {built}/dataset_info.json")
        os.makedirs(os.path.dirname(final), exist_ok=True)
        if os.path.exists(final):
            if not overwrite and is_prepared(builder_cls, data_dir, config_name):
                return final  # Someone else won the race; theirs is complete.
            old = os.path.join(tmp_root, f"old-{uuid.uuid4().hex}")
            os.rename(final, old)  # Removed with tmp_root below.
        try:
            os.rename(built, final)
        except OSError:
            if is_prepared(builder_cls, data_dir, config_name):
                return final
            raise
        return final
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# Raw-input checks shared by the builders.


def require_dir(path: str, what: str, hint: str = "") -> str:
    if not os.path.isdir(path):
        raise DataNotFoundError(
            f"Missing folder {path!r}: expected {what}." + (f" {hint}" if hint else "")
        )
    return path


def require_file(path: str, what: str, hint: str = "") -> str:
    if not os.path.isfile(path):
        raise DataNotFoundError(
            f"Missing file {path!r}: expected {what}." + (f" {hint}" if hint else "")
        )
    return path


def encode_png(array: np.ndarray) -> bytes:
    """Encodes a uint8 (H, W[, 3]) or uint16 (H, W) array as PNG with Pillow."""
    array = np.ascontiguousarray(array)
    if array.dtype == np.uint16:
        im = Image.fromarray(array.astype(np.uint16), mode=None)
    elif array.dtype == np.uint8:
        im = Image.fromarray(array)
    else:
        raise TypeError(f"encode_png takes uint8 or uint16, got {array.dtype}")
    buf = io.BytesIO()
    im.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def encode_jpeg(array: np.ndarray, quality: int = 95) -> bytes:
    """Encodes a uint8 (H, W, 3) or (H, W) array as JPEG with Pillow."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8)).save(
        buf, format="JPEG", quality=int(quality)
    )
    return buf.getvalue()
