"""NYUDv2 (folder and official .mat forms) and SUN RGB-D: prepare, read back, augment, shard."""

from __future__ import annotations

import io
import os
from collections import Counter

import data_fixtures as fixtures
import grain
import numpy as np
import pytest
from PIL import Image

from mango_jax import data
from mango_jax.data import core, imaging, nyudv2, sunrgbd


def _cfg(name, data_dir, **kw):
    cfg = data.default_config(name)
    cfg.data_dir = str(data_dir)
    cfg.image_size = kw.pop("image_size", 16)
    for k, v in kw.items():
        setattr(cfg, k, v)
    return cfg


def _eval(cfg, split, batch_size=4, **kw):
    it = data.make_iterator(cfg, split, batch_size=batch_size, train=False, seed=0,
                            num_workers=0, **kw)
    return list(it)


@pytest.fixture(scope="module")
def nyu_folder(tmp_path_factory):
    return fixtures.prepared(tmp_path_factory, nyudv2.SPEC, fixtures.write_nyu_folder,
                             n_train=6, n_test=3, hw=(24, 32))


def test_nyu_folder_shapes_dtypes_and_labels(nyu_folder):
    root, truth = nyu_folder
    cfg = _cfg("nyudv2", root / "data")
    info = data.dataset_info(cfg)
    assert info.task == "segmentation" and info.num_classes == 40 and info.ignore_index == 255
    assert info.split_sizes == {"train": 6, "test": 3}
    assert data.num_examples(cfg, "test") == data.num_examples(cfg, "val") == 3
    assert info.modality_shapes == {"rgb": (16, 16, 3), "depth": (16, 16, 1)}
    assert info.label_shape == (16, 16) and info.eval_label_shape == (24, 32)
    assert len(info.class_names) == 40 and info.metadata["form"] == "folder"

    batch = next(data.make_iterator(cfg, "train", batch_size=4, train=True, seed=0,
                                    num_workers=0))
    assert batch["rgb"].shape == (4, 16, 16, 3) and batch["rgb"].dtype == np.float32
    assert batch["depth"].shape == (4, 16, 16, 1) and batch["depth"].dtype == np.float32
    assert batch["label"].shape == (4, 16, 16) and batch["label"].dtype == np.int32
    assert batch["mask"].all() and batch["mask"].dtype == np.bool_
    assert set(np.unique(batch["label"])) <= set(range(40)) | {255}

    # Eval labels at the original resolution are the masks exactly (ignore stays 255).
    batches = _eval(cfg, "test", batch_size=2)
    assert len(batches) == 2 and batches[1]["mask"].tolist() == [True, False]
    labels = np.concatenate([b["label"] for b in batches])[:3]
    expect = [truth[f"rgb/{k:06d}.png"]["mask"] for k in (6, 7, 8)]
    np.testing.assert_array_equal(labels, np.stack(expect))
    assert (labels[:, 0, :] == 255).all()
    np.testing.assert_array_equal(np.concatenate([b["label_hw"] for b in batches])[:3],
                                  [[24, 32]] * 3)
    # Depth: GeminiFusion scaling (value / 255) by default, TokenFusion (/ 5000, 3 channels).
    d = np.concatenate([b["depth"] for b in batches])[:3]
    cfg_tf = _cfg("nyudv2", root / "data", depth_scale="tokenfusion")
    d_tf = np.concatenate([b["depth"] for b in _eval(cfg_tf, "test", batch_size=2)])[:3]
    assert d_tf.shape == (3, 16, 16, 3)
    np.testing.assert_allclose(d_tf[..., 0] * 5000, d[..., 0] * 255, rtol=1e-4)
    assert data.dataset_info(cfg_tf).modality_shapes["depth"] == (16, 16, 3)
    # Normalised for an ImageNet-normalised checkpoint: (depth / 255 - mean) / std.
    cfg_n = _cfg("nyudv2", root / "data", depth_mean=0.449, depth_std=0.226)
    d_n = np.concatenate([b["depth"] for b in _eval(cfg_n, "test", batch_size=2)])[:3]
    np.testing.assert_allclose(d_n, (d.astype(np.float64) - 0.449) / 0.226, rtol=1e-5,
                               atol=1e-5)


