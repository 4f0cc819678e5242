"""Tiny datasets in each official on-disk format (h5py, Pillow, scipy.io, list files)."""

from __future__ import annotations

import json
import os

import h5py
import numpy as np
import scipy.io
from PIL import Image

from mango_jax.data import mmimdb, taskonomy


def prepared(tmp_path_factory, spec, write, *, options=None, **sizes):
    """A test module's prepared dataset: `write(raw, **sizes)` puts a source form in a fresh
    root's `raw/`, `spec.prepare` (with `options`) reads it into `data/`; returns (root, what
    `write` returned)."""
    root = tmp_path_factory.mktemp(spec.name)
    truth = write(str(root / "raw"), **sizes)
    spec.prepare(data_dir=str(root / "data"), manual_dir=str(root / "raw"), **(options or {}))
    return root, truth


def _rgb(h, w, k):
    yy, xx = np.mgrid[:h, :w]
    return np.stack([(xx * 255 // max(w - 1, 1)), (yy * 255 // max(h - 1, 1)),
                     np.full_like(xx, (k * 37) % 256)], -1).astype(np.uint8)


# --------------------------------------------------------------------------------------------
# NYUDv2


def nyu_mask(h, w, k):
    """Class ids 0-39 in blocks, a band of 255 (ignore) in the first row."""
    yy, xx = np.mgrid[:h, :w]
    m = ((xx // 4 + yy // 4 + k) % 40).astype(np.uint8)
    m[0, :] = 255
    return m


def write_nyu_folder(root, n_train=6, n_test=3, hw=(24, 32), depth_bits=16):
    h, w = hw
    for d in ("rgb", "masks", "depth"):
        os.makedirs(os.path.join(root, d), exist_ok=True)
    truth = {}
    for fname, ks in (("train.txt", range(n_train)), ("val.txt", range(n_train,
                                                                        n_train + n_test))):
        with open(os.path.join(root, fname), "w") as f:
            for k in ks:
                stem = f"{k:06d}.png"
                Image.fromarray(_rgb(h, w, k)).save(os.path.join(root, "rgb", stem))
                mask = nyu_mask(h, w, k)
                Image.fromarray(mask).save(os.path.join(root, "masks", stem))
                if depth_bits == 16:
                    depth = (1000 + 10 * k + np.arange(h * w).reshape(h, w)).astype(np.uint16)
                else:
                    depth = ((np.arange(h * w).reshape(h, w) + k) % 256).astype(np.uint8)
                Image.fromarray(depth).save(os.path.join(root, "depth", stem))
                f.write(f"rgb/{stem}\tmasks/{stem}\tdepth/{stem}\n")
                truth[f"rgb/{stem}"] = {"mask": mask, "depth": depth}
    return truth


def _matlab73(path):
    """An HDF5 file with MATLAB's 512-byte v7.3 header, as MATLAB writes them."""
    f = h5py.File(path, "w", userblock_size=512)
    return f


def _stamp_matlab73(path):
    header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 "
    header += b"schema 1.00 ."
    with open(path, "r+b") as fh:
        fh.write(header.ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02IM")


def write_nyu_official(root, n=7, train=(1, 3, 5, 7), test=(2, 4, 6), hw=(12, 16), seed=0,
                       splits_v73=False):
    """nyu_depth_v2_labeled.mat (v7.3 via h5py, transposed), splits.mat, classMapping40.mat."""
    os.makedirs(root, exist_ok=True)
    rng = np.random.default_rng(seed)
    h, w = hw
    images = rng.integers(0, 256, (n, h, w, 3)).astype(np.uint8)
    depths = rng.uniform(0.5, 9.5, (n, h, w)).astype(np.float32)
    labels = rng.integers(0, 895, (n, h, w)).astype(np.uint16)
    labels[:, 0, 0] = 0  # unlabelled
    mapping = (np.arange(894) % 40 + 1).astype(np.float64)
    path = os.path.join(root, "nyu_depth_v2_labeled.mat")
    with _matlab73(path) as f:
        # MATLAB stores column-major: h5py sees the reversed axes.
        f["images"] = images.transpose(0, 3, 2, 1)  # (N, 3, W, H)
        f["depths"] = depths.transpose(0, 2, 1)  # (N, W, H)
        f["labels"] = labels.transpose(0, 2, 1)
    _stamp_matlab73(path)
    if splits_v73:
        path = os.path.join(root, "splits.mat")
        with _matlab73(path) as f:
            f["trainNdxs"] = np.asarray(train, np.float64)[None]
            f["testNdxs"] = np.asarray(test, np.float64)[None]
        _stamp_matlab73(path)
    else:
        scipy.io.savemat(os.path.join(root, "splits.mat"), {
            "trainNdxs": np.asarray(train, np.float64)[:, None],
            "testNdxs": np.asarray(test, np.float64)[:, None],
        })
    scipy.io.savemat(os.path.join(root, "classMapping40.mat"), {
        "mapClass": mapping[None], "className": np.array(["x"] * 40, dtype=object)})
    lut = np.concatenate([[0], mapping]).astype(np.int64) - 1
    lut[lut < 0] = 255
    return {"images": images, "depths": depths, "labels40": lut[labels], "train": train,
            "test": test}


# --------------------------------------------------------------------------------------------
# SUN RGB-D


def write_sunrgbd(root, n_train=5, n_test=4, sizes=((20, 28), (24, 30))):
    for d in ("RGB", "labels", "Depth"):
        os.makedirs(os.path.join(root, d), exist_ok=True)
    truth = {}
    for fname, prefix, n in (("train.txt", "train", n_train), ("test.txt", "test", n_test)):
        with open(os.path.join(root, fname), "w") as f:
            for k in range(n):
                h, w = sizes[k % len(sizes)]
                stem = f"{prefix}_{k}"
                Image.fromarray(_rgb(h, w, k)).save(os.path.join(root, "RGB", stem + ".jpg"),
                                                    quality=95)
                yy, xx = np.mgrid[:h, :w]
                lab = ((xx // 3 + yy // 5 + k) % 38).astype(np.uint8)  # 0..37, 0 = unlabelled
                Image.fromarray(lab).save(os.path.join(root, "labels", stem + ".png"))
                depth = (500 + 3 * xx + yy + k).astype(np.uint16)
                Image.fromarray(depth).save(os.path.join(root, "Depth", stem + ".png"))
                f.write(f"RGB/{stem}.jpg labels/{stem}.png  Depth/{stem}.png\n")
                truth[f"RGB/{stem}.jpg"] = {"label": lab, "depth": depth, "hw": (h, w)}
    return truth


# --------------------------------------------------------------------------------------------
# Taskonomy


def taskonomy_pixels(domain, k, hw):
    h, w = hw
    yy, xx = np.mgrid[:h, :w]
    if domain in taskonomy.THREE_CHANNEL:
        return _rgb(h, w, k)
    if domain in taskonomy.LOG_MINMAX or domain in taskonomy.MINMAX:
        return (100 * (xx + yy) + k).astype(np.uint16)
    return ((xx * 7 + yy + k) % 256).astype(np.uint8)


def write_taskonomy(root, n_train=4, n_val=2, hw=(20, 20), domains=taskonomy.DOMAINS,
                    old_names=False, template_lines=False):
    """Folders per domain (new names, or older ones where they exist) and the two lists."""
    folders = {}
    for d in domains:
        alias = taskonomy.DOMAIN_ALIASES[d]
        folders[d] = alias[0] if old_names and alias else d
        os.makedirs(os.path.join(root, folders[d]), exist_ok=True)
    k = 0
    for fname, n in (("train_domain.txt", n_train), ("val_domain.txt", n_val)):
        with open(os.path.join(root, fname), "w") as f:
            for _ in range(n):
                point = f"point_{100 + k}_view_{k % 3}"
                for d in domains:
                    fn = f"{point}_domain_{folders[d]}.png"
                    Image.fromarray(taskonomy_pixels(d, k, hw)).save(
                        os.path.join(root, folders[d], fn))
                if template_lines:
                    f.write(f"{{domain}}/{point}_domain_{{domain}}.png\n")
                else:
                    first = domains[0]
                    f.write(f"{folders[first]}/{point}_domain_{folders[first]}.png\n")
                k += 1
    return folders


# --------------------------------------------------------------------------------------------
# MM-IMDB


def write_mmimdb_hdf5(root, n=12, *, vlen=True, target_names=True, reverse_names=False,
                      seed=0, image_hw=(16, 10)):
    os.makedirs(root, exist_ok=True)
    rng = np.random.default_rng(seed)
    genres = (rng.random((n, 23)) < 0.3).astype(np.int64)
    genres[np.arange(n), np.arange(n) % 23] = 1
    images = rng.integers(0, 256, (n, 3) + tuple(image_hw)).astype(np.int64)
    seqs = [rng.integers(1, 50, rng.integers(3, 9)).astype(np.int32) for _ in range(n)]
    with h5py.File(os.path.join(root, mmimdb.HDF5_NAME), "w") as f:
        f["features"] = rng.normal(size=(n, 300)).astype(np.float32)
        f["vgg_features"] = rng.normal(size=(n, 4096)).astype(np.float32)
        f["images"] = images
        if vlen:
            ds = f.create_dataset("sequences", (n,), dtype=h5py.vlen_dtype(np.int32))
            for i, s in enumerate(seqs):
                ds[i] = s
        else:
            pad = np.zeros((n, 10), np.int32)
            for i, s in enumerate(seqs):
                pad[i, : s.size] = s
            f["sequences"] = pad
        names = list(mmimdb.GENRES)
        stored = genres
        if reverse_names:
            names = names[::-1]
            stored = genres[:, ::-1]
        f["genres"] = stored
        if target_names:
            f["genres"].attrs["target_names"] = np.array([s.encode() for s in names])
        f["imdb_ids"] = np.array([f"tt{i:07d}".encode() for i in range(n)])
        f["three_grams"] = np.zeros((n, 3), np.float32)
    return {"genres": genres, "images": images, "sequences": seqs}


def write_mmimdb_original(root, splits=None, *, genres_of=None):
    """mmimdb/split.json + mmimdb/dataset/<id>.json + <id>.jpeg; returns the records written."""
    splits = splits or {"train": ["0000001", "0000002", "0000003", "0000004"],
                        "dev": ["0000005", "0000006"], "test": ["0000007"]}
    base = os.path.join(root, "mmimdb")
    os.makedirs(os.path.join(base, "dataset"), exist_ok=True)
    with open(os.path.join(base, "split.json"), "w") as f:
        json.dump(splits, f)
    records = {}
    words = ["the", "spy", "falls", "in", "love", "with", "a", "robot", "ghost", "town"]
    all_ids = [i for k in ("train", "dev", "test") for i in splits[k]]
    for k, movie_id in enumerate(all_ids):
        genres = genres_of(k) if genres_of else [mmimdb.GENRES[k % 23], "Reality-TV"]
        plot = [" ".join(words[: 3 + k % 5]), " ".join(words[k % 3 :] * 2) + " The end."]
        rec = {"title": f"Movie {k}", "genres": genres, "plot": plot, "year": 2000 + k}
        with open(os.path.join(base, "dataset", f"{movie_id}.json"), "w") as f:
            json.dump(rec, f)
        Image.fromarray(_rgb(30, 20, k)).save(os.path.join(base, "dataset", f"{movie_id}.jpeg"),
                                              quality=95)
        records[movie_id] = rec
    return records
