"""The generic paired dataset: what preparing infers, what the pipeline yields (checked against
the source files with NumPy), and every bad input, which fails naming the row, the column and
the file and leaves nothing that reads as prepared."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import paired_fixtures as fx
import pytest
from conftest import collect
from PIL import Image

from mango_jax import data
from mango_jax.data import paired
from mango_jax.data.core import DataFormatError, DataNotFoundError

REPO = Path(__file__).resolve().parents[2]


def prepare(raw, data_dir, name="pairs", **options):
    return paired.SPEC.prepare(data_dir=str(data_dir), manual_dir=str(raw), name=name,
                               **options)


def config(data_dir, name="pairs", modalities=None):
    cfg = data.default_config("paired")
    cfg.data_dir, cfg.paired_name = str(data_dir), name
    cfg.modalities = modalities or tuple(paired.read_metadata(str(data_dir), name)
                                         ["manifest_columns"])
    cfg.num_threads = 1
    return cfg


def eval_pass(cfg, split):
    it = data.make_iterator(cfg, split, batch_size=8, train=False, seed=0,
                            shard_by_process=False)
    batches = collect(it)
    mask = np.concatenate([b["mask"] for b in batches])
    return {k: np.concatenate([b[k] for b in batches])[mask] for k in batches[0]}


def rows_of(written, split):
    return [i for i, s in enumerate(written["split"]) if s == split]


def test_multiclass_images_and_vectors_through_the_command_line(tmp_path):
    written = fx.write_multiclass(str(tmp_path / "raw"), bits=16)
    out = subprocess.run(
        [sys.executable, "-m", "mango_jax.data.prepare", "--dataset=paired",
         f"--manual_dir={tmp_path / 'raw'}", "--name=pairs", f"--data_dir={tmp_path / 'data'}"],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    folder = tmp_path / "data" / "pairs" / "1.0.0"
    assert not [f for f in os.listdir(folder) if f.endswith((".pkl", ".pickle", ".npy"))]
    meta = json.loads((folder / "metadata.json").read_text())["paired"]
    assert meta["label"] == {"task": "multiclass", "classes": list(fx.CLASSES)}
    assert meta["modalities"]["photo"]["kind"] == "image"
    assert meta["modalities"]["photo"]["shape"] == [16, 16, 1]
    assert meta["modalities"]["feat"]["kind"] == "vector"
    assert meta["split_sizes"] == {"train": 24, "val": 8, "test": 8}

    train = rows_of(written, "train")
    photos = np.stack([written["photo"][i] for i in train]).astype(np.float64)
    feats = np.stack([written["feat"][i] for i in train]).astype(np.float64)
    assert photos.max() > 255  # 16-bit pixels kept as they are
    np.testing.assert_allclose(meta["modalities"]["photo"]["stats"]["mean"],
                               [photos.mean()], rtol=1e-9)
    np.testing.assert_allclose(meta["modalities"]["photo"]["stats"]["std"],
                               [photos.std()], rtol=1e-6)
    np.testing.assert_allclose(meta["modalities"]["feat"]["stats"]["std"], feats.std(0),
                               rtol=1e-6)

    cfg = config(tmp_path / "data")
    info = data.dataset_info(cfg)
    assert info.task == "multiclass" and info.class_names == fx.CLASSES
    assert info.modality_shapes == {"photo": (16, 16, 1), "feat": (5,)}
    got = eval_pass(cfg, "test")
    test = rows_of(written, "test")
    expect_photo = (np.stack([written["photo"][i] for i in test]) - photos.mean()) / photos.std()
    expect_feat = (np.stack([written["feat"][i] for i in test]) - feats.mean(0)) / feats.std(0)
    np.testing.assert_allclose(got["photo"], expect_photo, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got["feat"], expect_feat, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(got["label"], [fx.CLASSES.index(written["label"][i])
                                                 for i in test])
    batch = next(data.make_iterator(cfg, "train", batch_size=8, train=True, seed=0))
    assert batch["photo"].shape == (8, 16, 16, 1) and batch["label"].dtype == np.int32


def test_multilabel_text_arrays_and_a_classes_file(tmp_path):
    written = fx.write_multilabel_text(str(tmp_path / "raw"))
    order = ("eel", "cat", "dog")
    (tmp_path / "classes.txt").write_text("\n".join(order) + "\n")
    prepare(tmp_path / "raw", tmp_path / "data", text_columns="caption",
            classes=str(tmp_path / "classes.txt"))
    cfg = config(tmp_path / "data")
    info = data.dataset_info(cfg)
    assert info.task == "multilabel" and info.class_names == order
    assert info.modality_kinds == {"view": "image", "caption": "tokens"}
    meta = info.metadata["paired"]
    vocab = meta["text"]["vocab"]
    train = rows_of(written, "train")
    train_words = {w for i in train for w in written["caption"][i].split()}
    assert vocab[:2] == ["<pad>", "<unk>"] and set(vocab[2:]) == train_words
    longest = max(len(written["caption"][i].split()) for i in train)
    assert info.modality_shapes["caption"] == (longest,)

    got = eval_pass(cfg, "test")
    test = rows_of(written, "test")
    for k, i in enumerate(test):
        words = written["caption"][i].split()[:longest]
        ids = [vocab.index(w) if w in vocab else 1 for w in words]
        np.testing.assert_array_equal(got["caption"][k], ids + [0] * (longest - len(ids)))
        hot = [float(c in written["label"][i].split("|")) for c in order]
        np.testing.assert_array_equal(got["label"][k], hot)
    assert (got["caption"] == 1).any()  # 'zebra' is not in the train vocabulary
    views = np.stack([written["view"][i] for i in train]).reshape(-1, 3).astype(np.float64)
    expect = (np.stack([written["view"][i] for i in test]) - views.mean(0)) / views.std(0)
    np.testing.assert_allclose(got["view"], expect, rtol=1e-5, atol=1e-5)


def test_segmentation_masks(tmp_path):
    written = fx.write_segmentation(str(tmp_path / "raw"))
    prepare(tmp_path / "raw", tmp_path / "data")
    cfg = config(tmp_path / "data")
    info = data.dataset_info(cfg)
    assert info.task == "segmentation" and info.num_classes == 3 and info.ignore_index == 255
    assert info.label_shape == (16, 16) and info.class_names == ("0", "1", "2")
    assert info.modality_shapes == {"rgb": (16, 16, 3), "depth": (16, 16, 1)}
    got = eval_pass(cfg, "val")
    val = rows_of(written, "val")
    np.testing.assert_array_equal(got["label"], np.stack([written["label"][i] for i in val]))
    train = rows_of(written, "train")
    depth = np.stack([written["depth"][i] for i in train]).astype(np.float64)
    expect = (np.stack([written["depth"][i] for i in val]) - depth.mean()) / depth.std()
    np.testing.assert_allclose(got["depth"], expect, rtol=1e-5, atol=1e-5)


def test_translation_targets_are_scaled_to_minus_one_one(tmp_path):
    written = fx.write_segmentation(str(tmp_path / "raw"))
    for i, rgb in enumerate(written["rgb"]):  # Targets: the RGB images themselves.
        Image.fromarray(rgb).save(str(tmp_path / "raw" / "mask" / f"{i}.png"))
    prepare(tmp_path / "raw", tmp_path / "data")
    cfg = config(tmp_path / "data", modalities=("depth", "rgb"))
    info = data.dataset_info(cfg)
    assert info.task == "translation" and info.label_shape == (16, 16, 3)
    got = eval_pass(cfg, "test")
    test = rows_of(written, "test")
    expect = np.stack([written["rgb"][i] for i in test]) / 127.5 - 1.0
    np.testing.assert_allclose(got["label"], expect, atol=1e-6)


# --------------------------------------------------------------------------------------------
# Bad input.


def fails(raw, tmp_path, exc, *patterns, **options):
    with pytest.raises(exc) as err:
        prepare(raw, tmp_path / "data", **options)
    for p in patterns:
        assert p in str(err.value), (p, str(err.value))
    assert not (tmp_path / "data" / "pairs" / "1.0.0").exists()
    leftovers = (os.listdir(tmp_path / "data" / "pairs")
                 if (tmp_path / "data" / "pairs").exists() else [])
    assert leftovers == []
    return str(err.value)


def edit_row(manifest, row, column, value):
    lines = Path(manifest).read_text().splitlines()
    header = lines[0].split(",")
    cells = lines[row + 1].split(",")
    cells[header.index(column)] = value
    lines[row + 1] = ",".join(cells)
    Path(manifest).write_text("\n".join(lines) + "\n")


@pytest.fixture
def raw(tmp_path):
    written = fx.write_multiclass(str(tmp_path / "raw"), n=(8, 2, 2), size=8)
    return tmp_path / "raw", written["manifest"]


def test_missing_file(raw, tmp_path):
    folder, manifest = raw
    os.remove(folder / "img" / "5.png")
    fails(folder, tmp_path, DataNotFoundError, "row 5 (line 7)", "column 'photo'", "img/5.png",
          "missing")


def test_unreadable_file(raw, tmp_path):
    folder, manifest = raw
    (folder / "img" / "3.png").write_bytes(b"not a png at all")
    fails(folder, tmp_path, DataFormatError, "row 3", "column 'photo'", "img/3.png",
          "unreadable")
    fx.write_multiclass(str(folder), n=(8, 2, 2), size=8)
    np.save(folder / "vec" / "2.npy", np.array([{"a": 1}], dtype=object))  # a pickle
    fails(folder, tmp_path, DataFormatError, "row 2", "column 'feat'", "vec/2.npy",
          "unreadable")


def test_file_of_another_shape(raw, tmp_path):
    folder, manifest = raw
    Image.fromarray(np.zeros((8, 9), np.uint8)).save(folder / "img" / "4.png")
    fails(folder, tmp_path, DataFormatError, "row 4", "column 'photo'", "img/4.png",
          "(8, 9, 1)", "(8, 8, 1)")


def test_unknown_split(raw, tmp_path):
    folder, manifest = raw
    edit_row(manifest, 6, "split", "holdout")
    fails(folder, tmp_path, DataFormatError, "row 6", "column 'split'", "'holdout'")


def test_mixed_kinds_in_one_column(raw, tmp_path):
    folder, manifest = raw
    np.save(folder / "vec" / "7.npy", np.zeros((8, 8), np.float32))  # an image among vectors
    fails(folder, tmp_path, DataFormatError, "row 7", "column 'feat'", "vec/7.npy",
          "mixed kinds")
    fx.write_multiclass(str(folder), n=(8, 2, 2), size=8)
    edit_row(manifest, 1, "feat", "img/1.png")  # a PNG among .npy arrays
    fails(folder, tmp_path, DataFormatError, "row 1", "column 'feat'", "img/1.png",
          "mixed kinds")
    fx.write_multiclass(str(folder), n=(8, 2, 2), size=8)
    edit_row(manifest, 9, "label", "mask.png")  # a file among class names
    fails(folder, tmp_path, DataFormatError, "row 9", "column 'label'", "mask.png",
          "mixed kinds")


def test_label_outside_a_classes_file(raw, tmp_path):
    folder, manifest = raw
    (tmp_path / "classes.txt").write_text("cat\ndog\neel\n")
    edit_row(manifest, 2, "label", "fox")
    fails(folder, tmp_path, DataFormatError, "row 2", "column 'label'", "value 'fox'",
          classes=str(tmp_path / "classes.txt"))


@pytest.mark.parametrize("name", ["mfeat", "nyudv2", "paired", "weights", "My-Data", ""])
def test_reserved_or_malformed_names(raw, tmp_path, name):
    with pytest.raises(ValueError, match="name"):
        prepare(raw[0], tmp_path / "data", name=name)
    assert not (tmp_path / "data").exists()


def test_failure_while_writing_leaves_nothing_prepared(raw, tmp_path, monkeypatch):
    calls = []
    real = paired.make_record

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 5:
            raise OSError("disk full")
        return real(*args, **kwargs)

    monkeypatch.setattr(paired, "make_record", flaky)
    fails(raw[0], tmp_path, OSError, "disk full")
    assert len(calls) == 5
    cfg = data.default_config("paired")
    cfg.data_dir, cfg.paired_name, cfg.modalities = str(tmp_path / "data"), "pairs", ("a", "b")
    with pytest.raises(DataNotFoundError, match="--name=pairs"):
        data.ensure_prepared(cfg)
