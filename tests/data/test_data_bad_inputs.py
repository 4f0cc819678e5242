"""Bad raw input: each a clear error naming the file and what was expected; nothing half-written.

`metadata.npy` beside the MM-IMDB HDF5 is never unpickled.
"""

from __future__ import annotations

import os
import pickle

import data_fixtures as fixtures
import h5py
import numpy as np
import pytest
import scipy.io
from PIL import Image

from mango_jax import data
from mango_jax.data import core, mmimdb, nyudv2, sunrgbd, taskonomy
from mango_jax.data.core import DataFormatError, DataNotFoundError

SPECS = {"nyudv2": nyudv2, "sunrgbd": sunrgbd, "taskonomy": taskonomy, "mmimdb": mmimdb}


def assert_nothing_written(data_dir, name):
    """No prepared version folder and no temporary leftovers."""
    cfg = data.default_config(name)
    cfg.data_dir = str(data_dir)
    with pytest.raises(DataNotFoundError):
        data.ensure_prepared(cfg)
    name_dir = os.path.join(str(data_dir), name)
    if os.path.isdir(name_dir):
        assert os.listdir(name_dir) == [], os.listdir(name_dir)


def prepare_fails(name, raw, tmp_path, exc, match, **options):
    spec = SPECS[name].SPEC
    with pytest.raises(exc, match=match):
        spec.prepare(data_dir=str(tmp_path / "d"), manual_dir=str(raw), **options)
    assert_nothing_written(tmp_path / "d", name)


# --------------------------------------------------------------------------------------------
# Missing folders / files and wrong layouts.


@pytest.mark.parametrize("name", ["nyudv2", "sunrgbd", "taskonomy", "mmimdb"])
def test_missing_folder(tmp_path, name):
    prepare_fails(name, tmp_path / "nope", tmp_path, DataNotFoundError, "nope")


@pytest.mark.parametrize("name", ["nyudv2", "sunrgbd", "taskonomy", "mmimdb"])
def test_empty_folder_is_wrong_layout(tmp_path, name):
    (tmp_path / "raw").mkdir()
    prepare_fails(name, tmp_path / "raw", tmp_path, DataNotFoundError,
                  r"(train\.txt|multimodal_imdb\.hdf5|domain)")


def test_nyu_missing_listed_file(tmp_path):
    raw = tmp_path / "raw"
    fixtures.write_nyu_folder(str(raw))
    os.remove(raw / "depth" / "000002.png")
    prepare_fails("nyudv2", raw, tmp_path, DataNotFoundError,
                  r"depth/000002\.png.*line 3 of .*train\.txt")


def test_nyu_missing_val_list(tmp_path):
    raw = tmp_path / "raw"
    fixtures.write_nyu_folder(str(raw))
    os.remove(raw / "val.txt")
    prepare_fails("nyudv2", raw, tmp_path, DataNotFoundError, r"val\.txt")


def test_nyu_bad_list_line(tmp_path):
    raw = tmp_path / "raw"
    fixtures.write_nyu_folder(str(raw))
    with open(raw / "train.txt", "a") as f:
        f.write("rgb/000001.png\tmasks/000001.png\n")
    prepare_fails("nyudv2", raw, tmp_path, DataFormatError,
                  r"train\.txt:7: expected 3 whitespace-separated paths")


def test_corrupt_image(tmp_path):
    raw = tmp_path / "raw"
    fixtures.write_nyu_folder(str(raw))
    path = raw / "rgb" / "000004.png"
    path.write_bytes(path.read_bytes()[:60])  # truncated PNG
    prepare_fails("nyudv2", raw, tmp_path, DataFormatError, r"Corrupt.*rgb/000004\.png")


def test_size_mismatch(tmp_path):
    raw = tmp_path / "raw"
    fixtures.write_nyu_folder(str(raw), hw=(24, 32))
    Image.fromarray(np.zeros((20, 32), np.uint8)).save(raw / "masks" / "000001.png")
    prepare_fails("nyudv2", raw, tmp_path, DataFormatError, r"sizes differ.*000001")


def test_hha_depth_refused(tmp_path):
    raw = tmp_path / "raw"
    fixtures.write_nyu_folder(str(raw))
    hha = np.random.default_rng(0).integers(0, 255, (24, 32, 3)).astype(np.uint8)
    Image.fromarray(hha).save(raw / "depth" / "000000.png")
    prepare_fails("nyudv2", raw, tmp_path, DataFormatError, r"000000\.png.*single-channel")


# --------------------------------------------------------------------------------------------
# Labels out of range.


def test_nyu_mask_out_of_range(tmp_path):
    raw = tmp_path / "raw"
    fixtures.write_nyu_folder(str(raw))
    mask = np.full((24, 32), 3, np.uint8)
    mask[5, 5] = 45
    Image.fromarray(mask).save(raw / "masks" / "000007.png")
    prepare_fails("nyudv2", raw, tmp_path, DataFormatError,
                  r"masks/000007\.png.*\[45\] out of range.*0-39 and 255")


