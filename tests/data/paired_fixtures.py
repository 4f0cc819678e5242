"""Small paired folders in the manifest format of `mango_jax.data.paired`, written by tests.

Every writer returns what it wrote (the raw arrays and labels per manifest row), so tests can
check the prepared data and the predictions against the source files themselves.
"""

from __future__ import annotations

import csv
import os

import numpy as np
from PIL import Image

CLASSES = ("cat", "dog", "eel")  # Written in this (sorted) order of names.
WORDS = ("red", "green", "blue", "sea", "sky", "sand")


def splits_of(n_train: int, n_val: int, n_test: int) -> list[str]:
    return ["train"] * n_train + ["val"] * n_val + ["test"] * n_test


def write_manifest(root: str, header, rows) -> str:
    path = os.path.join(root, "manifest.csv")
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def write_multiclass(root: str, *, n=(24, 8, 8), size=16, dim=5, bits=8, seed=0) -> dict:
    """`photo`: grey PNGs (8- or 16-bit) whose brightness follows the class; `feat`: `.npy`
    vectors offset by the class. Labels are class names."""
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(root, "img"), exist_ok=True)
    os.makedirs(os.path.join(root, "vec"), exist_ok=True)
    top = 255 if bits == 8 else 65535
    out = {"photo": [], "feat": [], "label": [], "split": splits_of(*n)}
    rows = []
    for i, split in enumerate(out["split"]):
        c = int(rng.integers(0, len(CLASSES)))
        img = np.clip(rng.normal(0.25 + 0.25 * c, 0.1, (size, size)) * top, 0, top)
        img = img.astype(np.uint8 if bits == 8 else np.uint16)
        Image.fromarray(img).save(os.path.join(root, "img", f"{i}.png"))
        vec = (rng.normal(size=dim) + 2.0 * c).astype(np.float32)
        np.save(os.path.join(root, "vec", f"{i}.npy"), vec)
        out["photo"].append(img[..., None])
        out["feat"].append(vec)
        out["label"].append(CLASSES[c])
        rows.append([split, f"img/{i}.png", f"vec/{i}.npy", CLASSES[c]])
    out["manifest"] = write_manifest(root, ["split", "photo", "feat", "label"], rows)
    return out


def write_multilabel_text(root: str, *, n=(16, 8, 8), size=8, seed=1) -> dict:
    """`view`: RGB images as 3-D float `.npy` arrays; `caption`: text (a text column);
    labels: one or more of CLASSES joined by '|'."""
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(root, "arr"), exist_ok=True)
    out = {"view": [], "caption": [], "label": [], "split": splits_of(*n)}
    rows = []
    for i, split in enumerate(out["split"]):
        hot = rng.random(len(CLASSES)) < 0.5
        hot[int(rng.integers(0, len(CLASSES)))] = True
        names = [c for c, h in zip(CLASSES, hot, strict=True) if h]
        img = (rng.normal(size=(size, size, 3)) + hot.astype(np.float32)).astype(np.float32)
        np.save(os.path.join(root, "arr", f"{i}.npy"), img)
        words = [WORDS[j] for j in rng.integers(0, len(WORDS), int(rng.integers(1, 6)))]
        if split == "test" and i % 2:
            words.append("zebra")  # Never in train: the unknown id.
        text = " ".join(words + names)
        out["view"].append(img)
        out["caption"].append(text)
        out["label"].append("|".join(names))
        rows.append([split, f"arr/{i}.npy", text, "|".join(names)])
    out["manifest"] = write_manifest(root, ["split", "view", "caption", "label"], rows)
    return out


def write_segmentation(root: str, *, n=(8, 4, 4), size=16, num_classes=3, seed=2) -> dict:
    """`rgb`: RGB PNGs (lossless, for exact checks); `depth`: 16-bit PNGs;
    labels: 8-bit PNG masks of ids 0..num_classes-1 with 255 (ignored) on a border."""
    rng = np.random.default_rng(seed)
    for d in ("rgb", "depth", "mask"):
        os.makedirs(os.path.join(root, d), exist_ok=True)
    out = {"rgb": [], "depth": [], "label": [], "split": splits_of(*n)}
    rows = []
    for i, split in enumerate(out["split"]):
        mask = rng.integers(0, num_classes, (size // 4, size // 4)).repeat(4, 0).repeat(4, 1)
        mask = mask.astype(np.uint8)
        mask[0, :] = 255
        rgb = np.clip(mask[..., None] * 60 + rng.integers(0, 40, (size, size, 3)), 0, 255)
        rgb = rgb.astype(np.uint8)
        depth = (mask.astype(np.uint16) * 9000 + rng.integers(0, 3000, (size, size))).astype(
            np.uint16)
        Image.fromarray(rgb).save(os.path.join(root, "rgb", f"{i}.png"))
        Image.fromarray(depth).save(os.path.join(root, "depth", f"{i}.png"))
        Image.fromarray(mask).save(os.path.join(root, "mask", f"{i}.png"))
        out["rgb"].append(rgb)
        out["depth"].append(depth[..., None])
        out["label"].append(mask)
        rows.append([split, f"rgb/{i}.png", f"depth/{i}.png", f"mask/{i}.png"])
    out["manifest"] = write_manifest(root, ["split", "rgb", "depth", "label"], rows)
    return out
