"""MM-IMDB: movie genre classification (23 genres, multi-label) from the poster and the plot.

Two source forms, told apart by what is in `--manual_dir`; each is prepared into its own
builder config (`data/mmimdb/multibench/1.0.0/`, `data/mmimdb/original/1.0.0/`), selected by
`form` in the data config.

* **multibench** (the split the paper uses): `multimodal_imdb.hdf5` with `features` (N, 300,
  mean word2vec of the plot), `vgg_features` (N, 4096), `images` (N, 3, 256, 160), `sequences`
  (token ids of the plot, variable length or zero-padded rows), `genres` (N, 23) multi-hot and
  optionally `imdb_ids`. Rows split as train [0, 15552), val [15552, 18160), test [18160, N)
  with N = 25,959; `--split_rows=TRAIN_END,VAL_END` overrides the boundaries (for small files);
  a file that does not fit the split is refused. The genre order is checked against
  `genres.attrs['target_names']` when present (columns are reordered to the canonical order; an
  unknown name is an error). `metadata.npy` (a pickle) is never opened. Token ids are used as
  they are; `vocab_size` is the largest id + 1.
* **original** (`mmimdb.tar.gz`): `mmimdb/split.json` (`train`, `dev`, `test`: lists of ids) and
  `mmimdb/dataset/<id>.json` + `<id>.jpeg`. Genres come from the JSON `genres` list (names
  outside the 23 are ignored), the text is the longest string of the JSON `plot` list.
  Tokenizer (offline, no downloads): lower-case, words matched by `[a-z0-9]+(?:'[a-z]+)?`; the
  vocabulary is built from the **train split** plots (words seen at least `min_count` = 2
  times, the `max_vocab` = 30,000 - 2 most frequent, ties alphabetical), or read from
  `--vocab_file` (one token per line, first field). Ids: 0 = padding, 1 = unknown, 2.. the
  vocabulary in order. The vocabulary is stored in the prepared dataset's `metadata.json`.
  With `--tokenizer=PATH` (a CLIP model folder or its `tokenizer.json`) the plots become CLIP's
  BPE ids instead (`mango_jax.data.tokenizer`: start and end tokens, at most 77), prepared into
  `data/mmimdb/original_clip/1.0.0/` and selected by the data config's `tokenizer='clip'`. The
  MultiBench HDF5 holds only its own word indices (no text), so it cannot give CLIP ids.

Text ids are stored without padding, so a row's length is its number of real tokens; the grain
map pads them (0, or CLIP's end token) and emits `text_mask` (True on real tokens).

Posters are stored as JPEG quality 95 (`rgb_encoding='jpeg95'`, source JPEGs kept byte for
byte) or PNG (`'source'`).
"""

from __future__ import annotations

import collections
import concurrent.futures
import json
import os
import re

import numpy as np
import tensorflow_datasets as tfds

from mango_jax.data import core, imaging, segmentation
from mango_jax.data.core import DataFormatError, DataNotFoundError, DatasetInfo
from mango_jax.data.spec import DatasetSpec
from mango_jax.data.tokenizer import ClipTokenizer

GENRES = (
    "Drama", "Comedy", "Romance", "Thriller", "Crime", "Action", "Adventure", "Horror",
    "Documentary", "Mystery", "Sci-Fi", "Fantasy", "Family", "Biography", "War", "History",
    "Music", "Animation", "Musical", "Western", "Sport", "Short", "Film-Noir",
)
NUM_CLASSES = len(GENRES)
HDF5_NAME = "multimodal_imdb.hdf5"
DEFAULT_SPLIT_ROWS = (15552, 18160)
STANDARD_NUM_ROWS = 25959
HDF5_KEYS = ("features", "vgg_features", "images", "sequences", "genres")
TOKEN_RE = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
PAD, UNK = 0, 1
FORMS = ("multibench", "original")
TOKENIZERS = ("words", "clip")
CLIP_NEEDS_ORIGINAL = (
    "CLIP token ids need the plot text, which the MultiBench HDF5 does not hold (only its own "
    "word indices): prepare the original release (mmimdb.tar.gz) with `python -m "
    "mango_jax.data.prepare --dataset=mmimdb --manual_dir=PATH --tokenizer=CLIP_FOLDER` and use "
    "form='original' (experiments/mmimdb.py: form=original)."
)

MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Put ONE of these in the folder you pass as --manual_dir:
 (a) MultiBench / DynMM: multimodal_imdb.hdf5 (keys features, vgg_features, images, sequences,
     genres[, imdb_ids]; 25,959 rows split 15,552 / 2,608 / 7,799; for a smaller file pass
     --split_rows=TRAIN_END,VAL_END). A metadata.npy beside it is ignored (never unpickled).
 (b) the original release (mmimdb.tar.gz, extracted): mmimdb/split.json (train / dev / test id
     lists) and mmimdb/dataset/<id>.json + <id>.jpeg; pass either the mmimdb/ folder or the
     folder that contains it.
"""


def tokenize(text: str) -> list[str]:
    return TOKEN_RE.findall(text.lower())


def detect_form(manual_dir: str) -> tuple[str, str]:
    """('multibench', folder) or ('original', the mmimdb/ folder)."""
    core.require_dir(manual_dir, "the MM-IMDB folder (see data/mmimdb/README.md)")
    has_h5 = os.path.isfile(os.path.join(manual_dir, HDF5_NAME))
    original = None
    for cand in (manual_dir, os.path.join(manual_dir, "mmimdb")):
        if os.path.isfile(os.path.join(cand, "split.json")) or os.path.isdir(
            os.path.join(cand, "dataset")
        ):
            original = cand
            break
    if has_h5 and original:
        raise DataFormatError(
            f"{manual_dir!r} holds both {HDF5_NAME} and the original mmimdb/ release: pass a "
            "folder with only one form."
        )
    if has_h5:
        return "multibench", manual_dir
    if original:
        core.require_file(os.path.join(original, "split.json"),
                          "the MM-IMDB split (keys train, dev, test: lists of ids)")
        core.require_dir(os.path.join(original, "dataset"), "the <id>.json / <id>.jpeg files")
        return "original", original
    raise DataNotFoundError(
        f"{manual_dir!r} holds neither {HDF5_NAME} nor the original mmimdb/ release "
        f"(split.json + dataset/).\n{MANUAL_DOWNLOAD_INSTRUCTIONS}"
    )


def parse_split_rows(split_rows) -> tuple[int, int] | None:
    if split_rows is None:
        return None
    if isinstance(split_rows, str):
        parts = [p for p in split_rows.replace(" ", "").split(",") if p]
    else:
        parts = list(split_rows)
    try:
        a, b = (int(p) for p in parts)
    except (TypeError, ValueError) as e:
        raise ValueError(f"--split_rows must be TRAIN_END,VAL_END (two integers); got "
                         f"{split_rows!r}") from e
    return a, b


# --------------------------------------------------------------------------------------------
# MultiBench HDF5.


def _genre_order(ds, path: str) -> np.ndarray:
    """Column permutation mapping the file's genre columns to the canonical order."""
    names = ds.attrs.get("target_names")
    if names is None:
        return np.arange(NUM_CLASSES)
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in np.asarray(names).ravel()]
    unknown = [n for n in names if n not in GENRES]
    if len(names) != NUM_CLASSES or unknown or len(set(names)) != NUM_CLASSES:
        raise DataFormatError(
            f"{path!r}: genres.attrs['target_names'] = {names}; expected the 23 MM-IMDB genres "
            f"{list(GENRES)}."
        )
    return np.asarray([names.index(g) for g in GENRES])