def test_nyu_eval_resized_labels(nyu_folder):
    root, _ = nyu_folder
    cfg = _cfg("nyudv2", root / "data", eval_label="resized")
    assert data.dataset_info(cfg).eval_label_shape == (16, 16)
    b = _eval(cfg, "test")[0]
    assert b["label"].shape == (4, 16, 16) and "label_hw" not in b


def test_augmentation_keeps_modalities_and_mask_aligned(tmp_path):
    """rgb's red channel encodes the class id; after scale/crop/flip they must still agree."""
    raw = tmp_path / "raw"
    for d in ("rgb", "masks", "depth"):
        (raw / d).mkdir(parents=True)
    lines = []
    for k in range(4):
        yy, xx = np.mgrid[:48, :64]
        mask = ((xx // 8) + 2 * (yy // 8) + k) % 20
        rgb = np.stack([mask * 12, np.zeros_like(mask), np.zeros_like(mask)], -1).astype(np.uint8)
        stem = f"{k}.png"
        Image.fromarray(rgb).save(raw / "rgb" / stem)
        Image.fromarray(mask.astype(np.uint8)).save(raw / "masks" / stem)
        Image.fromarray((mask * 100).astype(np.uint16)).save(raw / "depth" / stem)
        lines.append(f"rgb/{stem}\tmasks/{stem}\tdepth/{stem}\n")
    (raw / "train.txt").write_text("".join(lines))
    (raw / "val.txt").write_text(lines[0])
    nyudv2.SPEC.prepare(data_dir=str(tmp_path / "d"), manual_dir=str(raw), rgb_encoding="source")
    cfg = _cfg("nyudv2", tmp_path / "d", image_size=32)
    it = data.make_iterator(cfg, "train", batch_size=4, train=True, seed=3, num_workers=0)
    mean, std = np.asarray(imaging.IMAGENET_MEAN), np.asarray(imaging.IMAGENET_STD)
    agree = total = padded = 0
    for _ in range(10):
        b = next(it)
        red = (b["rgb"][..., 0] * std[0] + mean[0]) * 255
        valid = b["label"] != 255
        agree += np.sum(np.abs(red[valid] / 12 - b["label"][valid]) < 0.5)
        total += valid.sum()
        depth_ids = b["depth"][..., 0] * 255 / 100
        assert np.mean(np.abs(depth_ids[valid] - b["label"][valid]) < 0.5) > 0.8
        padded += (~valid).sum()
    assert agree / total > 0.85  # bilinear edges aside, rgb and mask are the same geometry
    assert padded > 0  # scales below 1 pad the mask with 255


@pytest.fixture(scope="module")
def nyu_official(tmp_path_factory):
    return fixtures.prepared(tmp_path_factory, nyudv2.SPEC, fixtures.write_nyu_official,
                             n=7, hw=(12, 16), options={"rgb_encoding": "source"})


def test_nyu_official_mapping_axes_and_split(nyu_official):
    root, truth = nyu_official
    cfg = _cfg("nyudv2", root / "data")
    info = data.dataset_info(cfg)
    assert info.split_sizes == {"train": 4, "test": 3}
    assert info.eval_label_shape == (12, 16) and info.metadata["form"] == "official"
    builder = nyudv2.Nyudv2(data_dir=cfg.data_dir)
    src = builder.as_data_source("test")
    for j, idx in enumerate(truth["test"]):
        rec = src[j]
        rgb = np.asarray(Image.open(io.BytesIO(rec["rgb"])))
        np.testing.assert_array_equal(rgb, truth["images"][idx - 1])  # 1-based, (H, W, 3)
        depth = np.asarray(Image.open(io.BytesIO(rec["depth"])))
        np.testing.assert_allclose(depth / 1000.0, truth["depths"][idx - 1], atol=6e-4)
    labels = np.concatenate([b["label"] for b in _eval(cfg, "test")])[:3]
    np.testing.assert_array_equal(labels, truth["labels40"][np.asarray(truth["test"]) - 1])
    assert labels[:, 0, 0].tolist() == [255] * 3  # 894-class 0 (unlabelled) -> ignore
    assert set(np.unique(labels)) <= set(range(40)) | {255}


def test_nyu_official_splits_v73(tmp_path):
    fixtures.write_nyu_official(str(tmp_path / "raw"), splits_v73=True)
    nyudv2.SPEC.prepare(data_dir=str(tmp_path / "d"), manual_dir=str(tmp_path / "raw"))
    assert data.num_examples(_cfg("nyudv2", tmp_path / "d"), "train") == 4


@pytest.fixture(scope="module")
def sun(tmp_path_factory):
    return fixtures.prepared(tmp_path_factory, sunrgbd.SPEC, fixtures.write_sunrgbd,
                             n_train=5, n_test=4)


def test_sunrgbd_label_shift_and_padding(sun):
    root, truth = sun
    cfg = _cfg("sunrgbd", root / "data")
    info = data.dataset_info(cfg)
    assert info.num_classes == 37 and info.split_sizes == {"train": 5, "test": 4}
    assert info.eval_label_shape == (24, 30)  # the largest label of the dataset
    batches = _eval(cfg, "test", batch_size=4)
    b = batches[0]
    for j in range(4):
        raw = truth[f"RGB/test_{j}.jpg"]["label"].astype(np.int64)
        h, w = raw.shape
        expect = raw - 1
        expect[raw == 0] = 255
        np.testing.assert_array_equal(b["label"][j, :h, :w], expect)
        assert (b["label"][j, h:, :] == 255).all() and (b["label"][j, :, w:] == 255).all()
        assert b["label_hw"][j].tolist() == [h, w]
    assert b["label"].max() == 255 and b["label"][b["label"] != 255].max() <= 36
    train = next(data.make_iterator(cfg, "train", batch_size=2, train=True, seed=0,
                                    num_workers=0))
    assert train["rgb"].shape == (2, 16, 16, 3) and train["label"].shape == (2, 16, 16)


def test_determinism_and_seed(nyu_folder):
    root, _ = nyu_folder
    cfg = _cfg("nyudv2", root / "data")

    def take(seed):
        it = data.make_iterator(cfg, "train", batch_size=3, train=True, seed=seed, num_workers=0)
        return [next(it) for _ in range(4)]

    a, b, c = take(1), take(1), take(2)
    for x, y in zip(a, b):
        for k in x:
            np.testing.assert_array_equal(x[k], y[k])
    assert any(not np.array_equal(x["rgb"], z["rgb"]) for x, z in zip(a, c))


def test_augmented_train_batches_do_not_depend_on_the_process_count(nyu_folder):
    # The augmentation RNG follows the example and epoch, not the process or its position.
    root, _ = nyu_folder
    cfg = _cfg("nyudv2", root / "data")

    def global_batches(processes):
        its = [data.make_iterator(
            cfg, "train", batch_size=6 // processes, train=True, seed=5, num_workers=0,
            shard_options=grain.sharding.ShardOptions(shard_index=p, shard_count=processes))
            for p in range(processes)]
        parts = [[next(it) for _ in range(3)] for it in its]  # three epochs of 6 examples
        return [{k: np.concatenate([part[i][k] for part in parts]) for k in ("rgb", "label")}
                for i in range(3)]

    single = global_batches(1)
    for processes in (2, 3):
        for a, b in zip(single, global_batches(processes)):
            np.testing.assert_array_equal(a["rgb"], b["rgb"])
            np.testing.assert_array_equal(a["label"], b["label"])
    # Every epoch is reshuffled and re-augmented.
    assert not np.array_equal(single[0]["rgb"], single[1]["rgb"])


def _key(b, j):
    return b["label"][j].tobytes()


@pytest.mark.parametrize("split", ["train", "test"])
def test_process_shards_disjoint_and_cover(nyu_folder, split):
    root, _ = nyu_folder
    cfg = _cfg("nyudv2", root / "data")
    full = [(_key(b, j)) for b in _eval(cfg, split, 2) for j in range(2) if b["mask"][j]]
    shards, steps = [], []
    for p in range(2):
        opts = grain.sharding.ShardOptions(shard_index=p, shard_count=2)
        batches = _eval(cfg, split, 2, shard_options=opts)
        steps.append(len(batches))
        shards.append(Counter(_key(b, j) for b in batches for j in range(2) if b["mask"][j]))
    assert steps[0] == steps[1]
    assert shards[0] + shards[1] == Counter(full)
    assert not set(shards[0]) & set(shards[1])


def test_multiprocessing_workers_and_state(nyu_folder):
    root, _ = nyu_folder
    cfg = _cfg("nyudv2", root / "data")
    ref = data.make_iterator(cfg, "train", batch_size=2, train=True, seed=4, num_workers=0)
    expected = [next(ref) for _ in range(6)]
    it = data.make_iterator(cfg, "train", batch_size=2, train=True, seed=4, num_workers=2)
    try:
        got = [next(it) for _ in range(3)]
        state = it.get_state()
    finally:
        it.close()
    for x, y in zip(expected, got):
        np.testing.assert_array_equal(x["rgb"], y["rgb"])
        np.testing.assert_array_equal(x["label"], y["label"])
    fresh = data.make_iterator(cfg, "train", batch_size=2, train=True, seed=4, num_workers=2)
    try:
        fresh.set_state(state)
        np.testing.assert_array_equal(next(fresh)["label"], expected[3]["label"])
    finally:
        fresh.close()


def test_not_prepared_message(tmp_path):
    for name in ("nyudv2", "sunrgbd", "taskonomy", "mmimdb"):
        cfg = data.default_config(name)
        cfg.data_dir = str(tmp_path)
        with pytest.raises(data.DataNotFoundError) as e:
            data.ensure_prepared(cfg)
        assert isinstance(e.value, FileNotFoundError)
        msg = str(e.value)
        assert f"python -m mango_jax.data.prepare --dataset={name} --manual_dir=" in msg
        assert str(tmp_path) in msg
    assert not os.listdir(tmp_path)


def test_prepared_dataset_is_small_and_encoded(nyu_folder):
    root, _ = nyu_folder
    vdir = core.version_dir(nyudv2.Nyudv2, str(root / "data"))
    files = os.listdir(vdir)
    assert any(f.startswith("nyudv2-train.array_record") for f in files)
    assert not [f for f in os.listdir(os.path.dirname(vdir)) if f.startswith(".incomplete")]


def test_list_columns_found_by_folder_name(tmp_path):
    raw = tmp_path / "raw"
    truth = fixtures.write_sunrgbd(str(raw), n_train=2, n_test=2)
    for name in ("train.txt", "test.txt"):  # image, depth, label: folder names disambiguate
        lines = [ln.split() for ln in (raw / name).read_text().splitlines()]
        (raw / name).write_text("".join(f"{a}\t{c}\t{b}\n" for a, b, c in lines))
    sunrgbd.SPEC.prepare(data_dir=str(tmp_path / "d"), manual_dir=str(raw))
    b = _eval(_cfg("sunrgbd", tmp_path / "d"), "test", batch_size=2)[0]
    raw_label = truth["RGB/test_0.jpg"]["label"].astype(np.int64)
    h, w = raw_label.shape
    np.testing.assert_array_equal(b["label"][0, :h, :w], np.where(raw_label == 0, 255,
                                                                  raw_label - 1))