def test_sun_label_out_of_range(tmp_path):
    raw = tmp_path / "raw"
    fixtures.write_sunrgbd(str(raw))
    Image.fromarray(np.full((20, 28), 38, np.uint8)).save(raw / "labels" / "test_2.png")
    prepare_fails("sunrgbd", raw, tmp_path, DataFormatError,
                  r"test_2\.png.*\[38\] out of range.*0 \(unlabelled\) to 37")


def test_nyu_official_label_out_of_range(tmp_path):
    raw = tmp_path / "raw"
    fixtures.write_nyu_official(str(raw))
    with h5py.File(raw / "nyu_depth_v2_labeled.mat", "r+") as f:
        lab = f["labels"][...]
        lab[2, 3, 4] = 900
        f["labels"][...] = lab
    prepare_fails("nyudv2", raw, tmp_path, DataFormatError, r"labels\[2\].*900.*mapClass")


def test_nyu_official_mapping_out_of_range(tmp_path):
    raw = tmp_path / "raw"
    fixtures.write_nyu_official(str(raw))
    scipy.io.savemat(raw / "classMapping40.mat", {"mapClass": np.full((1, 894), 41.0)})
    prepare_fails("nyudv2", raw, tmp_path, DataFormatError,
                  r"classMapping40\.mat.*mapClass values must be integers 1-40")


def test_mmimdb_genre_out_of_range(tmp_path):
    raw = tmp_path / "raw"
    fixtures.write_mmimdb_hdf5(str(raw), n=12)
    with h5py.File(raw / mmimdb.HDF5_NAME, "r+") as f:
        g = f["genres"][...]
        g[8, 3] = 2
        f["genres"][...] = g
    prepare_fails("mmimdb", raw, tmp_path, DataFormatError,
                  r"multimodal_imdb\.hdf5.*genres\[8\].*label out of range", split_rows="6,9")


# --------------------------------------------------------------------------------------------
# .mat keys and axis order.


def test_missing_mat_key(tmp_path):
    raw = tmp_path / "raw"
    fixtures.write_nyu_official(str(raw))
    scipy.io.savemat(raw / "splits.mat", {"trainNdxs": np.arange(1, 5.0)[:, None]})
    prepare_fails("nyudv2", raw, tmp_path, DataFormatError,
                  r"splits\.mat.*no key 'testNdxs'.*keys found: \['trainNdxs'\]")


def test_missing_labeled_dataset(tmp_path):
    raw = tmp_path / "raw"
    fixtures.write_nyu_official(str(raw))
    with h5py.File(raw / "nyu_depth_v2_labeled.mat", "r+") as f:
        del f["labels"]
    prepare_fails("nyudv2", raw, tmp_path, DataFormatError,
                  r"nyu_depth_v2_labeled\.mat.*no dataset 'labels'")


def test_wrong_axis_order(tmp_path):
    raw = tmp_path / "raw"
    truth = fixtures.write_nyu_official(str(raw), hw=(12, 16))
    with h5py.File(raw / "nyu_depth_v2_labeled.mat", "w") as f:  # (N, 3, H, W): not transposed
        f["images"] = truth["images"].transpose(0, 3, 1, 2)
        f["depths"] = truth["depths"]
        f["labels"] = np.zeros(truth["depths"].shape, np.uint16)
    prepare_fails("nyudv2", raw, tmp_path, DataFormatError, r"axis order")


def test_split_index_out_of_range(tmp_path):
    raw = tmp_path / "raw"
    fixtures.write_nyu_official(str(raw), n=7, train=(1, 2, 9))
    prepare_fails("nyudv2", raw, tmp_path, DataFormatError, r"trainNdxs must hold 1-based")


def test_not_a_mat_file(tmp_path):
    raw = tmp_path / "raw"
    fixtures.write_nyu_official(str(raw))
    (raw / "nyu_depth_v2_labeled.mat").write_bytes(b"not a mat file at all")
    prepare_fails("nyudv2", raw, tmp_path, DataFormatError, r"not a MATLAB v7\.3")


# --------------------------------------------------------------------------------------------
# MM-IMDB specifics.


def test_mmimdb_default_split_refuses_small_file(tmp_path):
    raw = tmp_path / "raw"
    fixtures.write_mmimdb_hdf5(str(raw), n=12)
    prepare_fails("mmimdb", raw, tmp_path, DataFormatError,
                  r"has 12 rows; the standard split .* needs exactly 25959.*--split_rows")


@pytest.mark.parametrize("rows", ["6,12", "0,5", "8,6", "6,20"])
def test_mmimdb_split_rows_that_do_not_fit(tmp_path, rows):
    raw = tmp_path / "raw"
    fixtures.write_mmimdb_hdf5(str(raw), n=12)
    prepare_fails("mmimdb", raw, tmp_path, DataFormatError, r"does not fit --split_rows",
                  split_rows=rows)


def test_mmimdb_missing_key(tmp_path):
    raw = tmp_path / "raw"
    fixtures.write_mmimdb_hdf5(str(raw), n=12)
    with h5py.File(raw / mmimdb.HDF5_NAME, "r+") as f:
        del f["vgg_features"]
    prepare_fails("mmimdb", raw, tmp_path, DataFormatError, r"lacks \['vgg_features'\]",
                  split_rows="6,9")