def open_hdf5(path: str, split_rows):
    import h5py

    core.require_file(path, "the MultiBench MM-IMDB HDF5 file")
    if not h5py.is_hdf5(path):
        raise DataFormatError(f"{path!r} is not an HDF5 file.")
    f = h5py.File(path, "r")
    try:
        missing = [k for k in HDF5_KEYS if k not in f]
        if missing:
            raise DataFormatError(
                f"{path!r} lacks {missing}; expected keys {list(HDF5_KEYS)} (found "
                f"{sorted(f.keys())})."
            )
        n = f["genres"].shape[0]
        expect = {"features": (n, 300), "vgg_features": (n, 4096), "genres": (n, NUM_CLASSES)}
        for k, shape in expect.items():
            if f[k].shape != shape:
                raise DataFormatError(f"{path!r}: {k!r} has shape {f[k].shape}; expected {shape}.")
        if f["images"].ndim != 4 or f["images"].shape[:2] != (n, 3):
            raise DataFormatError(
                f"{path!r}: 'images' has shape {f['images'].shape}; expected (N, 3, H, W) with "
                f"N = {n} (MultiBench: (25959, 3, 256, 160))."
            )
        if f["sequences"].shape[0] != n:
            raise DataFormatError(
                f"{path!r}: 'sequences' has {f['sequences'].shape[0]} rows; 'genres' has {n}."
            )
        if "imdb_ids" in f and f["imdb_ids"].shape[0] != n:
            raise DataFormatError(f"{path!r}: 'imdb_ids' has {f['imdb_ids'].shape[0]} rows, "
                                  f"'genres' {n}.")
        rows = parse_split_rows(split_rows)
        if rows is None:
            if n != STANDARD_NUM_ROWS:
                raise DataFormatError(
                    f"{path!r} has {n} rows; the standard split (train 0-15551, val "
                    f"15552-18159, test 18160-25958) needs exactly {STANDARD_NUM_ROWS}. For "
                    "another file pass --split_rows=TRAIN_END,VAL_END."
                )
            rows = DEFAULT_SPLIT_ROWS
        a, b = rows
        if not 0 < a < b < n:
            raise DataFormatError(
                f"{path!r} has {n} rows, which does not fit --split_rows={a},{b}: need "
                f"0 < TRAIN_END < VAL_END < {n} (train [0, TRAIN_END), val [TRAIN_END, VAL_END), "
                "test [VAL_END, N))."
            )
    except Exception:
        f.close()
        raise
    return f, {"train": (0, a), "val": (a, b), "test": (b, n)}


def _sequence_rows(ds, start, stop, path) -> list[np.ndarray]:
    import h5py

    chunk = ds[start:stop]
    if h5py.check_vlen_dtype(ds.dtype) is not None or chunk.dtype == object:
        rows = [np.asarray(r).reshape(-1) for r in chunk]
    elif chunk.ndim == 2:
        rows = [r[: int(np.max(np.nonzero(r)[0]) + 1) if np.any(r) else 0] for r in chunk]
    else:
        raise DataFormatError(
            f"{path!r}: 'sequences' has shape {ds.shape} and dtype {ds.dtype}; expected "
            "variable-length integer rows or an (N, L) zero-padded integer array."
        )
    out = []
    for i, r in enumerate(rows):
        if r.size and (not np.issubdtype(r.dtype, np.number) or np.any(r != np.round(r))):
            raise DataFormatError(f"{path!r}: sequences[{start + i}] is not integer token ids.")
        r = r.astype(np.int64)
        if r.size and r.min() < 0:
            raise DataFormatError(f"{path!r}: sequences[{start + i}] has negative token ids.")
        out.append(r.astype(np.int32))
    return out


def hdf5_vocab_size(f, path) -> int:
    ds = f["sequences"]
    top = 0
    for s in range(0, ds.shape[0], 1024):
        for r in _sequence_rows(ds, s, min(s + 1024, ds.shape[0]), path):
            if r.size:
                top = max(top, int(r.max()))
    return top + 1


