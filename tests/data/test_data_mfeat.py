"""mfeat: embedded preparation, split, standardisation, iterators, sharding, checkpoints."""

from __future__ import annotations

import itertools
import os
import tarfile
from collections import Counter

import grain
import numpy as np
import orbax.checkpoint as ocp
import pytest

from mango_jax import data
from mango_jax.data import core, mfeat

VIEWS = tuple(mfeat.VIEWS)


def raw_views(tmp_path):
    with tarfile.open(mfeat.EMBEDDED_ARCHIVE, "r:xz") as tar:
        tar.extractall(tmp_path, filter="data")
    return mfeat.read_views(str(tmp_path))


def eval_arrays(cfg, split, batch_size=64, shard_options=None):
    it = data.make_iterator(cfg, split, batch_size=batch_size, train=False, seed=0,
                            num_workers=0, shard_options=shard_options)
    batches = list(it)
    out = {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
    m = out.pop("mask")
    return {k: v[m] for k, v in out.items()}, batches


def _rows(arrays):
    """One key per example (pix alone has a duplicate row in mfeat; pix + fou has none)."""
    return [p.tobytes() + f.tobytes() for p, f in zip(arrays["pix"], arrays["fou"])]


def test_prepares_from_embedded_archive(mfeat_cfg):
    assert core.is_prepared(mfeat.Mfeat, mfeat_cfg.data_dir)
    info = data.dataset_info(mfeat_cfg)
    assert info.task == "multiclass" and info.num_classes == 10
    assert info.split_sizes == {"train": 1200, "val": 400, "test": 400}
    assert info.modality_shapes == {"pix": (240,), "fou": (76,)}
    assert info.modality_kinds == {"pix": "vector", "fou": "vector"}
    assert info.vocab_size is None and info.ignore_index is None and info.label_shape == ()
    assert info.class_names == tuple("0123456789")
    for split, n in [("train", 1200), ("val", 400), ("validation", 400), ("test", 400)]:
        assert data.num_examples(mfeat_cfg, split) == n
    # No temporary folders left behind.
    assert not [d for d in os.listdir(os.path.join(mfeat_cfg.data_dir, "mfeat"))
                if d.startswith(".incomplete")]


def test_stratified_split(mfeat_cfg):
    counts = {}
    for split in ("train", "val", "test"):
        arrays, _ = eval_arrays(mfeat_cfg, split)
        counts[split] = np.bincount(arrays["label"], minlength=10)
    np.testing.assert_array_equal(counts["train"], [120] * 10)
    np.testing.assert_array_equal(counts["val"], [40] * 10)
    np.testing.assert_array_equal(counts["test"], [40] * 10)
    # The split rows are disjoint, cover all 2,000 rows, and are fixed by the seed.
    builder = mfeat.Mfeat(data_dir=mfeat_cfg.data_dir)
    rows = builder.info.metadata["split_rows"]
    allrows = np.concatenate([rows[s] for s in ("train", "val", "test")])
    assert len(np.unique(allrows)) == 2000
    _, labels = mfeat.read_views(_extracted())
    again = mfeat.stratified_split(labels)
    for s in ("train", "val", "test"):
        np.testing.assert_array_equal(again[s], rows[s])


_EXTRACTED = {}


def _extracted():
    if "dir" not in _EXTRACTED:
        import tempfile

        d = tempfile.mkdtemp(prefix="mfeat-raw-")
        with tarfile.open(mfeat.EMBEDDED_ARCHIVE, "r:xz") as tar:
            tar.extractall(d, filter="data")
        _EXTRACTED["dir"] = d
    return _EXTRACTED["dir"]


def test_standardisation_uses_train_stats_only(mfeat_cfg):
    feats, labels = mfeat.read_views(_extracted())
    rows = mfeat.stratified_split(labels)
    info = data.dataset_info(mfeat_cfg)
    stats = info.metadata["standardization"]
    for view in VIEWS:
        train = feats[view][rows["train"]].astype(np.float64)
        np.testing.assert_allclose(stats[view]["mean"], train.mean(0), rtol=1e-6, atol=1e-9)
        std = np.where(train.std(0) > 0, train.std(0), 1.0)
        np.testing.assert_allclose(stats[view]["std"], std, rtol=1e-6)
        # ... and not the statistics of all rows.
        assert not np.allclose(stats[view]["mean"], feats[view].mean(0))
    train_arrays, _ = eval_arrays(mfeat_cfg, "train")
    for view in mfeat_cfg.modalities:
        np.testing.assert_allclose(train_arrays[view].mean(0), 0.0, atol=1e-4)
        np.testing.assert_allclose(train_arrays[view].std(0), 1.0, atol=1e-3)
    test_arrays, _ = eval_arrays(mfeat_cfg, "test")
    expect = (feats["pix"][rows["test"]] - np.asarray(stats["pix"]["mean"])) / np.asarray(
        stats["pix"]["std"])
    np.testing.assert_allclose(test_arrays["pix"], expect, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(test_arrays["label"], labels[rows["test"]])


@pytest.mark.parametrize("pair", list(itertools.combinations(VIEWS, 2))[::2] + [("fou", "pix")])
def test_any_view_pair(mfeat_cfg, pair):
    mfeat_cfg.modalities = pair
    info = data.dataset_info(mfeat_cfg)
    assert info.modality_shapes == {m: (mfeat.VIEWS[m],) for m in pair}
    it = data.make_iterator(mfeat_cfg, "train", batch_size=16, train=True, seed=1, num_workers=0)
    batch = next(it)
    assert set(batch) == {*pair, "label", "mask"}
    for m in pair:
        assert batch[m].shape == (16, mfeat.VIEWS[m]) and batch[m].dtype == np.float32
    assert batch["label"].shape == (16,) and batch["label"].dtype == np.int32
    assert batch["mask"].dtype == np.bool_ and batch["mask"].all()


def test_bad_modalities(mfeat_cfg):
    for bad in [("pix",), ("pix", "pix"), ("pix", "rgb"), ("pix", "fou", "kar")]:
        mfeat_cfg.modalities = bad
        with pytest.raises(ValueError, match="two different views"):
            data.dataset_info(mfeat_cfg)


def _batches(cfg, seed, n, **kw):
    it = data.make_iterator(cfg, "train", batch_size=32, train=True, seed=seed,
                            num_workers=kw.pop("num_workers", 0), **kw)
    return [next(it) for _ in range(n)]


def test_determinism_under_seed(mfeat_cfg):
    a, b, c = _batches(mfeat_cfg, 3, 5), _batches(mfeat_cfg, 3, 5), _batches(mfeat_cfg, 4, 5)
    for x, y in zip(a, b):
        for k in x:
            np.testing.assert_array_equal(x[k], y[k])
    assert not np.array_equal(a[0]["pix"], c[0]["pix"])


def test_train_epochs_cover_split_and_reshuffle(mfeat_cfg):
    batches = _batches(mfeat_cfg, 0, 2 * (1200 // 32))
    labels = np.concatenate([b["label"] for b in batches])
    # The first 1,200 examples are one epoch (37 full batches + 16 of the next epoch).
    epoch = _rows({k: np.concatenate([b[k] for b in batches])[:1200] for k in ("pix", "fou")})
    train, _ = eval_arrays(mfeat_cfg, "train")
    assert Counter(epoch) == Counter(_rows(train))  # each example once (mfeat has duplicates)
    np.testing.assert_array_equal(np.bincount(labels[:1200], minlength=10), [120] * 10)
    first = np.concatenate([b["pix"] for b in batches])
    assert not np.array_equal(first[:64], first[1200:1264])  # reshuffled next epoch


def test_eval_padding_and_mask(mfeat_cfg):
    _, batches = eval_arrays(mfeat_cfg, "test", batch_size=64)
    assert len(batches) == 7  # ceil(400 / 64)
    for b in batches:
        assert b["pix"].shape == (64, 240) and b["mask"].shape == (64,)
    masks = np.concatenate([b["mask"] for b in batches])
    assert masks.sum() == 400 and masks[:400].all() and not masks[400:].any()
    # In order: the eval pass of test follows the stored (ascending row) order, twice the same.
    _, again = eval_arrays(mfeat_cfg, "test", batch_size=64)
    for x, y in zip(batches, again):
        np.testing.assert_array_equal(x["pix"], y["pix"])


def test_eval_exact_multiple_has_no_padding(mfeat_cfg):
    _, batches = eval_arrays(mfeat_cfg, "val", batch_size=100)
    assert len(batches) == 4 and all(b["mask"].all() for b in batches)


def test_state_save_restore_resumes_identically(mfeat_cfg):
    it = data.make_iterator(mfeat_cfg, "train", batch_size=32, train=True, seed=7, num_workers=0)
    for _ in range(40):  # past the first epoch boundary
        next(it)
    state = it.get_state()
    expected = [next(it) for _ in range(3)]
    fresh = data.make_iterator(mfeat_cfg, "train", batch_size=32, train=True, seed=7,
                               num_workers=0)
    fresh.set_state(state)
    for e in expected:
        got = next(fresh)
        for k in e:
            np.testing.assert_array_equal(got[k], e[k])


def test_orbax_checkpoint_of_iterator(mfeat_cfg, tmp_path):
    it = data.make_iterator(mfeat_cfg, "train", batch_size=32, train=True, seed=2, num_workers=0)
    for _ in range(5):
        next(it)
    with ocp.CheckpointManager(tmp_path / "ckpt") as mngr:
        mngr.save(5, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(it)))
        mngr.wait_until_finished()
    expected = next(it)
    fresh = data.make_iterator(mfeat_cfg, "train", batch_size=32, train=True, seed=2,
                               num_workers=0)
    with ocp.CheckpointManager(tmp_path / "ckpt") as mngr:
        mngr.restore(5, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(fresh)))
    got = next(fresh)
    np.testing.assert_array_equal(got["pix"], expected["pix"])
    np.testing.assert_array_equal(got["label"], expected["label"])


@pytest.mark.parametrize("split,batch_size", [("test", 64), ("val", 7)])
def test_shards_of_two_processes_disjoint_and_cover(mfeat_cfg, split, batch_size):
    full, _ = eval_arrays(mfeat_cfg, split, batch_size=batch_size)
    shards = []
    nbatches = []
    for p in range(2):
        arrays, batches = eval_arrays(
            mfeat_cfg, split, batch_size=batch_size,
            shard_options=grain.sharding.ShardOptions(shard_index=p, shard_count=2),
        )
        shards.append(Counter(_rows(arrays)))
        nbatches.append(len(batches))
    assert nbatches[0] == nbatches[1]  # every process runs the same number of eval steps
    # mfeat has a few identical rows, so compare multisets: every example in exactly one shard.
    assert shards[0] + shards[1] == Counter(_rows(full))


def _global_batches(cfg, processes, global_batch, n, state=None):
    """The global batches that `processes` processes assemble: their slices side by side."""
    its = [data.make_iterator(
        cfg, "train", batch_size=global_batch // processes, train=True, seed=3, num_workers=0,
        shard_options=grain.sharding.ShardOptions(shard_index=p, shard_count=processes))
        for p in range(processes)]
    if state is not None:
        for it in its:
            it.set_state(state)
    parts = [[next(it) for _ in range(n)] for it in its]
    states = [it.get_state() for it in its]
    assert all(s == states[0] for s in states)  # one state for every process
    return [{k: np.concatenate([part[i][k] for part in parts]) for k in parts[0][i]}
            for i in range(n)], states[0]


def test_train_batches_do_not_depend_on_the_process_count(mfeat_cfg):
    # Process p of P reads rows [p*B, (p+1)*B) of the global batch (old behaviour: examples
    # p, p+P, ... of the split, shuffled per process, so the global batches differed).
    n = 25  # 25 * 60 examples: past the first epoch of 1,200
    single, single_state = _global_batches(mfeat_cfg, 1, 60, n)
    for processes in (2, 4):
        batches, state = _global_batches(mfeat_cfg, processes, 60, n)
        assert state == single_state
        for a, b in zip(single, batches):
            for k in a:
                np.testing.assert_array_equal(a[k], b[k])
    # The first 20 global batches are one epoch of the split, every example once.
    epoch = {k: np.concatenate([b[k] for b in single[:20]]) for k in ("pix", "fou")}
    train, _ = eval_arrays(mfeat_cfg, "train")
    assert Counter(_rows(epoch)) == Counter(_rows(train))


def test_train_state_resumes_on_another_process_count(mfeat_cfg):
    expected, _ = _global_batches(mfeat_cfg, 1, 60, 23)
    _, state = _global_batches(mfeat_cfg, 2, 60, 19)
    resumed, _ = _global_batches(mfeat_cfg, 4, 60, 4, state=state)
    for a, b in zip(expected[19:], resumed):
        np.testing.assert_array_equal(a["pix"], b["pix"])
        np.testing.assert_array_equal(a["label"], b["label"])
    it = data.make_iterator(mfeat_cfg, "train", batch_size=32, train=True, seed=3, num_workers=0)
    with pytest.raises(ValueError, match="same global batch_size"):
        it.set_state(state)


def test_multiprocess_workers_match_single_process(mfeat_cfg):
    single = _batches(mfeat_cfg, 5, 6, num_workers=0)
    it = data.make_iterator(mfeat_cfg, "train", batch_size=32, train=True, seed=5, num_workers=2)
    try:
        multi = [next(it) for _ in range(6)]
        state = it.get_state()
        after = next(it)
    finally:
        close = getattr(it, "close", None)
        if close:
            close()
    for x, y in zip(single, multi):
        np.testing.assert_array_equal(x["pix"], y["pix"])
    resumed = data.make_iterator(mfeat_cfg, "train", batch_size=32, train=True, seed=5,
                                 num_workers=0)
    assert state is not None
    # The same element sequence: batch 7 of a single-process iterator equals `after`.
    for _ in range(6):
        next(resumed)
    np.testing.assert_array_equal(next(resumed)["pix"], after["pix"])


def test_failed_prepare_leaves_nothing(tmp_path, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("simulated crash while writing")

    monkeypatch.setattr(mfeat, "standardization_stats", boom)
    cfg = data.default_config("mfeat")
    cfg.data_dir = str(tmp_path)
    with pytest.raises(RuntimeError, match="simulated crash"):
        data.ensure_prepared(cfg)
    assert not core.is_prepared(mfeat.Mfeat, str(tmp_path))
    leftovers = os.listdir(tmp_path / "mfeat")
    assert leftovers == [], leftovers
    with pytest.raises(data.DataNotFoundError):
        data.dataset_info(cfg)


def test_prepare_from_manual_dir_and_bad_csv(tmp_path):
    src = tmp_path / "csv"
    src.mkdir()
    with tarfile.open(mfeat.EMBEDDED_ARCHIVE, "r:xz") as tar:
        tar.extractall(src, filter="data")
    # A label out of range names the file.
    path = src / "mfeat-mor.csv"
    lines = path.read_text().splitlines()
    lines[5] = ",".join(lines[5].split(",")[:-1] + ["12"])
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(data.DataFormatError, match="mfeat-mor.csv.*out of range"):
        mfeat.SPEC.prepare(data_dir=str(tmp_path / "d"), manual_dir=str(src))
    assert not core.is_prepared(mfeat.Mfeat, str(tmp_path / "d"))
    # A missing file names the file.
    os.remove(path)
    with pytest.raises(data.DataNotFoundError, match="mfeat-mor.csv"):
        mfeat.SPEC.prepare(data_dir=str(tmp_path / "d"), manual_dir=str(src))