def test_mmimdb_unknown_target_name(tmp_path):
    raw = tmp_path / "raw"
    fixtures.write_mmimdb_hdf5(str(raw), n=12)
    with h5py.File(raw / mmimdb.HDF5_NAME, "r+") as f:
        names = list(mmimdb.GENRES)
        names[3] = "Reality-TV"
        f["genres"].attrs["target_names"] = np.array([n.encode() for n in names])
    prepare_fails("mmimdb", raw, tmp_path, DataFormatError, r"target_names", split_rows="6,9")


class _Bomb:
    def __reduce__(self):
        return (os.system, ("touch PICKLE_WAS_LOADED",))


def test_metadata_npy_is_never_unpickled(tmp_path, monkeypatch):
    raw = tmp_path / "raw"
    fixtures.write_mmimdb_hdf5(str(raw), n=12)
    with open(raw / "metadata.npy", "wb") as f:
        pickle.dump(_Bomb(), f)
    monkeypatch.chdir(tmp_path)
    real_load = np.load

    def guarded_load(*a, **k):
        assert not k.get("allow_pickle"), "np.load(allow_pickle=True) called"
        return real_load(*a, **k)

    monkeypatch.setattr(np, "load", guarded_load)
    mmimdb.SPEC.prepare(data_dir=str(tmp_path / "d"), manual_dir=str(raw), split_rows="6,9")
    assert not (tmp_path / "PICKLE_WAS_LOADED").exists()


def test_mmimdb_original_missing_poster_and_bad_json(tmp_path):
    raw = tmp_path / "raw"
    fixtures.write_mmimdb_original(str(raw))
    os.remove(raw / "mmimdb" / "dataset" / "0000006.jpeg")
    prepare_fails("mmimdb", raw, tmp_path, DataNotFoundError, r"0000006\.jpeg")
    fixtures.write_mmimdb_original(str(raw))
    (raw / "mmimdb" / "dataset" / "0000002.json").write_text("{not json")
    prepare_fails("mmimdb", raw, tmp_path, DataFormatError, r"0000002\.json.*not readable JSON")
    fixtures.write_mmimdb_original(str(raw))
    (raw / "mmimdb" / "split.json").write_text('{"train": ["0000001"], "test": ["0000002"]}')
    prepare_fails("mmimdb", raw, tmp_path, DataFormatError, r"split\.json.*no key 'dev'")


def test_mmimdb_two_forms_in_one_folder(tmp_path):
    raw = tmp_path / "raw"
    fixtures.write_mmimdb_hdf5(str(raw), n=12)
    fixtures.write_mmimdb_original(str(raw))
    prepare_fails("mmimdb", raw, tmp_path, DataFormatError, r"both", split_rows="6,9")


# --------------------------------------------------------------------------------------------
# Taskonomy specifics.


def test_taskonomy_missing_domain_file(tmp_path):
    raw = tmp_path / "raw"
    fixtures.write_taskonomy(str(raw), domains=("rgb", "normal", "reshading"))
    os.remove(raw / "normal" / "point_104_view_1_domain_normal.png")
    prepare_fails("taskonomy", raw, tmp_path, DataNotFoundError,
                  r"normal/point_104_view_1_domain_normal\.png.*line 1 of .*val_domain\.txt")


def test_taskonomy_bad_line_and_single_domain(tmp_path):
    raw = tmp_path / "raw"
    fixtures.write_taskonomy(str(raw), domains=("rgb", "normal"))
    with open(raw / "train_domain.txt", "a") as f:
        f.write("somewhere/else.png\n")
    prepare_fails("taskonomy", raw, tmp_path, DataFormatError, r"train_domain\.txt:5")
    raw2 = tmp_path / "raw2"
    fixtures.write_taskonomy(str(raw2), domains=("rgb",))
    prepare_fails("taskonomy", raw2, tmp_path, DataNotFoundError, r"at least two")


def test_taskonomy_corrupt_png(tmp_path):
    raw = tmp_path / "raw"
    fixtures.write_taskonomy(str(raw), domains=("rgb", "edge_texture"))
    p = raw / "edge_texture" / "point_101_view_1_domain_edge_texture.png"
    p.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    prepare_fails("taskonomy", raw, tmp_path, DataFormatError,
                  r"Corrupt.*point_101_view_1_domain_edge_texture\.png")


def test_interrupted_prepare_leaves_nothing_that_reads_as_complete(tmp_path, monkeypatch):
    raw = tmp_path / "raw"
    fixtures.write_nyu_folder(str(raw))
    calls = {"n": 0}
    real = nyudv2.segmentation.check_label

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["n"] == 8:
            raise KeyboardInterrupt("simulated interruption")
        return real(*a, **k)

    monkeypatch.setattr(nyudv2.segmentation, "check_label", flaky)
    with pytest.raises(KeyboardInterrupt):
        nyudv2.SPEC.prepare(data_dir=str(tmp_path / "d"), manual_dir=str(raw))
    assert not core.is_prepared(nyudv2.Nyudv2, str(tmp_path / "d"))
    assert_nothing_written(tmp_path / "d", "nyudv2")