def hdf5_examples(path: str, split_rows, rows: tuple[int, int], rgb_encoding: str):
    f, _ = open_hdf5(path, split_rows)
    try:
        order = _genre_order(f["genres"], path)
        start, stop = rows
        for s in range(start, stop, 256):
            e = min(s + 256, stop)
            feats = np.asarray(f["features"][s:e], np.float32)
            vgg = np.asarray(f["vgg_features"][s:e], np.float32)
            images = np.asarray(f["images"][s:e])
            genres = np.asarray(f["genres"][s:e])
            seqs = _sequence_rows(f["sequences"], s, e, path)
            ids = f["imdb_ids"][s:e] if "imdb_ids" in f else [b""] * (e - s)
            if not np.all(np.isin(genres, (0, 1))):
                bad = s + int(np.argwhere(~np.isin(genres, (0, 1)))[0, 0])
                raise DataFormatError(
                    f"{path!r}: genres[{bad}] = {genres[bad - s].tolist()}; expected a 0/1 "
                    "multi-hot row (label out of range)."
                )
            if images.min() < 0 or images.max() > 255:
                raise DataFormatError(
                    f"{path!r}: images[{s}:{e}] has values outside 0-255."
                )
            if not (np.all(np.isfinite(feats)) and np.all(np.isfinite(vgg))):
                raise DataFormatError(f"{path!r}: rows {s}-{e - 1} have non-finite features.")
            for i in range(e - s):
                img = np.ascontiguousarray(images[i].transpose(1, 2, 0).astype(np.uint8))
                imdb_id = ids[i]
                if isinstance(imdb_id, bytes):
                    imdb_id = imdb_id.decode("utf-8", "replace")
                yield f"{s + i:08d}", {
                    "image": segmentation.encode_rgb(img, rgb_encoding),
                    "text_ids": seqs[i],
                    "word2vec": feats[i],
                    "vgg": vgg[i],
                    "genres": genres[i][order].astype(np.uint8),
                    "id": str(imdb_id),
                }
    finally:
        f.close()


# --------------------------------------------------------------------------------------------
# Original release.


def read_original_split(root: str) -> dict[str, list[str]]:
    path = os.path.join(root, "split.json")
    try:
        with open(path, encoding="utf-8") as fh:
            split = json.load(fh)
    except (OSError, ValueError) as e:
        raise DataFormatError(f"{path!r} is not readable JSON: {e}") from e
    out = {}
    for ours, theirs in (("train", "train"), ("val", "dev"), ("test", "test")):
        if not isinstance(split, dict) or theirs not in split:
            raise DataFormatError(
                f"{path!r} has no key {theirs!r}; expected keys 'train', 'dev', 'test' (lists of "
                "ids)."
            )
        ids = split[theirs]
        if not isinstance(ids, list) or not ids:
            raise DataFormatError(f"{path!r}: {theirs!r} must be a non-empty list of ids.")
        out[ours] = [str(i) for i in ids]
    return out


def read_record(root: str, movie_id: str) -> tuple[np.ndarray, str]:
    path = os.path.join(root, "dataset", f"{movie_id}.json")
    if not os.path.isfile(path):
        raise DataNotFoundError(f"Missing file {path!r}: the IMDb record of {movie_id} listed in "
                                "split.json.")
    try:
        with open(path, encoding="utf-8") as fh:
            rec = json.load(fh)
    except (OSError, ValueError) as e:
        raise DataFormatError(f"{path!r} is not readable JSON: {e}") from e
    if not isinstance(rec, dict):
        raise DataFormatError(f"{path!r}: expected a JSON object (an IMDb record).")
    genres = rec.get("genres")
    if not isinstance(genres, list) or not all(isinstance(g, str) for g in genres):
        raise DataFormatError(f"{path!r}: 'genres' must be a list of genre names; got "
                              f"{genres!r}.")
    multi_hot = np.zeros(NUM_CLASSES, np.uint8)
    for g in genres:
        if g in GENRES:
            multi_hot[GENRES.index(g)] = 1
    plot = rec.get("plot")
    if isinstance(plot, str):
        plot = [plot]
    if not isinstance(plot, list) or not plot or not all(isinstance(p, str) for p in plot):
        raise DataFormatError(f"{path!r}: 'plot' must be a non-empty list of strings; got "
                              f"{type(plot).__name__}.")
    return multi_hot, max(plot, key=len)


