"""Taskonomy (translation) and MM-IMDB (both forms): prepare, read back through grain, check."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections import Counter

import data_fixtures as fixtures
import grain
import numpy as np
import pytest
from PIL import Image

from mango_jax import data
from mango_jax.data import mmimdb, taskonomy
from mango_jax.data.tokenizer import ClipTokenizer

CLIP_FIXTURE = os.path.join(os.path.dirname(__file__), "clip_tokenizer")

# --------------------------------------------------------------------------------------------
# Taskonomy


@pytest.fixture(scope="module")
def tk(tmp_path_factory):
    root, _ = fixtures.prepared(tmp_path_factory, taskonomy.SPEC, fixtures.write_taskonomy,
                                n_train=4, n_val=3, hw=(20, 20))
    return root


def _tk_cfg(root, **kw):
    cfg = data.default_config("taskonomy")
    cfg.data_dir = str(root / "data")
    cfg.image_size, cfg.load_size = 16, 18
    for k, v in kw.items():
        setattr(cfg, k, v)
    return cfg


def test_taskonomy_all_domains_shapes_and_range(tk):
    cfg = _tk_cfg(tk)
    info = data.dataset_info(cfg)
    assert info.task == "translation" and info.num_classes is None
    assert info.split_sizes == {"train": 4, "val": 3}
    assert sorted(info.metadata["domains"]) == sorted(taskonomy.DOMAINS)
    assert cfg.sources == cfg.modalities == ("reshading", "edge_texture")
    for sources in [("reshading", "edge_texture"), ("depth_euclidean", "normal"),
                    ("principal_curvature", "segment_unsup25d"),
                    ("edge_occlusion", "depth_zbuffer"), ("segment_unsup2d", "rgb")]:
        cfg.sources = sources
        cfg.target = "normal" if "rgb" in sources else "rgb"
        if cfg.target in sources:
            cfg.target = "reshading"
        info = data.dataset_info(cfg)
        assert tuple(info.modality_shapes) == sources
        for train in (True, False):
            b = next(data.make_iterator(cfg, "train" if train else "val", batch_size=2,
                                        train=train, seed=0, num_workers=0))
            assert set(b) == {*sources, "label", "mask"}
            for d in sources:
                c = 3 if d in taskonomy.THREE_CHANNEL else 1
                assert b[d].shape == (2, 16, 16, c) and b[d].dtype == np.float32
                assert -1.0 <= b[d].min() and b[d].max() <= 1.0
            assert b["label"].shape == (2, 16, 16, 3) and b["label"].dtype == np.float32
            assert -1.0 <= b["label"].min() and b["label"].max() <= 1.0


def test_taskonomy_values(tk):
    cfg = _tk_cfg(tk, sources=("depth_euclidean", "edge_texture"), target="rgb", image_size=20,
                  load_size=22)
    b = next(data.make_iterator(cfg, "val", batch_size=3, train=False, seed=0, num_workers=0))
    # Eval at the native size: identity geometry, so the values are exactly the preprocessing.
    k = 4  # first val example
    raw = fixtures.taskonomy_pixels("depth_euclidean", k, (20, 20)).astype(np.float64)
    x = np.log1p(raw)
    x = 2 * (x - x.min()) / (x.max() - x.min()) - 1
    np.testing.assert_allclose(b["depth_euclidean"][0, ..., 0], x, atol=1e-5)
    e = fixtures.taskonomy_pixels("edge_texture", k, (20, 20)).astype(np.float64)
    np.testing.assert_allclose(b["edge_texture"][0, ..., 0],
                               2 * (e - e.min()) / (e.max() - e.min()) - 1, atol=1e-5)
    rgb = fixtures.taskonomy_pixels("rgb", k, (20, 20)) / 127.5 - 1
    np.testing.assert_allclose(b["label"][0], rgb, atol=1e-5)
    assert b["depth_euclidean"][0].min() == -1 and b["depth_euclidean"][0].max() == 1


def test_taskonomy_train_crop_flip_alignment(tk):
    cfg = _tk_cfg(tk, sources=("reshading", "segment_unsup2d"), target="reshading")
    with pytest.raises(ValueError, match="also a source"):
        data.dataset_info(cfg)
    cfg = _tk_cfg(tk, sources=("segment_unsup2d", "normal"), target="segment_unsup25d")
    it = data.make_iterator(cfg, "train", batch_size=2, train=True, seed=1, num_workers=0)
    for _ in range(4):
        b = next(it)
        # Both segment domains hold the same pixels in the fixture: crop/flip must agree.
        np.testing.assert_allclose(b["segment_unsup2d"][..., 0], b["label"][..., 0], atol=1e-6)


@pytest.mark.parametrize("old_names,template", [(True, False), (False, True), (True, True)])
def test_taskonomy_old_names_and_template_lines(tmp_path, old_names, template):
    folders = fixtures.write_taskonomy(str(tmp_path / "raw"), old_names=old_names,
                                       template_lines=template, n_train=2, n_val=1)
    if old_names:
        assert folders["reshading"] == "reshade" and folders["edge_texture"] == "edge2d"
    taskonomy.SPEC.prepare(data_dir=str(tmp_path / "d"), manual_dir=str(tmp_path / "raw"))
    cfg = data.default_config("taskonomy")
    cfg.data_dir = str(tmp_path / "d")
    assert len(data.dataset_info(cfg).metadata["domains"]) == 10
    b = next(data.make_iterator(cfg, "val", batch_size=1, train=False, seed=0, num_workers=0))
    assert b["reshading"].shape == (1, 256, 256, 1) and b["label"].shape == (1, 256, 256, 3)


def test_taskonomy_subset_of_domains(tmp_path):
    fixtures.write_taskonomy(str(tmp_path / "raw"), domains=("rgb", "normal", "depth_zbuffer"))
    taskonomy.SPEC.prepare(data_dir=str(tmp_path / "d"), manual_dir=str(tmp_path / "raw"))
    cfg = data.default_config("taskonomy")
    cfg.data_dir = str(tmp_path / "d")
    with pytest.raises(ValueError, match="reshading"):
        data.dataset_info(cfg)  # default sources were not prepared
    cfg.sources = ("normal", "depth_zbuffer")
    assert data.dataset_info(cfg).modality_shapes["normal"] == (256, 256, 3)


# --------------------------------------------------------------------------------------------
# MM-IMDB, MultiBench HDF5


@pytest.mark.parametrize("vlen,reverse", [(True, False), (False, True)])
def test_mmimdb_hdf5(tmp_path, vlen, reverse):
    truth = fixtures.write_mmimdb_hdf5(str(tmp_path / "raw"), n=12, vlen=vlen,
                                       reverse_names=reverse)
    (tmp_path / "raw" / "metadata.npy").write_bytes(b"not even a pickle")
    mmimdb.SPEC.prepare(data_dir=str(tmp_path / "d"), manual_dir=str(tmp_path / "raw"),
                        split_rows="6,9", rgb_encoding="source")
    cfg = data.default_config("mmimdb")
    cfg.data_dir = str(tmp_path / "d")
    cfg.image_size = (16, 10)
    cfg.max_text_len = 6
    cfg.modalities = ("image", "text")
    info = data.dataset_info(cfg)
    assert info.task == "multilabel" and info.num_classes == 23
    assert info.split_sizes == {"train": 6, "val": 3, "test": 3}
    assert info.class_names == mmimdb.GENRES
    assert info.vocab_size == max(int(s.max()) for s in truth["sequences"]) + 1
    assert info.modality_kinds == {"image": "image", "text": "tokens"}
    batches = list(data.make_iterator(cfg, "test", batch_size=2, train=False, seed=0,
                                      num_workers=0))
    assert len(batches) == 2 and batches[1]["mask"].tolist() == [True, False]
    labels = np.concatenate([b["label"] for b in batches])[:3]
    assert labels.dtype == np.float32
    np.testing.assert_array_equal(labels, truth["genres"][9:12])  # canonical order
    text = np.concatenate([b["text"] for b in batches])[:3]
    assert text.dtype == np.int32 and text.shape == (3, 6)
    text_mask = np.concatenate([b["text_mask"] for b in batches])[:3]
    assert text_mask.dtype == bool and text_mask.shape == (3, 6)
    for row, row_mask, seq in zip(text, text_mask, truth["sequences"][9:12]):
        s = seq[:6]
        np.testing.assert_array_equal(row[: s.size], s)
        assert (row[s.size :] == 0).all()
        np.testing.assert_array_equal(row_mask, np.arange(6) < s.size)
    img = np.concatenate([b["image"] for b in batches])[:3]
    assert img.shape == (3, 16, 10, 3)
    mean, std = np.asarray(mmimdb.imaging.IMAGENET_MEAN), np.asarray(
        mmimdb.imaging.IMAGENET_STD)
    np.testing.assert_allclose((img * std + mean) * 255,
                               truth["images"][9:12].transpose(0, 2, 3, 1), atol=1e-3)
    cfg.modalities = ("word2vec", "vgg")
    b = next(data.make_iterator(cfg, "train", batch_size=4, train=True, seed=0, num_workers=0))
    assert b["word2vec"].shape == (4, 300) and b["vgg"].shape == (4, 4096)
    assert b["label"].shape == (4, 23) and b["mask"].all()


def test_mmimdb_shards_and_determinism(tmp_path):
    fixtures.write_mmimdb_hdf5(str(tmp_path / "raw"), n=15)
    mmimdb.SPEC.prepare(data_dir=str(tmp_path / "d"), manual_dir=str(tmp_path / "raw"),
                        split_rows="7,10")
    cfg = data.default_config("mmimdb")
    cfg.data_dir = str(tmp_path / "d")
    cfg.image_size = (16, 10)
    cfg.modalities = ("vgg", "text")

    def keys(batches):
        return Counter(b["vgg"][j].tobytes() for b in batches for j in range(len(b["mask"]))
                       if b["mask"][j])

    full = keys(data.make_iterator(cfg, "test", batch_size=2, train=False, seed=0,
                                   num_workers=0))
    parts = [keys(data.make_iterator(
        cfg, "test", batch_size=2, train=False, seed=0, num_workers=0,
        shard_options=grain.sharding.ShardOptions(shard_index=p, shard_count=2)))
        for p in range(2)]
    assert parts[0] + parts[1] == full and sum(full.values()) == 5
    a = next(data.make_iterator(cfg, "train", batch_size=3, train=True, seed=9, num_workers=0))
    b = next(data.make_iterator(cfg, "train", batch_size=3, train=True, seed=9, num_workers=0))
    np.testing.assert_array_equal(a["vgg"], b["vgg"])


# --------------------------------------------------------------------------------------------
# MM-IMDB, original release


def test_mmimdb_original(tmp_path):
    records = fixtures.write_mmimdb_original(str(tmp_path / "raw"))
    # The parent of mmimdb/ is accepted as well as mmimdb/ itself.
    mmimdb.SPEC.prepare(data_dir=str(tmp_path / "d"), manual_dir=str(tmp_path / "raw"))
    cfg = data.default_config("mmimdb")
    cfg.data_dir = str(tmp_path / "d")
    with pytest.raises(data.DataNotFoundError, match="multibench"):
        data.dataset_info(cfg)  # only the original form was prepared
    cfg.form = "original"
    cfg.max_text_len = 8
    info = data.dataset_info(cfg)
    assert info.split_sizes == {"train": 4, "val": 2, "test": 1}
    vocab = info.metadata["vocab"]
    assert vocab[:2] == ["<pad>", "<unk>"] and info.vocab_size == len(vocab)
    batches = list(data.make_iterator(cfg, "val", batch_size=2, train=False, seed=0,
                                      num_workers=0))
    b = batches[0]
    assert b["image"].shape == (2, 256, 160, 3) and b["text"].shape == (2, 8)
    index = {w: i for i, w in enumerate(vocab)}
    for j, movie_id in enumerate(["0000005", "0000006"]):
        rec = records[movie_id]
        expect = np.zeros(23, np.float32)
        for g in rec["genres"]:
            if g in mmimdb.GENRES:  # 'Reality-TV' is not one of the 23
                expect[mmimdb.GENRES.index(g)] = 1
        np.testing.assert_array_equal(b["label"][j], expect)
        plot = max(rec["plot"], key=len)
        ids = [index.get(t, 1) for t in mmimdb.tokenize(plot)][:8]
        np.testing.assert_array_equal(b["text"][j][: len(ids)], ids)
        np.testing.assert_array_equal(b["text_mask"][j], np.arange(8) < len(ids))


def test_mmimdb_original_clip_ids(tmp_path):
    records = fixtures.write_mmimdb_original(str(tmp_path / "raw"))
    mmimdb.SPEC.prepare(data_dir=str(tmp_path / "d"), manual_dir=str(tmp_path / "raw"),
                        tokenizer=CLIP_FIXTURE)
    cfg = data.default_config("mmimdb")
    cfg.data_dir, cfg.form, cfg.tokenizer = str(tmp_path / "d"), "original", "clip"
    cfg.max_text_len = 100
    with pytest.raises(ValueError, match="max_text_len <= 77"):
        data.dataset_info(cfg)
    cfg.max_text_len = max_len = 40
    tok = ClipTokenizer(CLIP_FIXTURE)
    info = data.dataset_info(cfg)
    assert info.vocab_size == tok.vocab_size and info.metadata["tokenizer"]["kind"] == "clip"
    b = next(data.make_iterator(cfg, "train", batch_size=4, train=False, seed=0, num_workers=0))
    plots = [max(records[f"000000{k}"]["plot"], key=len) for k in range(1, 5)]
    ids, lengths = tok.encode(plots)
    assert lengths.min() < max_len < lengths.max()  # short and truncated plots
    for j in range(4):
        n = min(lengths[j], max_len)
        expect = np.full(max_len, tok.end_id)  # padded with the end token
        expect[:n] = ids[j, :n]
        expect[n - 1] = tok.end_id  # truncation keeps the end token last, as CLIP does
        np.testing.assert_array_equal(b["text"][j], expect)
        np.testing.assert_array_equal(b["text_mask"][j], np.arange(max_len) < n)
    # The word-vocabulary copy is another prepared folder.
    cfg.tokenizer = "words"
    with pytest.raises(data.DataNotFoundError, match="original/1.0.0"):
        data.dataset_info(cfg)


def test_mmimdb_clip_refused_for_the_hdf5(tmp_path):
    fixtures.write_mmimdb_hdf5(str(tmp_path / "raw"), n=12)
    with pytest.raises(data.DataFormatError, match="original release"):
        mmimdb.SPEC.prepare(data_dir=str(tmp_path / "d"), manual_dir=str(tmp_path / "raw"),
                            split_rows="6,9", tokenizer=CLIP_FIXTURE)
    cfg = data.default_config("mmimdb")
    cfg.tokenizer = "clip"
    with pytest.raises(ValueError, match="form='original'"):
        data.dataset_info(cfg)
    res = subprocess.run(
        [sys.executable, "-m", "mango_jax.data.prepare", "--dataset=mmimdb",
         f"--manual_dir={tmp_path / 'raw'}", f"--data_dir={tmp_path / 'd'}", "--split_rows=6,9",
         f"--tokenizer={CLIP_FIXTURE}"],
        capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=os.getcwd()),
        timeout=300)
    assert res.returncode != 0 and "prepare the original release" in res.stderr
    assert not (tmp_path / "d" / "mmimdb").exists()


def test_mmimdb_vocab_from_train_only_and_vocab_file(tmp_path):
    splits = {"train": ["a1", "a2"], "dev": ["b1"], "test": ["c1"]}
    fixtures.write_mmimdb_original(str(tmp_path / "raw"), splits)
    base = tmp_path / "raw" / "mmimdb" / "dataset"
    import json

    for movie_id, plot in [("a1", "alpha beta beta"), ("a2", "alpha gamma"),
                           ("b1", "zeta zeta zeta alpha"), ("c1", "beta")]:
        rec = json.loads((base / f"{movie_id}.json").read_text())
        rec["plot"] = [plot]
        (base / f"{movie_id}.json").write_text(json.dumps(rec))
    mmimdb.SPEC.prepare(data_dir=str(tmp_path / "d"), manual_dir=str(tmp_path / "raw" / "mmimdb"),
                        min_count=1)
    cfg = data.default_config("mmimdb")
    cfg.data_dir, cfg.form, cfg.max_text_len = str(tmp_path / "d"), "original", 4
    vocab = data.dataset_info(cfg).metadata["vocab"]
    assert vocab == ["<pad>", "<unk>", "alpha", "beta", "gamma"]  # zeta only in val
    b = next(data.make_iterator(cfg, "val", batch_size=1, train=False, seed=0, num_workers=0))
    np.testing.assert_array_equal(b["text"][0], [1, 1, 1, 2])
    vf = tmp_path / "vocab.txt"
    vf.write_text("zeta 10\nbeta 3\n")
    mmimdb.SPEC.prepare(data_dir=str(tmp_path / "d2"), manual_dir=str(tmp_path / "raw"),
                        vocab_file=str(vf))
    cfg.data_dir = str(tmp_path / "d2")
    assert data.dataset_info(cfg).metadata["vocab"] == ["<pad>", "<unk>", "zeta", "beta"]
    b = next(data.make_iterator(cfg, "val", batch_size=1, train=False, seed=0, num_workers=0))
    np.testing.assert_array_equal(b["text"][0], [2, 2, 2, 1])


# --------------------------------------------------------------------------------------------
# The command line


def test_prepare_command_line(tmp_path):
    raw = tmp_path / "raw"
    fixtures.write_sunrgbd(str(raw), n_train=2, n_test=1)
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    cmd = [sys.executable, "-m", "mango_jax.data.prepare", "--dataset=sunrgbd",
           f"--manual_dir={raw}", f"--data_dir={tmp_path / 'd'}"]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "Prepared sunrgbd" in res.stdout
    cfg = data.default_config("sunrgbd")
    cfg.data_dir = str(tmp_path / "d")
    assert data.num_examples(cfg, "train") == 2
    bad = subprocess.run(cmd[:3] + ["--dataset=nyudv2", f"--manual_dir={tmp_path / 'none'}",
                                    f"--data_dir={tmp_path / 'd'}"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert bad.returncode != 0 and "none" in bad.stderr


def test_rgb_encoding_source_keeps_png_bytes(tmp_path):
    raw = tmp_path / "raw"
    fixtures.write_nyu_folder(str(raw), n_train=2, n_test=1)
    from mango_jax.data import nyudv2

    nyudv2.SPEC.prepare(data_dir=str(tmp_path / "d"), manual_dir=str(raw), rgb_encoding="source")
    src = nyudv2.Nyudv2(data_dir=str(tmp_path / "d")).as_data_source("train")
    assert src[0]["rgb"] == (raw / "rgb" / "000000.png").read_bytes()
    nyudv2.SPEC.prepare(data_dir=str(tmp_path / "e"), manual_dir=str(raw))  # default jpeg95
    src = nyudv2.Nyudv2(data_dir=str(tmp_path / "e")).as_data_source("train")
    im = Image.open(io.BytesIO(src[0]["rgb"]))
    assert im.format == "JPEG"
    ref = np.asarray(Image.open(raw / "rgb" / "000000.png")).astype(int)
    assert np.abs(np.asarray(im).astype(int) - ref).mean() < 3
