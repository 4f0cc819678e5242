"""Taskonomy subset (TokenFusion form): image-to-image translation between ten domains.

Source form: `--manual_dir` holds a folder per domain and the list files `train_domain.txt`
(1,000 lines) and `val_domain.txt` (500 lines). Each line names one example as a file of one
domain, e.g. `rgb/point_407_view_2_domain_rgb.png`, or as a template
`{domain}/point_407_view_2_domain_{domain}.png`; the file of domain D is then
`<D folder>/point_407_view_2_domain_<D>.png`. Domain folders and the `domain_<D>` part of the
file names may use the current names or the older ones (`reshade/`, `edge2d/`, ...; see
`DOMAIN_ALIASES`). Every domain whose folder exists is prepared (at least two are needed); a
listed example missing from a present domain is an error.

Preprocessing in the grain map (values in [-1, 1]): rgb / normal / principal_curvature (3
channels) and the other 8-bit domains: x / 127.5 - 1; depth_euclidean / depth_zbuffer:
log(1 + x), then min-max scaled per image; edge_texture / edge_occlusion: min-max scaled per
image; other 16-bit images: x / 32767.5 - 1. Training: resize to load_size (286), random crop
image_size (256), random horizontal flip (one geometry for all domains); eval: resize to
image_size. Segment domains are resampled nearest-neighbour, the rest bilinear.
"""

from __future__ import annotations

import concurrent.futures
import io
import os
import re

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from mango_jax.data import core, imaging, segmentation
from mango_jax.data.core import DataFormatError, DataNotFoundError, DatasetInfo
from mango_jax.data.spec import DatasetSpec

DOMAINS = (
    "rgb", "normal", "reshading", "depth_euclidean", "depth_zbuffer", "principal_curvature",
    "edge_occlusion", "edge_texture", "segment_unsup2d", "segment_unsup25d",
)
# Older names seen in copies of the data (folders and the `domain_<name>` file-name part).
DOMAIN_ALIASES = {
    "rgb": (),
    "normal": ("normals", "surface_normal"),
    "reshading": ("reshade",),
    "depth_euclidean": ("euclidean_depth",),
    "depth_zbuffer": ("z_depth", "zbuffer_depth"),
    "principal_curvature": ("curvature",),
    "edge_occlusion": ("edge3d", "edge_occ"),
    "edge_texture": ("edge2d",),
    "segment_unsup2d": ("segment2d", "segmentsup2d"),
    "segment_unsup25d": ("segment25d", "segmentsup25d"),
}
THREE_CHANNEL = ("rgb", "normal", "principal_curvature")
LOG_MINMAX = ("depth_euclidean", "depth_zbuffer")
MINMAX = ("edge_texture", "edge_occlusion")
NEAREST_DOMAINS = ("segment_unsup2d", "segment_unsup25d")
LISTS = {"train": "train_domain.txt", "val": "val_domain.txt"}

MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Put the TokenFusion Taskonomy subset in --manual_dir: one folder per domain (rgb, normal,
reshading, depth_euclidean, depth_zbuffer, principal_curvature, edge_occlusion, edge_texture,
segment_unsup2d, segment_unsup25d; older names such as reshade/ and edge2d/ are accepted) holding
files like point_407_view_2_domain_rgb.png, and the lists train_domain.txt (1,000 lines) and
val_domain.txt (500 lines), each line naming an example, e.g.
`rgb/point_407_view_2_domain_rgb.png` or `{domain}/point_407_view_2_domain_{domain}.png`.
At least two domains are needed; every domain folder present is prepared.
"""


def names_of(domain: str) -> tuple[str, ...]:
    return (domain, *DOMAIN_ALIASES[domain])


_ALIAS_TO_DOMAIN = {n: d for d in DOMAINS for n in names_of(d)}


def present_domains(root: str) -> dict[str, str]:
    """{domain: folder name found} for the domain folders in `root`."""
    found = {}
    for d in DOMAINS:
        for n in names_of(d):
            if os.path.isdir(os.path.join(root, n)):
                found[d] = n
                break
    return found


def line_template(line: str, where: str) -> str:
    """A list-file line -> template with `{domain}` for the folder and the file-name part."""
    if "{domain}" in line:
        if not line.startswith("{domain}/"):
            raise DataFormatError(f"{where}: expected a path starting with '{{domain}}/'; got "
                                  f"{line!r}")
        return line
    head, sep, rest = line.partition("/")
    if not sep or head not in _ALIAS_TO_DOMAIN:
        raise DataFormatError(
            f"{where}: expected a path like 'rgb/point_407_view_2_domain_rgb.png' (a domain "
            f"folder, then the file) or '{{domain}}/point_407_view_2_domain_{{domain}}.png'; "
            f"got {line!r}."
        )
    alts = sorted(names_of(_ALIAS_TO_DOMAIN[head]), key=len, reverse=True)
    pattern = r"domain_(" + "|".join(re.escape(a) for a in alts) + r")(?=\.[A-Za-z]+$)"
    rest_t, n = re.subn(pattern, "domain_{domain}", rest)
    if n == 0:
        # The file name does not repeat the domain: the same name in every folder.
        rest_t = rest
    return "{domain}/" + rest_t


def resolve(root: str, template: str, domain: str, folder: str) -> str | None:
    """The existing file of `domain` for `template` (trying current and older names)."""
    _, _, rest = template.partition("/")
    for suffix in names_of(domain):
        path = os.path.join(root, folder, rest.replace("{domain}", suffix))
        if os.path.isfile(path):
            return path
    return None


def read_list(root: str, fname: str) -> list[tuple[int, str]]:
    path = os.path.join(root, fname)
    core.require_file(path, "the Taskonomy list of examples (one file name per line)")
    out = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, start=1):
            line = line.strip()
            if line and not line.startswith("#"):
                out.append((i, line_template(line.split()[0], f"{path}:{i}")))
    if not out:
        raise DataFormatError(f"{path} lists no examples.")
    return out


def check_layout(root: str) -> dict[str, str]:
    core.require_dir(root, "the Taskonomy folder (see data/taskonomy/README.md)")
    for fname in LISTS.values():
        core.require_file(os.path.join(root, fname), "a Taskonomy list file",
                          MANUAL_DOWNLOAD_INSTRUCTIONS)
    found = present_domains(root)
    if len(found) < 2:
        raise DataNotFoundError(
            f"{root!r} has {len(found)} domain folder(s) ({sorted(found)}); expected at least two "
            f"of {DOMAINS} (or their older names).\n{MANUAL_DOWNLOAD_INSTRUCTIONS}"
        )
    return found


def _check_png(path: str, domain: str) -> tuple[bytes, tuple[int, int]]:
    data, im = segmentation.load_image(path, f"a {domain} PNG")
    if im.mode not in ("L", "P", "RGB", "RGBA", "LA", "I;16", "I;16B", "I;16L", "I", "F"):
        raise DataFormatError(f"{path!r}: unsupported image mode {im.mode!r} for {domain}.")
    return data, (im.height, im.width)


class Taskonomy(core.ArrayRecordBuilder, skip_registration=True):
    """Taskonomy subset for image-to-image translation (TokenFusion's 1,000 / 500 split)."""

    name = "taskonomy"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "TokenFusion form; ten domains, old and new folder names."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
    DESCRIPTION = "Taskonomy subset (TokenFusion image-to-image translation split)."
    HOMEPAGE = "http://taskonomy.stanford.edu/"

    def _features(self):
        feats = {d: tfds.features.Tensor(shape=(), dtype=np.object_,
                                         doc=f"encoded {d} PNG (empty if absent)")
                 for d in DOMAINS}
        feats["name"] = tfds.features.Tensor(shape=(), dtype=np.object_, doc="list-file entry")
        return tfds.features.FeaturesDict(feats)

    def _split_generators(self, dl_manager):
        root = os.fspath(dl_manager.manual_dir)
        found = check_layout(root)
        self.info.metadata["domains"] = sorted(found, key=DOMAINS.index)
        self.info.metadata["folders"] = found
        return {
            split: self._examples(root, found, os.path.join(root, fname), read_list(root, fname))
            for split, fname in LISTS.items()
        }

    def _examples(self, root, found, list_path, items):
        def one(item):
            line, template = item
            ex = {d: b"" for d in DOMAINS}
            sizes = {}
            for d, folder in found.items():
                path = resolve(root, template, d, folder)
                if path is None:
                    expected = os.path.join(root, folder, template.partition("/")[2].replace(
                        "{domain}", d))
                    raise DataNotFoundError(
                        f"Missing file {expected!r} ({d}) for line {line} of {list_path}."
                    )
                ex[d], sizes[d] = _check_png(path, d)
            if len(set(sizes.values())) > 1:
                raise DataFormatError(
                    f"Line {line} of {list_path}: the domains' images differ in size: {sizes}."
                )
            ex["name"] = template
            return f"{line:07d}", ex

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            for start in range(0, len(items), 64):
                yield from pool.map(one, items[start : start + 64])


# --------------------------------------------------------------------------------------------
# The grain map.


def channels_of(domain: str) -> int:
    return 3 if domain in THREE_CHANNEL else 1


def domain_to_unit(domain: str, im: Image.Image) -> Image.Image:
    """The domain's pixels as an image whose values are already in [-1, 1] ('F' mode) or uint8
    (3-channel / 8-bit domains, scaled later)."""
    if domain in THREE_CHANNEL:
        return im if im.mode == "RGB" else im.convert("RGB")
    im = imaging.as_single_channel(im)
    if domain in LOG_MINMAX or domain in MINMAX:
        x = np.asarray(im, dtype=np.float32)
        if domain in LOG_MINMAX:
            x = np.log1p(np.maximum(x, 0))
        lo, hi = float(x.min()), float(x.max())
        x = (x - lo) * np.float32(2.0 / (hi - lo)) - 1 if hi > lo else np.full_like(x, -1.0)
        return Image.fromarray(x.astype(np.float32), mode="F")
    if im.mode == "L":
        return im
    x = np.asarray(im, dtype=np.float32) * np.float32(1 / 32767.5) - 1
    return Image.fromarray(x.astype(np.float32), mode="F")


class TranslationTransform:
    """Decode the source domains and the target, resize/crop/flip, scale to [-1, 1]."""

    def __init__(self, *, sources, target, image_size, load_size, augment, train):
        self.sources = tuple(sources)
        self.target = target
        self.size = int(image_size)
        self.load = int(load_size)
        self.augment = bool(augment) and train

    def _one(self, domain, data, geom):
        im = domain_to_unit(domain, imaging.open_image(data))
        resample = imaging.NEAREST if domain in NEAREST_DOMAINS else imaging.BILINEAR
        arr = imaging.apply_geometry(im, geom, resample=resample, fill=0)
        if arr.dtype == np.uint8:
            arr = arr.astype(np.float32) * np.float32(1 / 127.5) - np.float32(1)
        arr = arr.astype(np.float32, copy=False)
        return arr[..., None] if arr.ndim == 2 else arr

    def __call__(self, record, rng=None):
        data = {d: record[d] for d in (*self.sources, self.target)}
        with Image.open(io.BytesIO(data[self.target])) as head:
            hw = (head.height, head.width)
        if self.augment and rng is not None:
            geom = imaging.scale_crop_geometry(hw, (self.load, self.load), (self.size, self.size),
                                               rng, flip=True)
        else:
            geom = imaging.full_geometry(hw, (self.size, self.size))
        out = {d: self._one(d, data[d], geom) for d in self.sources}
        label = self._one(self.target, data[self.target], geom)
        if label.shape[-1] == 1:
            label = np.repeat(label, 3, axis=-1)
        out["label"] = np.clip(label, -1.0, 1.0)
        for d in self.sources:
            out[d] = np.clip(out[d], -1.0, 1.0)
        return out


class TaskonomySpec(DatasetSpec):
    name = "taskonomy"
    builder_cls = Taskonomy
    splits = ("train", "val")

    def add_defaults(self, cfg):
        import ml_collections

        ref = ml_collections.FieldReference(("reshading", "edge_texture"), field_type=tuple)
        cfg.modalities = ref
        cfg.sources = ref
        cfg.target = "rgb"
        cfg.image_size = 256
        cfg.load_size = 286
        cfg.augment = True

    def validate(self, cfg):
        mods = tuple(cfg.modalities)
        if tuple(cfg.get("sources", mods)) != mods:
            raise ValueError(f"taskonomy: sources {tuple(cfg.sources)} and modalities {mods} "
                             "differ; they name the same thing")
        bad = [m for m in (*mods, cfg.target) if m not in DOMAINS]
        if bad or not mods or len(set(mods)) != len(mods):
            raise ValueError(f"taskonomy sources must be distinct domains of {DOMAINS} and the "
                             f"target one of them; got sources {mods}, target {cfg.target!r}")
        if cfg.target in mods:
            raise ValueError(f"taskonomy target {cfg.target!r} is also a source")
        if cfg.load_size < cfg.image_size:
            raise ValueError("load_size must be >= image_size")

    def canonical_split(self, split):
        return super().canonical_split({"test": "val", "validation": "val"}.get(split, split))

    def missing_message(self, cfg):
        return (
            f"taskonomy is not prepared under {cfg.data_dir!r} (expected "
            f"{core.version_dir(Taskonomy, cfg.data_dir)}).\n{MANUAL_DOWNLOAD_INSTRUCTIONS}"
            f"Then run:\n  python -m mango_jax.data.prepare --dataset=taskonomy "
            f"--manual_dir=PATH --data_dir={cfg.data_dir}\n(see data/README.md and "
            "data/taskonomy/README.md)"
        )

    def prepare(self, *, data_dir, manual_dir, overwrite=False, **options):
        if options:
            raise ValueError(f"taskonomy takes no options; got {sorted(options)}")
        if manual_dir is None:
            raise DataNotFoundError("taskonomy needs --manual_dir.\n" +
                                    MANUAL_DOWNLOAD_INSTRUCTIONS)
        check_layout(os.fspath(manual_dir))
        return core.prepare_atomically(
            Taskonomy, data_dir=data_dir, manual_dir=manual_dir, overwrite=overwrite
        )

    def info(self, cfg, builder):
        self.validate(cfg)
        meta = dict(builder.info.metadata)
        present = set(meta["domains"])
        missing = [d for d in (*cfg.modalities, cfg.target) if d not in present]
        if missing:
            raise ValueError(
                f"taskonomy was prepared with domains {sorted(present)}; {missing} missing. "
                "Re-run prepare with those domain folders present."
            )
        s = int(cfg.image_size)
        return DatasetInfo(
            name=self.name,
            task="translation",
            num_classes=None,
            modality_shapes={d: (s, s, channels_of(d)) for d in cfg.modalities},
            modality_kinds={d: "image" for d in cfg.modalities},
            vocab_size=None,
            label_shape=(s, s, 3),
            eval_label_shape=(s, s, 3),
            label_dtype="float32",
            ignore_index=None,
            class_names=None,
            split_sizes={k: v.num_examples for k, v in builder.info.splits.items()},
            metadata={**meta, "target": cfg.target},
        )

    def transform(self, cfg, info, *, train):
        return TranslationTransform(
            sources=cfg.modalities, target=cfg.target, image_size=cfg.image_size,
            load_size=cfg.load_size, augment=cfg.augment, train=train,
        )


SPEC = TaskonomySpec()