def build_vocab(texts, *, max_vocab: int, min_count: int) -> list[str]:
    counts = collections.Counter(t for text in texts for t in tokenize(text))
    words = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
    return ["<pad>", "<unk>"] + words[: max(max_vocab - 2, 0)]


def read_vocab_file(path: str) -> list[str]:
    core.require_file(path, "a vocabulary file, one token per line")
    words = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            parts = line.split()
            if parts:
                words.append(parts[0])
    if not words:
        raise DataFormatError(f"{path!r} holds no tokens.")
    words = [w for w in words if w not in ("<pad>", "<unk>")]
    dup = [w for w, c in collections.Counter(words).items() if c > 1]
    if dup:
        raise DataFormatError(f"{path!r} lists tokens more than once: {dup[:5]}")
    return ["<pad>", "<unk>"] + words


def encode_text(text: str, index: dict[str, int]) -> np.ndarray:
    return np.asarray([index.get(t, UNK) for t in tokenize(text)], np.int32)


def original_examples(root, ids, records, encode, rgb_encoding):
    def one(item):
        k, movie_id = item
        path = os.path.join(root, "dataset", f"{movie_id}.jpeg")
        if not os.path.isfile(path):
            raise DataNotFoundError(f"Missing file {path!r}: the poster of {movie_id} listed in "
                                    "split.json.")
        image, _ = segmentation.check_rgb(path, rgb_encoding)
        genres, plot = records[movie_id]
        return f"{k:08d}", {
            "image": image,
            "text_ids": encode(plot),
            "plot": plot,
            "genres": genres,
            "id": movie_id,
        }

    items = list(enumerate(ids))
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        for s in range(0, len(items), 64):
            yield from pool.map(one, items[s : s + 64])


# --------------------------------------------------------------------------------------------


