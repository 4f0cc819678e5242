"""Your own paired data: a dataset prepared from a manifest you write.

    python -m mango_jax.data.prepare --dataset=paired --manual_dir=PATH --name=NAME \
        [--text_columns=a,b] [--classes=FILE] [--task=...] [--ignore_index=255]

`PATH/manifest.csv` has a header row `split,<modality>,<modality>,label` and one row per
example (rows are numbered from 0, the header not counted):
- `split`: train, val or test (train is required);
- a modality cell: a path relative to PATH, `.png` / `.jpg` (8- or 16-bit; RGBA, palette and
  grey+alpha images become RGB or grey) or `.npy` (1-D: a feature vector; 2-D or 3-D: an image
  `H, W[, C]`), one shape per modality; or, for a column named in `--text_columns`, the text;
- `label`: a class name or integer (multi-class), names joined by `|` (multi-label), a path to
  a single-channel PNG of class ids (segmentation) or to an image (`.png`, `.jpg`, `.npy`:
  translation; one to three channels, grey repeated to RGB).

What preparing infers (all written into the prepared dataset's `metadata.json`, JSON only):
kinds and shapes per modality; the task (dense labels: segmentation when every mask is a
single-channel PNG, else translation; class labels: multi-label when a cell holds `|`, else
multi-class; `--task` overrides); the class names (sorted, numerically when all are integers,
or in the order of a `--classes` file, one name a line; segmentation: ids 0..max seen in train
unless `--classes` names them); the split sizes; normalisation statistics of the train split
(vectors: per-feature mean and std; images: per-channel mean and std of the raw pixel values;
translation targets: the value range mapped to [-1, 1]); for text, a vocabulary from the train
split (`mango_jax.data.mmimdb`'s tokenizer; ids 0 = padding, 1 = unknown) and the longest
train text. No augmentation is applied.

The dataset is prepared into `<data_dir>/NAME/1.0.0/` (TFDS array_record, written into a
temporary folder and renamed into place when complete). NAME is lower-case letters, digits and
underscores, and not the name of a built-in dataset or `weights`. Data configs select it with
`name='paired'`, `paired_name=NAME` (see `experiments/paired.py`).

Bad input stops preparing with one error naming the row, the column and the file: a missing,
unreadable or other-shape file, an unknown split, mixed kinds in one column, an unknown class.
The same checks run on examples given to a trained model (`mango_jax.load(...).predict`).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import re

import numpy as np
import tensorflow_datasets as tfds

from mango_jax.data import core, imaging, mmimdb
from mango_jax.data.core import DataFormatError, DataNotFoundError, DatasetInfo
from mango_jax.data.spec import DATASETS, DatasetSpec

MANIFEST = "manifest.csv"
SPLITS = ("train", "val", "test")
VERSION = "1.0.0"
IMAGE_EXTS = (".png", ".jpg", ".jpeg")
TASKS = ("multiclass", "multilabel", "segmentation", "translation")
NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")
COLUMN_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
RESERVED_NAMES = (*DATASETS, "weights")
RESERVED_COLUMNS = ("split", "label", "row", "mask")


def check_name(name: str) -> str:
    if not name or not NAME_RE.match(name):
        raise ValueError(f"--name={name!r}: a paired dataset's name is lower-case letters, "
                         "digits and underscores, starting with a letter (e.g. my_pairs)")
    if name in RESERVED_NAMES:
        raise ValueError(f"--name={name!r} is taken (built-in datasets and data/weights: "
                         f"{', '.join(RESERVED_NAMES)}); choose another name")
    return name


def prepared_dir(data_dir: str, name: str) -> str:
    return os.path.join(os.fspath(data_dir), name, VERSION)


def read_metadata(data_dir: str, name: str) -> dict:
    """The `paired` metadata of a prepared dataset, read without TFDS (configs call this)."""
    path = os.path.join(prepared_dir(data_dir, name), "metadata.json")
    if not os.path.isfile(os.path.join(prepared_dir(data_dir, name), "dataset_info.json")):
        raise DataNotFoundError(
            f"The paired dataset {name!r} is not prepared under {data_dir!r} (expected "
            f"{prepared_dir(data_dir, name)}). Write PATH/manifest.csv and run: python -m "
            f"mango_jax.data.prepare --dataset=paired --manual_dir=PATH --name={name} "
            f"--data_dir={data_dir}")
    with open(path) as f:
        return json.load(f)["paired"]


# --------------------------------------------------------------------------------------------
# Reading manifest cells.


def where(manifest: str, row: int, column: str, cell: str, what: str = "file") -> str:
    return f"{manifest}, row {row} (line {row + 2}), column {column!r}, {what} {cell!r}"


@dataclasses.dataclass
class Cell:
    """One decoded cell: `kind` 'vector' | 'image' | 'tokens', `source` 'file' (PNG/JPEG bytes
    in `data`) | 'npy' | 'text'; `array` is (d,) or (H, W, C) for files and arrays."""

    kind: str
    source: str
    array: np.ndarray | None = None
    data: bytes | None = None
    text: str | None = None
    bits: int = 8
    single_channel_png: bool = False


def decode_image(data: bytes) -> tuple[np.ndarray, int, str]:
    """PNG/JPEG bytes -> ((H, W, C) uint8 or uint16, bits, PIL mode)."""
    im = imaging.open_image(data)
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr, bits = np.asarray(im).astype(np.uint16), 16
    elif mode in ("L", "RGB"):
        arr, bits = np.asarray(im), 8
    elif mode == "LA":
        arr, bits = np.asarray(im.getchannel(0)), 8
    else:  # P, RGBA, CMYK, YCbCr, ...
        arr, bits = np.asarray(im.convert("RGB")), 8
    if arr.ndim == 2:
        arr = arr[..., None]
    return arr, bits, mode


def read_cell(root: str, cell, *, text: bool, at: str) -> Cell:
    """A manifest cell (path, text, or an already loaded array) -> `Cell`; errors name `at`."""
    if text:
        if not isinstance(cell, str):
            raise DataFormatError(f"{at}: a text column takes the text itself, got "
                                  f"{type(cell).__name__}")
        return Cell("tokens", "text", text=cell)
    if isinstance(cell, np.ndarray):
        arr = np.asarray(cell)
        source = "npy"
    else:
        if not isinstance(cell, str) or not cell:
            raise DataFormatError(f"{at}: empty cell; expected a path to a .png, .jpg or .npy")
        path = cell if os.path.isabs(cell) else os.path.join(root, cell)
        ext = os.path.splitext(cell)[1].lower()
        if ext not in IMAGE_EXTS + (".npy",):
            raise DataFormatError(f"{at}: unsupported file type {ext or '(none)'!r}; expected "
                                  ".png, .jpg or .npy (or name the column in --text_columns)")
        if not os.path.isfile(path):
            raise DataNotFoundError(f"{at}: missing file {path!r}")
        if ext in IMAGE_EXTS:
            with open(path, "rb") as f:
                data = f.read()
            try:
                arr, bits, mode = decode_image(data)
            except Exception as e:
                raise DataFormatError(f"{at}: unreadable image {path!r} ({e})") from e
            return Cell("image", "file", array=arr, data=data, bits=bits,
                        single_channel_png=mode in ("L", "P", "I;16", "I;16B", "I;16L", "I"))
        try:
            arr = np.load(path, allow_pickle=False)
        except Exception as e:
            raise DataFormatError(f"{at}: unreadable .npy file {path!r} ({e})") from e
        source = "npy"
    if arr.dtype.kind not in "biuf" or arr.ndim not in (1, 2, 3):
        raise DataFormatError(f"{at}: expected a numeric array of 1 (vector), 2 or 3 (image) "
                              f"dimensions, got {arr.dtype} of shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise DataFormatError(f"{at}: the array holds NaN or infinite values")
    if arr.ndim == 1:
        return Cell("vector", source, array=arr.astype(np.float32))
    arr = arr[..., None] if arr.ndim == 2 else arr
    return Cell("image", source, array=arr.astype(np.float32))


def check_like(cell: Cell, schema: dict, at: str) -> None:
    """The cell has the kind, source and shape that `schema` (one modality's) records."""
    if cell.kind != schema["kind"] or cell.source != schema["source"]:
        raise DataFormatError(
            f"{at}: mixed kinds in one column: this cell is a {describe(cell.kind, cell.source)}"
            f", the column holds {describe(schema['kind'], schema['source'])}s")
    if cell.array is not None and list(cell.array.shape) != list(schema["shape"]):
        raise DataFormatError(f"{at}: shape {tuple(cell.array.shape)}; the column's files have "
                              f"shape {tuple(schema['shape'])} (one shape per modality)")


def describe(kind: str, source: str) -> str:
    return {"file": f"{kind} file (.png/.jpg)", "npy": f"{kind} array (.npy)",
            "text": "text"}[source]


# --------------------------------------------------------------------------------------------
# The manifest.


@dataclasses.dataclass
class Manifest:
    path: str
    root: str
    modalities: tuple[str, str]
    rows: list[dict]  # {'row': i, 'split': s, <modality>: cell, 'label': cell or None}


def read_manifest(path: str, *, need_labels: bool = True, need_split: bool = True,
                  modalities: tuple[str, ...] | None = None) -> Manifest:
    """Parses a manifest; with `modalities` (predicting) it must name those columns."""
    core.require_file(path, "a manifest: a CSV with header split,<modality>,<modality>,label")
    with open(path, newline="", encoding="utf-8") as f:
        table = list(csv.reader(f))
    if not table:
        raise DataFormatError(f"{path} is empty; expected the header "
                              "split,<modality>,<modality>,label")
    header = [h.strip() for h in table[0]]
    if modalities is None:
        mods = [h for h in header if h not in ("split", "label")]
        if header[:1] != ["split"] or len(mods) != 2 or (need_labels and "label" not in header):
            raise DataFormatError(f"{path}: header {','.join(header)!r}; expected "
                                  "split,<modality>,<modality>,label (two modality columns)")
        for m in mods:
            if not COLUMN_RE.match(m) or m in RESERVED_COLUMNS:
                raise DataFormatError(f"{path}: modality column {m!r} must be a Python "
                                      f"identifier other than {RESERVED_COLUMNS}")
    else:
        missing = [m for m in modalities if m not in header]
        if missing:
            raise DataFormatError(f"{path}: header {','.join(header)!r} lacks the model's "
                                  f"modality columns {missing}")
        mods = list(modalities)
    if need_split and "split" not in header:
        raise DataFormatError(f"{path}: the header needs a split column")
    rows = []
    for i, values in enumerate(table[1:]):
        if not any(v.strip() for v in values):
            continue
        if len(values) != len(header):
            raise DataFormatError(f"{path}, row {i} (line {i + 2}): {len(values)} cells; the "
                                  f"header has {len(header)}")
        rec = dict(zip(header, values, strict=True))
        split = rec.get("split", "").strip()
        if need_split and split not in SPLITS:
            raise DataFormatError(f"{path}, row {i} (line {i + 2}), column 'split': unknown "
                                  f"split {split!r}; expected one of {SPLITS}")
        label = rec.get("label")
        label = label.strip() if label is not None and label.strip() else None
        if need_labels and label is None:
            raise DataFormatError(f"{path}, row {i} (line {i + 2}), column 'label': empty label")
        rows.append({"row": i, "split": split, "label": label, **{m: rec[m] for m in mods}})
    if not rows:
        raise DataFormatError(f"{path} lists no examples")
    return Manifest(path, os.path.dirname(os.path.abspath(path)), tuple(mods), rows)


def class_label_names(cell: str) -> list[str]:
    return [n.strip() for n in cell.split("|") if n.strip()]


def sort_classes(names) -> list[str]:
    names = sorted(set(names))
    if all(re.fullmatch(r"-?\d+", n) for n in names):
        return sorted(names, key=int)
    return names


def read_classes_file(path: str) -> list[str]:
    core.require_file(path, "a classes file: one class name a line, in label order")
    with open(path, encoding="utf-8") as f:
        names = [line.strip() for line in f if line.strip()]
    dup = sorted({n for n in names if names.count(n) > 1})
    if not names or dup:
        raise DataFormatError(f"{path}: " + (f"names listed twice: {dup}" if dup else "empty"))
    return names


def is_dense_label(cell: str) -> bool:
    return os.path.splitext(cell)[1].lower() in IMAGE_EXTS + (".npy",)


# --------------------------------------------------------------------------------------------
# Scanning: every file is read and checked before anything is written.


class _Moments:
    """Running per-channel (or per-feature) sums in float64."""

    def __init__(self):
        self.n, self.s, self.ss = 0, None, None
        self.lo, self.hi = np.inf, -np.inf

    def add(self, x: np.ndarray):
        x = x.reshape(-1, x.shape[-1]).astype(np.float64)
        if self.s is None:
            self.s, self.ss = np.zeros(x.shape[1]), np.zeros(x.shape[1])
        self.n += x.shape[0]
        self.s += x.sum(0)
        self.ss += (x * x).sum(0)
        self.lo, self.hi = min(self.lo, float(x.min())), max(self.hi, float(x.max()))

    def stats(self) -> dict:
        mean = self.s / self.n
        std = np.sqrt(np.maximum(self.ss / self.n - mean * mean, 0.0))
        std = np.where(std > 1e-12 * np.maximum(np.abs(mean), 1.0), std, 1.0)
        return {"mean": mean.tolist(), "std": std.tolist(), "min": self.lo, "max": self.hi}


def scan(manifest: Manifest, *, text_columns=(), task: str | None = None,
         classes_file: str | None = None, ignore_index: int = 255, max_vocab: int = 30000,
         min_count: int = 1) -> dict:
    """Reads every cell, checks kinds and shapes, infers the task and classes, and computes the
    train statistics: the `paired` metadata (everything the pipeline and a predictor need)."""
    unknown = [c for c in text_columns if c not in manifest.modalities]
    if unknown:
        raise ValueError(f"--text_columns {unknown} are not modality columns of "
                         f"{manifest.path} ({', '.join(manifest.modalities)})")
    if task is not None and task not in TASKS:
        raise ValueError(f"--task={task!r}; expected one of {TASKS}")
    counts = {s: sum(r["split"] == s for r in manifest.rows) for s in SPLITS}
    if not counts["train"]:
        raise DataFormatError(f"{manifest.path} has no train rows; the train split is required")
    schema = {m: None for m in manifest.modalities}
    moments = {m: _Moments() for m in manifest.modalities}
    texts = []
    for r in manifest.rows:
        for m in manifest.modalities:
            at = where(manifest.path, r["row"], m, r[m])
            cell = read_cell(manifest.root, r[m], text=m in text_columns, at=at)
            if schema[m] is None:
                schema[m] = {"kind": cell.kind, "source": cell.source,
                             "shape": None if cell.array is None else list(cell.array.shape)}
            check_like(cell, schema[m], at)
            if r["split"] == "train":
                if cell.array is not None:
                    moments[m].add(cell.array)
                else:
                    texts.append(cell.text)
    meta = {"manifest_columns": list(manifest.modalities), "modalities": schema,
            "split_sizes": {s: n for s, n in counts.items() if n}}
    for m, s in schema.items():
        if s["kind"] != "tokens":
            s["stats"] = {k: v for k, v in moments[m].stats().items() if k in ("mean", "std")}
    if text_columns:
        vocab = mmimdb.build_vocab(texts, max_vocab=max_vocab, min_count=min_count)
        index = {w: i for i, w in enumerate(vocab)}
        longest = max(len(mmimdb.encode_text(t, index)) for t in texts)
        meta["text"] = {"vocab": vocab, "max_tokens": max(int(longest), 1),
                        "tokenizer": f"mango_jax.data.mmimdb.tokenize (regex "
                                     f"{mmimdb.TOKEN_RE.pattern} on lower-cased text), "
                                     f"vocabulary from the train split (min_count={min_count}, "
                                     f"max_vocab={max_vocab})"}
        for m in text_columns:
            schema[m]["shape"] = [meta["text"]["max_tokens"]]
    meta["label"] = scan_labels(manifest, task=task, classes_file=classes_file,
                                ignore_index=ignore_index)
    return meta


def scan_labels(manifest: Manifest, *, task, classes_file, ignore_index) -> dict:
    cells = [r["label"] for r in manifest.rows]
    dense = [is_dense_label(c) for c in cells]
    if any(dense) and not all(dense):
        r = manifest.rows[dense.index(not dense[0])]
        raise DataFormatError(f"{where(manifest.path, r['row'], 'label', r['label'])}: mixed "
                              "kinds in one column: file paths and class names")
    given = read_classes_file(classes_file) if classes_file else None
    if dense[0]:
        return scan_dense_labels(manifest, task=task, classes=given, ignore_index=ignore_index)
    if task in ("segmentation", "translation"):
        raise DataFormatError(f"--task={task} needs label cells that are image paths; "
                              f"{manifest.path} has class names")
    multilabel = task == "multilabel" or (task is None and any("|" in c for c in cells))
    names = given or sort_classes(n for c in cells for n in class_label_names(c))
    label = {"task": "multilabel" if multilabel else "multiclass", "classes": names}
    for r in manifest.rows:
        encode_class_label(r["label"], label, at=where(manifest.path, r["row"], "label",
                                                       r["label"], "value"))
    return label


def scan_dense_labels(manifest, *, task, classes, ignore_index) -> dict:
    first = None
    masks, moments = True, _Moments()
    top, bits = -1, 8
    for r in manifest.rows:
        at = where(manifest.path, r["row"], "label", r["label"])
        cell = read_cell(manifest.root, r["label"], text=False, at=at)
        if cell.kind != "image":
            raise DataFormatError(f"{at}: a dense label must be an image (.png/.jpg, or a 2-D / "
                                  "3-D .npy), got a vector")
        if first is None:
            first = {"kind": "image", "source": cell.source, "shape": list(cell.array.shape)}
        check_like(cell, first, at)
        masks &= cell.single_channel_png and os.path.splitext(r["label"])[1].lower() == ".png"
        bits = max(bits, cell.bits)
        if r["split"] == "train":
            moments.add(cell.array)
            valid = cell.array[cell.array != ignore_index]
            top = max(top, int(valid.max()) if valid.size else -1)
    task = task or ("segmentation" if masks else "translation")
    h, w, c = first["shape"]
    if task == "segmentation":
        if not masks:
            raise DataFormatError("--task=segmentation needs single-channel PNG masks of class "
                                  f"ids in every label cell of {manifest.path}")
        names = classes or [str(i) for i in range(top + 1)]
        if len(names) < 1:
            raise DataFormatError(f"{manifest.path}: the train masks hold no class id other "
                                  f"than ignore_index={ignore_index}")
        label = {"task": "segmentation", "classes": names, "ignore_index": int(ignore_index),
                 "source": "file", "shape": [h, w]}
        for r in manifest.rows:  # ids beyond the classes (val / test) are errors.
            at = where(manifest.path, r["row"], "label", r["label"])
            decode_mask(read_cell(manifest.root, r["label"], text=False, at=at).array,
                        label, at)
        return label
    if task != "translation":
        raise DataFormatError(f"--task={task} takes class names in the label column, but "
                              f"{manifest.path} lists image files")
    if c not in (1, 3):
        raise DataFormatError(f"{manifest.path}: translation targets need 1 or 3 channels, got "
                              f"{c}")
    s = moments.stats()
    lo, hi = ((0.0, float(2 ** bits - 1)) if first["source"] == "file"  # the pixel range
              else (s["min"], s["max"]))  # arrays: the train split's range
    return {"task": "translation", "classes": None, "source": first["source"],
            "shape": [h, w, c], "range": [lo, hi if hi > lo else lo + 1.0]}


def encode_class_label(cell: str, label: dict, *, at: str):
    """A class cell -> int (multi-class) or multi-hot uint8 (multi-label); unknown is an error."""
    names = class_label_names(cell)
    classes = label["classes"]
    unknown = [n for n in names if n not in classes]
    if unknown:
        raise DataFormatError(f"{at}: label {unknown} is not one of the classes {classes}")
    if label["task"] == "multiclass":
        if len(names) != 1:
            raise DataFormatError(f"{at}: a multi-class label names one class, got {names}")
        return classes.index(names[0])
    hot = np.zeros(len(classes), np.uint8)
    hot[[classes.index(n) for n in names]] = 1
    return hot


def decode_mask(arr: np.ndarray, label: dict, at: str) -> np.ndarray:
    mask = arr[..., 0].astype(np.int32)
    bad = (mask != label["ignore_index"]) & ((mask < 0) | (mask >= len(label["classes"])))
    if bad.any():
        raise DataFormatError(f"{at}: mask ids {np.unique(mask[bad])[:8].tolist()} are outside "
                              f"the {len(label['classes'])} classes (ignore_index "
                              f"{label['ignore_index']})")
    return mask


# --------------------------------------------------------------------------------------------
# Records: what is stored per example, from a manifest row (preparing and predicting alike).


def vocab_index(meta: dict) -> dict[str, int] | None:
    return {w: i for i, w in enumerate(meta["text"]["vocab"])} if "text" in meta else None


def make_record(root: str, row: dict, meta: dict, *, at_path: str, with_label: bool = True,
                index: dict[str, int] | None = None) -> dict:
    """A manifest row -> the stored record (encoded images, raw arrays, token ids, label).

    `index`: `vocab_index(meta)`, computed once by callers that make many records."""
    out = {}
    index = vocab_index(meta) if index is None else index
    for m in meta["manifest_columns"]:
        if m not in row:
            continue
        s = meta["modalities"][m]
        cell_value = row[m]
        at = where(at_path, row["row"], m, cell_value if isinstance(cell_value, str)
                   else "<array>")
        cell = read_cell(root, cell_value, text=s["kind"] == "tokens", at=at)
        check_like(cell, s, at)
        if cell.source == "text":
            out[m] = mmimdb.encode_text(cell.text, index)
        elif cell.source == "file":
            out[m] = cell.data
        else:
            out[m] = cell.array
    if with_label and row.get("label") is not None:
        out["label"] = encode_label(root, row, meta["label"], at_path)
    return out


def encode_label(root: str, row: dict, label: dict, at_path: str):
    cell = row["label"]
    at = where(at_path, row["row"], "label", cell if isinstance(cell, str) else "<array>")
    if label["task"] in ("multiclass", "multilabel"):
        return encode_class_label(cell, label, at=where(at_path, row["row"], "label", cell,
                                                        "value"))
    c = read_cell(root, cell, text=False, at=at)
    check_like(c, {"kind": "image", "source": label["source"] if label["task"] == "translation"
                   else "file", "shape": label["shape"] if label["task"] == "translation"
                   else label["shape"] + [1]}, at)
    if label["task"] == "segmentation":
        decode_mask(c.array, label, at)
        return c.data
    return c.data if c.source == "file" else c.array


def features(meta: dict) -> tfds.features.FeaturesDict:
    feats = {"row": tfds.features.Scalar(dtype=np.int64, doc="data row of the manifest")}
    for m, s in meta["modalities"].items():
        if s["source"] == "file":
            feats[m] = tfds.features.Tensor(shape=(), dtype=np.object_, doc="PNG/JPEG bytes")
        elif s["source"] == "text":
            feats[m] = tfds.features.Tensor(shape=(None,), dtype=np.int32, doc="token ids")
        else:
            feats[m] = tfds.features.Tensor(shape=tuple(s["shape"]), dtype=np.float32)
    label = meta["label"]
    if label["task"] == "multiclass":
        feats["label"] = tfds.features.Scalar(dtype=np.int64)
    elif label["task"] == "multilabel":
        feats["label"] = tfds.features.Tensor(shape=(len(label["classes"]),), dtype=np.uint8)
    elif label["task"] == "segmentation" or label["source"] == "file":
        feats["label"] = tfds.features.Tensor(shape=(), dtype=np.object_, doc="PNG bytes")
    else:
        feats["label"] = tfds.features.Tensor(shape=tuple(label["shape"]), dtype=np.float32)
    return tfds.features.FeaturesDict(feats)


class PairedBuilder(core.ArrayRecordBuilder, skip_registration=True):
    """One paired dataset; `builder_class(name)` gives it its name (its folder)."""

    VERSION = tfds.core.Version(VERSION)
    RELEASE_NOTES = {str(VERSION): "Prepared from a manifest.csv."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = __doc__
    DESCRIPTION = f"A paired dataset prepared from {MANIFEST}."

    def __init__(self, *, manifest: Manifest | None = None, meta: dict | None = None, **kwargs):
        self.manifest, self.meta = manifest, meta
        super().__init__(**kwargs)

    def _features(self):
        return features(self.meta)

    def _split_generators(self, dl_manager):
        del dl_manager
        self.info.metadata["paired"] = self.meta
        return {s: self._examples(s) for s in SPLITS if s in self.meta["split_sizes"]}

    def _examples(self, split):
        index = vocab_index(self.meta)
        for r in self.manifest.rows:
            if r["split"] == split:
                rec = make_record(self.manifest.root, r, self.meta, at_path=self.manifest.path,
                                  index=index)
                rec["row"] = r["row"]
                yield r["row"], rec


def builder_class(name: str):
    return type(f"Paired_{name}", (PairedBuilder,), {"name": name}, skip_registration=True)


# --------------------------------------------------------------------------------------------
# The grain map (also what a predictor applies to raw examples).


class PairedTransform:
    """Record -> normalised arrays: `(x - mean) / std` per feature (vectors) or channel
    (images, on raw pixel values), token ids padded with 0 to `max_text_len` plus their
    `<modality>_mask` (True on real tokens), the label decoded."""

    def __init__(self, meta: dict, modalities, max_text_len: int | None = None):
        self.meta, self.modalities = meta, tuple(modalities)
        self.max_len = int(max_text_len or meta.get("text", {}).get("max_tokens", 0))
        self.mean = {m: np.asarray(s["stats"]["mean"], np.float32)
                     for m, s in meta["modalities"].items() if "stats" in s}
        self.inv_std = {m: (1.0 / np.asarray(s["stats"]["std"], np.float64)).astype(np.float32)
                        for m, s in meta["modalities"].items() if "stats" in s}

    def modality(self, m: str, value) -> np.ndarray:
        s = self.meta["modalities"][m]
        if s["kind"] == "tokens":
            ids = np.asarray(value, np.int32)[: self.max_len]
            out = np.zeros(self.max_len, np.int32)
            out[: ids.size] = ids
            return out
        x = decode_image(value)[0] if isinstance(value, bytes) else value
        return (np.asarray(x, np.float32) - self.mean[m]) * self.inv_std[m]

    def label(self, value):
        label = self.meta["label"]
        if label["task"] == "multiclass":
            return np.int32(value)
        if label["task"] == "multilabel":
            return np.asarray(value, np.float32)
        x = decode_image(value)[0] if isinstance(value, bytes) else np.asarray(value)
        if label["task"] == "segmentation":
            return x[..., 0].astype(np.int32)
        lo, hi = label["range"]
        x = (np.asarray(x, np.float32) - lo) * np.float32(2.0 / (hi - lo)) - 1.0
        return np.repeat(x, 3, axis=-1) if x.shape[-1] == 1 else x

    def __call__(self, record, rng=None):
        del rng  # No augmentation.
        out = {m: self.modality(m, record[m]) for m in self.modalities}
        for m in self.modalities:  # Text: which positions hold real tokens.
            if self.meta["modalities"][m]["kind"] == "tokens":
                out[f"{m}_mask"] = out[m] != 0
        if "label" in record:
            out["label"] = self.label(record["label"])
        return out


def dataset_info(name: str, meta: dict, modalities, max_text_len=None) -> DatasetInfo:
    label = meta["label"]
    shapes = {m: tuple(meta["modalities"][m]["shape"]) for m in modalities}
    if max_text_len:
        shapes.update({m: (int(max_text_len),) for m in modalities
                       if meta["modalities"][m]["kind"] == "tokens"})
    task = label["task"]
    classes = label["classes"]
    if task in ("multiclass", "multilabel"):
        label_shape = () if task == "multiclass" else (len(classes),)
    else:
        label_shape = (*label["shape"][:2], *((3,) if task == "translation" else ()))
    return DatasetInfo(
        name=name, task=task, num_classes=len(classes) if classes else None,
        modality_shapes=shapes,
        modality_kinds={m: meta["modalities"][m]["kind"] for m in modalities},
        vocab_size=len(meta["text"]["vocab"]) if "text" in meta else None,
        label_shape=label_shape, eval_label_shape=label_shape,
        label_dtype="float32" if task in ("multilabel", "translation") else "int32",
        ignore_index=label.get("ignore_index"), class_names=tuple(classes) if classes else None,
        split_sizes=dict(meta["split_sizes"]), metadata={"paired": meta})


class PairedSpec(DatasetSpec):
    name = "paired"
    builder_cls = PairedBuilder
    splits = SPLITS

    def add_defaults(self, cfg):
        cfg.paired_name = ""
        cfg.max_text_len = 0  # 0: the longest train text
        cfg.num_workers = 0

    def validate(self, cfg):
        check_name(cfg.paired_name)
        mods = tuple(cfg.modalities)
        if len(mods) != 2 or len(set(mods)) != 2:
            raise ValueError(f"paired data configs name two modality columns of the manifest "
                             f"in data.modalities; got {mods}")

    def prepared_dir(self, cfg):
        return prepared_dir(cfg.data_dir, cfg.paired_name)

    def is_prepared(self, cfg):
        return core.is_prepared(builder_class(cfg.paired_name), cfg.data_dir)

    def missing_message(self, cfg):
        try:
            read_metadata(cfg.data_dir, cfg.paired_name)
        except DataNotFoundError as e:
            return str(e)
        return f"{self.prepared_dir(cfg)} is incomplete; prepare it again with --overwrite"

    def builder(self, cfg):
        if not self.is_prepared(cfg):
            raise DataNotFoundError(self.missing_message(cfg))
        return tfds.builder_from_directory(self.prepared_dir(cfg))

    def prepare(self, *, data_dir, manual_dir, name=None, text_columns=(), classes=None,
                task=None, ignore_index=255, max_vocab=30000, min_count=1, overwrite=False,
                **options):
        if options:
            raise ValueError(f"paired: unknown options {sorted(options)}")
        check_name(name or "")
        if manual_dir is None:
            raise DataNotFoundError(f"paired needs --manual_dir: a folder with {MANIFEST}")
        if isinstance(text_columns, str):
            text_columns = [c.strip() for c in text_columns.split(",") if c.strip()]
        manifest = read_manifest(os.path.join(os.fspath(manual_dir), MANIFEST))
        cls = builder_class(name)
        if core.is_prepared(cls, data_dir) and not overwrite:
            return core.version_dir(cls, data_dir)
        meta = scan(manifest, text_columns=tuple(text_columns), task=task, classes_file=classes,
                    ignore_index=int(ignore_index), max_vocab=int(max_vocab),
                    min_count=int(min_count))
        return core.prepare_atomically(cls, data_dir=data_dir, manual_dir=manual_dir,
                                       overwrite=overwrite,
                                       builder_kwargs={"manifest": manifest, "meta": meta})

    def info(self, cfg, builder):
        self.validate(cfg)
        meta = dict(builder.info.metadata)["paired"]
        unknown = [m for m in cfg.modalities if m not in meta["modalities"]]
        if unknown:
            raise ValueError(f"{cfg.paired_name} has modalities {meta['manifest_columns']}; "
                             f"data.modalities names {unknown}")
        return dataset_info(cfg.paired_name, meta, cfg.modalities, cfg.get("max_text_len"))

    def transform(self, cfg, info, *, train):
        del train
        return PairedTransform(info.metadata["paired"], cfg.modalities,
                               cfg.get("max_text_len"))


SPEC = PairedSpec()