class Mmimdb(core.ArrayRecordBuilder, skip_registration=True):
    """MM-IMDB genre classification (MultiBench HDF5 or original release)."""

    name = "mmimdb"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "MultiBench HDF5 and original-release forms."}
    BUILDER_CONFIGS = [
        tfds.core.BuilderConfig(name="multibench", description="MultiBench multimodal_imdb.hdf5"),
        tfds.core.BuilderConfig(name="original", description="original mmimdb/ release"),
        tfds.core.BuilderConfig(name="original_clip",
                                description="original mmimdb/ release, CLIP BPE ids"),
    ]
    DEFAULT_CONFIG_NAME = "multibench"
    MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
    DESCRIPTION = "MM-IMDB: 23-genre multi-label classification from poster and plot."
    HOMEPAGE = "https://github.com/johnarevalo/gmu-mmimdb"

    def __init__(self, *, split_rows=None, vocab_file=None, max_vocab=30000, min_count=2,
                 rgb_encoding="jpeg95", tokenizer=None, **kwargs):
        self.split_rows = split_rows
        self.tokenizer = tokenizer
        self.vocab_file = vocab_file
        self.max_vocab = int(max_vocab)
        self.min_count = int(min_count)
        self.rgb_encoding = rgb_encoding
        super().__init__(**kwargs)

    def _features(self):
        feats = {
            "image": tfds.features.Tensor(shape=(), dtype=np.object_, doc="encoded poster"),
            "text_ids": tfds.features.Tensor(shape=(None,), dtype=np.int32, doc="plot tokens"),
            "genres": tfds.features.Tensor(shape=(NUM_CLASSES,), dtype=np.uint8,
                                           doc="multi-hot, canonical genre order"),
            "id": tfds.features.Tensor(shape=(), dtype=np.object_, doc="IMDb id"),
        }
        if self.builder_config.name == "multibench":
            feats["word2vec"] = tfds.features.Tensor(shape=(300,), dtype=np.float32)
            feats["vgg"] = tfds.features.Tensor(shape=(4096,), dtype=np.float32)
        else:
            feats["plot"] = tfds.features.Tensor(shape=(), dtype=np.object_, doc="plot text")
        return tfds.features.FeaturesDict(feats)

    def _split_generators(self, dl_manager):
        form, root = detect_form(os.fspath(dl_manager.manual_dir))
        if form != self.builder_config.name.removesuffix("_clip"):
            raise DataFormatError(
                f"{root!r} holds the {form!r} form; this builder config is "
                f"{self.builder_config.name!r}."
            )
        meta = self.info.metadata
        meta["form"] = form
        meta["class_names"] = list(GENRES)
        meta["rgb_encoding"] = self.rgb_encoding
        if form == "multibench":
            path = os.path.join(root, HDF5_NAME)
            f, rows = open_hdf5(path, self.split_rows)
            try:
                _genre_order(f["genres"], path)
                meta["vocab_size"] = hdf5_vocab_size(f, path)
                meta["image_hw"] = [int(f["images"].shape[2]), int(f["images"].shape[3])]
            finally:
                f.close()
            meta["split_rows"] = {k: list(v) for k, v in rows.items()}
            meta["tokenizer"] = "token ids as stored in the HDF5 'sequences'"
            return {
                split: hdf5_examples(path, self.split_rows, r, self.rgb_encoding)
                for split, r in rows.items()
            }
        ids = read_original_split(root)
        records = {}
        all_ids = [i for split in ("train", "val", "test") for i in ids[split]]
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            for movie_id, rec in zip(all_ids, pool.map(lambda i: read_record(root, i), all_ids)):
                records[movie_id] = rec
        if self.builder_config.name == "original_clip":
            tok = ClipTokenizer(self.tokenizer)
            meta["tokenizer"] = tok.describe()
            meta["vocab_size"] = tok.vocab_size

            def encode(text):
                ids, lengths = tok.encode([text])
                return ids[0, : lengths[0]]

            return {split: original_examples(root, ids[split], records, encode, self.rgb_encoding)
                    for split in ("train", "val", "test")}
        if self.vocab_file:
            vocab = read_vocab_file(self.vocab_file)
            meta["tokenizer"] = (f"vocabulary file {os.path.basename(self.vocab_file)}; "
                                 f"regex {TOKEN_RE.pattern} on lower-cased text")
        else:
            vocab = build_vocab((records[i][1] for i in ids["train"]), max_vocab=self.max_vocab,
                                min_count=self.min_count)
            meta["tokenizer"] = (f"vocabulary from the train split (min_count={self.min_count}, "
                                 f"max_vocab={self.max_vocab}); regex {TOKEN_RE.pattern} on "
                                 "lower-cased text")
        meta["vocab"] = vocab
        meta["vocab_size"] = len(vocab)
        index = {w: i for i, w in enumerate(vocab)}
        return {
            split: original_examples(root, ids[split], records,
                                     lambda text: encode_text(text, index), self.rgb_encoding)
            for split in ("train", "val", "test")
        }


# --------------------------------------------------------------------------------------------
# The grain map.


class MmimdbTransform:
    def __init__(self, *, modalities, image_size, max_text_len, augment, train, rgb_mean,
                 rgb_std, pad_id=PAD, end_id=None):
        self.modalities = tuple(modalities)
        self.hw = tuple(int(x) for x in image_size)
        self.max_len = int(max_text_len)
        self.pad_id, self.end_id = int(pad_id), end_id
        self.augment = bool(augment) and train
        self.normalize = imaging.RgbNormalizer(tuple(rgb_mean), tuple(rgb_std))

    def __call__(self, record, rng=None):
        out = {}
        if "image" in self.modalities:
            im = imaging.open_image(record["image"])
            if im.mode != "RGB":
                im = im.convert("RGB")
            geom = imaging.full_geometry((im.height, im.width), self.hw)
            if self.augment and rng is not None and rng.random() < 0.5:
                geom = imaging.Geometry(box=geom.box, paste=geom.paste, out=geom.out, flip=True)
            out["image"] = imaging.apply_geometry(im, geom, resample=imaging.BILINEAR, fill=0)
        if "text" in self.modalities:
            ids = np.asarray(record["text_ids"], np.int32)
            if ids.size > self.max_len:  # CLIP keeps its end token last, as CLIP truncates
                ids = ids[: self.max_len].copy()
                if self.end_id is not None:
                    ids[-1] = self.end_id
            text = np.full(self.max_len, self.pad_id, np.int32)
            text[: ids.size] = ids
            out["text"] = text
            out["text_mask"] = np.arange(self.max_len) < ids.size
        if "word2vec" in self.modalities:
            out["word2vec"] = np.asarray(record["word2vec"], np.float32)
        if "vgg" in self.modalities:
            out["vgg"] = np.asarray(record["vgg"], np.float32)
        out["label"] = np.asarray(record["genres"], np.float32)
        return out

    def finalize_batch(self, batch):
        """uint8 posters -> ImageNet-normalised float32, over the whole batch."""
        if "image" not in batch:
            return batch
        return {**batch, "image": self.normalize(batch["image"])}


MODALITIES = {"multibench": ("image", "text", "word2vec", "vgg"), "original": ("image", "text")}


class MmimdbSpec(DatasetSpec):
    name = "mmimdb"
    builder_cls = Mmimdb
    splits = ("train", "val", "test")

    def add_defaults(self, cfg):
        cfg.form = "multibench"
        cfg.tokenizer = "words"
        cfg.modalities = ("image", "text")
        cfg.image_size = (256, 160)
        cfg.max_text_len = 256
        cfg.augment = False
        cfg.rgb_mean = imaging.IMAGENET_MEAN
        cfg.rgb_std = imaging.IMAGENET_STD

    def validate(self, cfg):
        if cfg.form not in FORMS:
            raise ValueError(f"mmimdb form must be one of {FORMS}; got {cfg.form!r}")
        if cfg.tokenizer not in TOKENIZERS:
            raise ValueError(f"mmimdb tokenizer must be one of {TOKENIZERS}; got "
                             f"{cfg.tokenizer!r}")
        if cfg.tokenizer == "clip" and cfg.form != "original":
            raise ValueError(f"mmimdb tokenizer='clip' with form={cfg.form!r}: "
                             f"{CLIP_NEEDS_ORIGINAL}")
        mods = tuple(cfg.modalities)
        allowed = MODALITIES[cfg.form]
        if not mods or len(set(mods)) != len(mods) or any(m not in allowed for m in mods):
            raise ValueError(f"mmimdb ({cfg.form}) modalities must be distinct names of "
                             f"{allowed}; got {mods}")
        if len(tuple(cfg.image_size)) != 2 or int(cfg.max_text_len) <= 0:
            raise ValueError("mmimdb image_size must be (H, W) and max_text_len positive")

    def config_name(self, cfg):
        return "original_clip" if cfg.get("tokenizer") == "clip" else cfg.form

    def missing_message(self, cfg):
        return (
            f"mmimdb ({cfg.form} form) is not prepared under {cfg.data_dir!r} (expected "
            f"{core.version_dir(Mmimdb, cfg.data_dir, self.config_name(cfg))}).\n"
            f"{MANUAL_DOWNLOAD_INSTRUCTIONS}Then run:\n  python -m mango_jax.data.prepare "
            f"--dataset=mmimdb --manual_dir=PATH --data_dir={cfg.data_dir}"
            + {"multibench": " [--split_rows=TRAIN_END,VAL_END]", "original": "",
               "original_clip": " --tokenizer=CLIP_FOLDER"}[self.config_name(cfg)]
            + "\n(see data/README.md and data/mmimdb/README.md)"
        )

    def prepare(self, *, data_dir, manual_dir, overwrite=False, split_rows=None,
                vocab_file=None, max_vocab=30000, min_count=2, rgb_encoding="jpeg95",
                tokenizer=None, **options):
        if options:
            raise ValueError(f"mmimdb: unknown options {sorted(options)}")
        if manual_dir is None:
            raise DataNotFoundError("mmimdb needs --manual_dir.\n" + MANUAL_DOWNLOAD_INSTRUCTIONS)
        form, root = detect_form(os.fspath(manual_dir))
        if form == "multibench":
            if tokenizer is not None:
                raise DataFormatError(f"{root!r} holds the MultiBench HDF5. "
                                      + CLIP_NEEDS_ORIGINAL)
            if vocab_file is not None:
                raise ValueError("--vocab_file applies to the original form only")
            open_hdf5(os.path.join(root, HDF5_NAME), split_rows)[0].close()  # Fail early.
        elif split_rows is not None:
            raise ValueError("--split_rows applies to the MultiBench HDF5 form only")
        if tokenizer is not None:
            if vocab_file is not None:
                raise ValueError("--vocab_file and --tokenizer exclude each other: the first "
                                 "gives word ids, the second CLIP's BPE ids")
            ClipTokenizer(tokenizer)  # Fail early.
            form = "original_clip"
        kwargs = {"split_rows": split_rows, "vocab_file": vocab_file, "max_vocab": max_vocab,
                  "min_count": min_count, "rgb_encoding": rgb_encoding, "tokenizer": tokenizer}
        return core.prepare_atomically(
            Mmimdb, data_dir=data_dir, manual_dir=root, config_name=form, overwrite=overwrite,
            builder_kwargs=kwargs,
        )

    def info(self, cfg, builder):
        self.validate(cfg)
        meta = dict(builder.info.metadata)
        context = meta["tokenizer"].get("context_length") if cfg.tokenizer == "clip" else None
        if context and "text" in cfg.modalities and int(cfg.max_text_len) > context:
            raise ValueError(f"mmimdb max_text_len={cfg.max_text_len} exceeds the context of "
                             f"the CLIP tokenizer that made these ids ({context}); set "
                             f"data.max_text_len <= {context}")
        h, w = (int(x) for x in cfg.image_size)
        shapes = {"image": (h, w, 3), "text": (int(cfg.max_text_len),), "word2vec": (300,),
                  "vgg": (4096,)}
        kinds = {"image": "image", "text": "tokens", "word2vec": "vector", "vgg": "vector"}
        return DatasetInfo(
            name=self.name,
            task="multilabel",
            num_classes=NUM_CLASSES,
            modality_shapes={m: shapes[m] for m in cfg.modalities},
            modality_kinds={m: kinds[m] for m in cfg.modalities},
            vocab_size=int(meta["vocab_size"]) if "text" in cfg.modalities else None,
            label_shape=(NUM_CLASSES,),
            eval_label_shape=(NUM_CLASSES,),
            label_dtype="float32",
            ignore_index=None,
            class_names=GENRES,
            split_sizes={k: v.num_examples for k, v in builder.info.splits.items()},
            metadata=meta,
        )

    def transform(self, cfg, info, *, train):
        clip = info.metadata["tokenizer"] if cfg.tokenizer == "clip" else None
        return MmimdbTransform(
            modalities=cfg.modalities, image_size=cfg.image_size,
            max_text_len=cfg.max_text_len, augment=cfg.augment, train=train,
            rgb_mean=cfg.rgb_mean, rgb_std=cfg.rgb_std,
            pad_id=clip["pad_id"] if clip else PAD, end_id=clip["end_id"] if clip else None,
        )


SPEC = MmimdbSpec()
