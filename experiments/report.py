r"""Collects runs' `results.json` and writes the paper's tables with our numbers beside its own.

    python -m experiments.report --workdirs='runs/*' --out=report/
    python -m experiments.report --workdirs=runs/nyu_mango,runs/nyu_glow,runs/sun_mango

`--workdirs` takes workdirs, `results.json` files or glob patterns, comma-separated; a match
without a `results.json` is skipped with a warning. `--out` gets one Markdown and one CSV file
per table plus `report.md`, which holds them all:

| file                      | the paper's table                                              |
|---------------------------|----------------------------------------------------------------|
| table1_segmentation       | 1: NYUDv2 + SUN RGB-D segmentation, prior methods and MANGO    |
| table2_taskonomy          | 2: Taskonomy image-to-image translation                        |
| table3_mmimdb             | 3: MM-IMDB movie-genre classification                          |
| table4_flow_layer         | 4: invertible layer ablation (RealNVP, Glow, Flow++, AttnFlow) |
| table5_partitions         | 5: partition ablation (MMCA, +IMCA, +LICA)                     |
| table6_blocks_latent      | 6 (+ appendix Table 7's 16 blocks): blocks x latent model      |
| table8_cost               | 8 (appendix): parameters, GFLOPs, inference time               |
| runs                      | every run with its settings and all its metrics                |

Reading a run. `results.json` is `{"test": {metric: value}, "val": {...}, "meta": {...}}` as the
training loop writes it (metric values are fractions); a run's flow layer, blocks and partitions
are what its fusion method describes (`meta.fusion_details`; older runs hold them in `meta`
itself), a baseline's blocks its config's `num_layers`. Our number in a paper table is the run's
'test' split, or its 'val' split where it has no 'test'; fractions are printed as percentages
where the paper prints them, KID ×100 and MAE / MSE ×10 (the paper's "×10^-2" / "×10^-1" units).
Several runs that land in one cell (seeds) are averaged and printed as mean±std. A cell of ours
stays empty where no run fits it; the paper's cell stays empty where the paper has no number.

Which runs fill which rows:
- A run's fusion family is `meta.fusion` (spelling and case ignored: 'TokenFusion',
  'token_fusion' and 'tokenfusion' are one). A baseline fills the paper's row of its family; where
  the paper has several rows of one family (TokenFusion Tiny / Small), `meta.variant` (or
  `meta.config.variant` / `.backbone`) picks one, and a run without it gets its own row.
  Unimodal runs ('unimodal', 'none') are told apart by their modality (`meta.sources` when it
  has one entry, else `modality` in `meta.config`: 'a' = first source).
- MANGO fills the main-comparison rows (Tables 1-3, 8) only in the paper's configuration:
  flow layer 'mango', 12 blocks, partitions MMCA+IMCA+LICA, latent model on. Each ablation
  table holds the other settings at that configuration and varies its own: Table 4 the flow
  layer, Table 5 the partitions, Table 6 blocks and latent model. Settings the paper does not
  list get extra rows of ours alone; runs that fit no table still appear in `runs`.

The paper's numbers are copied from its text (section 4, appendix). Its Table 2 did not survive in
that text: only its layout (five settings, FID / KID on RGB targets, MAE / MSE on the others, as
in TokenFusion) and two differences stated in the prose are known, so Table 2 leaves the paper's
cells empty and prints those differences beside ours.
"""

from __future__ import annotations

import csv
import glob
import json
import logging
import math
import os
import re
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from absl import app, flags

SEG_DATASETS = ("nyudv2", "sunrgbd")
SEG_METRICS = ("pixel_acc", "mean_acc", "miou")
SEG_METRIC_NAMES = {"pixel_acc": "Pixel Acc. (%)", "mean_acc": "mAcc. (%)", "miou": "mIoU (%)"}
DATASET_NAMES = {"nyudv2": "NYUDv2", "sunrgbd": "SUN RGB-D"}
FULL_PARTITIONS = frozenset({"mmca", "imca", "lica"})
MAIN_CONFIG = {"flow_layer": "mango", "num_blocks": 12, "partitions": FULL_PARTITIONS,
               "latent_model": True}

# ---------------------------------------------------------------------------------------------
# The paper's numbers (its Tables 1-8). None: '-' in the paper.

# Table 1: (group, method, inputs, family, variant, NYUDv2 (acc, mAcc, mIoU), SUN (...)).
TABLE1 = [
    ("CNN-based models", "FCN-32s [30]", "RGB", "fcn32s", None, (60.0, 42.2, 29.2),
     (68.4, 41.1, 29.0)),
    ("CNN-based models", "RefineNet [26]", "RGB", "refinenet", None, (74.4, 59.6, 47.6),
     (81.1, 57.7, 47.0)),
    ("CNN-based models", "FuseNet [13]", "RGB+D", "fusenet", None, (68.1, 50.4, 37.9),
     (76.3, 48.3, 37.3)),
    ("CNN-based models", "SSMA [62]", "RGB+D", "ssma", None, (75.2, 60.5, 48.7),
     (81.0, 58.1, 45.7)),
    ("CNN-based models", "RDFNet [39]", "RGB+D", "rdfnet", None, (76.0, 62.8, 50.1),
     (81.5, 60.1, 47.7)),
    ("CNN-based models", "AsymFusion [67]", "RGB+D", "asymfusion", None, (77.0, 64.0, 51.2),
     (None, None, None)),
    ("CNN-based models", "CEN [66]", "RGB+D", "cen", None, (77.7, 65.0, 52.5),
     (83.5, 63.2, 51.1)),
    ("Transformer-based models", "DPLNet [6]", "RGB+D", "dplnet", None, (None, None, 59.3),
     (None, None, 52.8)),
    ("Transformer-based models", "DFormer [71]", "RGB+D", "dformer", None, (None, None, 57.2),
     (None, None, 52.5)),
    ("Transformer-based models", "EMSANet [44]", "RGB+D", "emsanet", None, (None, None, 59.0),
     (None, None, 50.9)),
    ("Transformer-based models", "W/O Fusion (Tiny) [65]", "RGB", "unimodal", "tiny",
     (75.2, 62.5, 49.7), (82.3, 60.6, 47.0)),
    ("Transformer-based models", "Feature Concat (Tiny) [65]", "RGB+D", "concat", "tiny",
     (76.5, 63.4, 50.8), (82.8, 61.4, 47.9)),
    ("Transformer-based models", "TokenFusion (Tiny) [65]", "RGB+D", "tokenfusion", "tiny",
     (78.6, 66.2, 53.3), (84.0, 63.3, 51.4)),
    ("Transformer-based models", "W/O fusion (Small) [65]", "RGB", "unimodal", "small",
     (76.0, 63.0, 50.6), (82.9, 61.3, 48.1)),
    ("Transformer-based models", "Feature Concat (Small) [65]", "RGB+D", "concat", "small",
     (77.1, 63.8, 51.4), (83.5, 62.0, 49.0)),
    ("Transformer-based models", "TokenFusion (Small) [65]", "RGB+D", "tokenfusion", "small",
     (79.0, 66.9, 54.2), (84.7, 64.1, 53.0)),
    ("Transformer-based models", "GeminiFusion (MiT-B5) [20]", "RGB+D", "geminifusion", None,
     (80.3, 70.4, 57.7), (83.8, 65.3, 53.3)),
    ("Transformer-based models", "MANGO", "RGB+D", "mango", None, (81.5, 71.6, 59.2),
     (83.9, 67.2, 54.1)),
]

# Table 2: the five settings (sources, target) of TokenFusion's protocol and their metrics.
TABLE2_TASKS = [
    ("Shade+Texture → RGB", frozenset({"shade", "texture"}), "rgb", ("fid", "kid")),
    ("Depth+Normal → RGB", frozenset({"depth", "normal"}), "rgb", ("fid", "kid")),
    ("RGB+Shade → Normal", frozenset({"rgb", "shade"}), "normal", ("mae", "mse")),
    ("RGB+Normal → Shade", frozenset({"rgb", "normal"}), "shade", ("mae", "mse")),
    ("RGB+Edge → Depth", frozenset({"rgb", "edge"}), "depth", ("mae", "mse")),
]
TABLE2_METHODS = [("TokenFusion [65]", "tokenfusion"), ("GeminiFusion [20]", "geminifusion"),
                  ("MANGO", "mango")]
# Stated in the text: MANGO's FID is this much lower than GeminiFusion's.
TABLE2_FID_GAP = {"Shade+Texture → RGB": -1.71, "Depth+Normal → RGB": -29.37}

# Table 3: (method, modality, family, variant, micro F1, macro F1).
TABLE3 = [
    ("Image Network [70]", "I", "unimodal", "image", 40.0, 25.3),
    ("Text Network [70]", "T", "unimodal", "text", 59.2, 47.2),
    ("Late Fusion [24]", "I+T", "late", None, 59.6, 51.0),
    ("LRTF [29]", "I+T", "lrtf", None, 59.2, 49.3),
    ("MI-Matrix [19]", "I+T", "mimatrix", None, 58.5, 48.4),
    ("DynMM [70]", "I+T", "dynmm", None, 60.4, 51.6),
    ("COCA [74]", "I+T", "coca", None, 67.7, 62.6),
    ("MFM [3]", "I+T", "mfm", None, 67.5, 61.6),
    ("BLIP [22]", "I+T", "blip", None, 67.4, 62.8),
    ("ReFNet [43]", "I+T", "refnet", None, 68.0, 58.7),
    ("BridgeTower [69]", "I+T", "bridgetower", None, 68.2, 63.3),
    ("MANGO", "I+T", "mango", None, 71.7, 68.2),
]

# Table 4: (layer, flow_layer, NYUDv2, SUN RGB-D).
TABLE4 = [
    ("Coupling Layer (RealNVP) [5]", "realnvp", (76.0, 63.4, 50.8), (79.8, 59.9, 48.5)),
    ("Glow [21]", "glow", (77.0, 66.4, 53.0), (80.3, 61.9, 49.1)),
    ("Flow++ [15]", "flowpp", (77.5, 68.1, 54.2), (81.5, 62.0, 50.5)),
    ("AttnFlow [48]", "attnflow", (79.5, 69.9, 56.5), (82.5, 65.1, 52.2)),
    ("MANGO (ICA)", "mango", (81.5, 71.6, 59.2), (83.9, 67.2, 54.1)),
]

# Table 5: (partitions, NYUDv2, SUN RGB-D).
TABLE5 = [
    (frozenset({"mmca"}), (79.3, 68.8, 56.4), (82.4, 64.6, 51.3)),
    (frozenset({"mmca", "imca"}), (80.2, 70.8, 58.0), (83.3, 66.2, 53.7)),
    (frozenset({"mmca", "imca", "lica"}), (81.5, 71.6, 59.2), (83.9, 67.2, 54.1)),
]

# Table 6 (+ the 16-block row of appendix Table 7): (blocks, latent, NYUDv2, SUN RGB-D).
TABLE6 = [
    (6, False, (75.9, 63.5, 51.0), (79.4, 59.1, 47.3)),
    (6, True, (77.5, 65.8, 52.3), (79.6, 60.5, 48.1)),
    (8, False, (78.0, 65.5, 53.1), (80.8, 60.8, 49.4)),
    (8, True, (78.1, 65.3, 54.1), (84.4, 60.0, 51.4)),
    (12, False, (80.7, 70.4, 58.0), (83.4, 65.8, 53.5)),
    (12, True, (81.5, 71.6, 59.2), (83.9, 67.2, 54.1)),
    (16, True, (83.1, 75.1, 61.7), (85.4, 68.7, 55.6)),
]

# Table 8: (method, family, NYUDv2 mIoU, SUN mIoU, params (M), GFLOPs, inference ms).
TABLE8 = [
    ("TokenFusion [65]", "tokenfusion", 54.2, 53.0, 45.9, 108, 126),
    ("GeminiFusion [20]", "geminifusion", 57.7, 53.3, 75.8, 174, 153),
    ("MANGO", "mango", 59.2, 54.1, 72.9, 152, 144),
]

# ---------------------------------------------------------------------------------------------
# Names.


def norm(name) -> str:
    """Lower case, letters and digits only: 'Token_Fusion' -> 'tokenfusion'."""
    return re.sub(r"[^a-z0-9+]", "", str(name).lower()).replace("+", "plus")


FAMILY_ALIASES = {
    "unimodal": {"unimodal", "none", "nofusion", "wofusion", "single", "singlemodality"},
    "concat": {"concat", "featureconcat", "early", "earlyfusion", "concatenation"},
    "late": {"late", "latefusion"},
    "lrtf": {"lrtf", "lowrank", "lowranktensorfusion", "lmf"},
    "mimatrix": {"mimatrix", "multiplicativeinteractions"},
    "attnflow": {"attnflow", "invertibleattention"},
    "flowpp": {"flowpp", "flowplusplus", "flow++"},
    "realnvp": {"realnvp", "coupling", "affinecoupling", "couplinglayer"},
}
_ALIAS = {norm(a): fam for fam, aliases in FAMILY_ALIASES.items() for a in aliases}


def family(name) -> str:
    n = norm(name)
    return _ALIAS.get(n, n)


DOMAINS = {
    "rgb": {"rgb", "color"},
    "shade": {"shade", "reshading", "reshade", "shading"},
    "texture": {"texture", "edgetexture", "edge2d"},
    "edge": {"edge", "edgeocclusion", "edge3d"},
    "normal": {"normal", "normals", "surfacenormal"},
    "depth": {"depth", "deptheuclidean", "depthzbuffer"},
    "image": {"image", "poster", "posters", "vgg", "vggfeatures", "images", "img"},
    "text": {"text", "plot", "word2vec", "sequences", "caption"},
}
_DOMAIN = {norm(a): d for d, aliases in DOMAINS.items() for a in aliases}


def domain(name) -> str:
    n = norm(name)
    return _DOMAIN.get(n, n)


# ---------------------------------------------------------------------------------------------
# Runs.


@dataclass
class Run:
    path: str
    name: str
    splits: dict
    meta: dict

    def get(self, key, default=None):
        """`meta[key]`, else what the fusion method described (`meta.fusion_details`, e.g.
        MANGO's flow_layer, num_blocks, partitions); a baseline's depth is its config's
        `num_layers`. Runs written before `fusion_details` existed hold these in `meta`."""
        if key in self.meta:
            return self.meta[key]
        details = self.meta.get("fusion_details") or {}
        if key in details:
            return details[key]
        if key == "num_blocks":
            fusion = ((self.meta.get("config") or {}).get("model") or {}).get("fusion") or {}
            return fusion.get("num_layers", default)
        return default

    @property
    def experiment(self) -> str:
        return norm(self.get("experiment", ""))

    @property
    def family(self) -> str:
        return family(self.get("fusion", ""))

    @property
    def partitions(self) -> frozenset | None:
        p = self.get("partitions")
        return None if p is None else frozenset(norm(x) for x in p)

    @property
    def split(self) -> str | None:
        for s in ("test", "val"):
            if isinstance(self.splits.get(s), dict):
                return s
        return next(iter(self.splits), None)

    @property
    def metrics(self) -> dict:
        return self.splits.get(self.split, {}) if self.split else {}

    def setting(self, key):
        if key == "partitions":
            return self.partitions
        if key == "flow_layer":
            v = self.get("flow_layer")
            return None if v is None else family(v)
        return self.get(key)

    def matches(self, **settings) -> bool:
        return all(self.setting(k) == v for k, v in settings.items())

    @property
    def variant_tokens(self) -> set:
        """What tells rows of one family apart: backbone variant and, for unimodal, modality."""
        cfg = self.get("config") or {}
        tokens = set()
        for v in (self.get("variant"), _find(cfg, "variant"), _find(cfg, "backbone")):
            if v:
                tokens.add(norm(v))
                tokens.update(t for t in ("tiny", "small", "base", "large") if t in norm(v))
        sources = [domain(s) for s in self.get("sources") or []]
        if self.family == "unimodal":
            modality = _find(cfg, "modality")
            if len(sources) == 1:
                tokens.add(sources[0])
            elif modality in ("a", "b") and len(sources) == 2:
                tokens.add(sources[0 if modality == "a" else 1])
        return tokens


def _find(tree, key):
    """First value under `key` anywhere in nested dicts (None if absent)."""
    if isinstance(tree, dict):
        if key in tree and not isinstance(tree[key], dict):
            return tree[key]
        for v in tree.values():
            found = _find(v, key)
            if found is not None:
                return found
    return None


def expand(patterns: Iterable[str]) -> list[str]:
    """Workdirs / results.json paths from names and glob patterns, in order, without repeats."""
    paths = []
    for pattern in patterns:
        pattern = pattern.strip()
        if not pattern:
            continue
        matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        if not matches:
            logging.warning("no path matches %s", pattern)
        for p in matches:
            if p not in paths:
                paths.append(p)
    return paths


def load_runs(patterns: Iterable[str]) -> tuple[list[Run], list[str]]:
    """Reads every `results.json`; returns the runs and the warnings about skipped paths."""
    runs, skipped = [], []
    for path in expand(patterns):
        file = path if os.path.isfile(path) else os.path.join(path, "results.json")
        workdir = os.path.dirname(file) if os.path.isfile(path) else path
        if not os.path.isfile(file):
            skipped.append(f"{path}: no results.json")
            continue
        try:
            with open(file) as f:
                data = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            skipped.append(f"{file}: unreadable ({e})")
            continue
        if not isinstance(data, dict):
            skipped.append(f"{file}: not a JSON object")
            continue
        splits = {k: v for k, v in data.items() if k != "meta" and isinstance(v, dict)}
        name = os.path.normpath(workdir)
        runs.append(Run(path=file, name=name, splits=splits, meta=data.get("meta") or {}))
    for s in skipped:
        logging.warning("skipped %s", s)
    return runs, skipped


# ---------------------------------------------------------------------------------------------
# Tables.


@dataclass
class Cell:
    """A number: the paper's, or ours (the mean of `values`) with the runs behind it."""

    values: list = field(default_factory=list)
    digits: int = 1
    runs: list = field(default_factory=list)

    @property
    def value(self):
        vals = [v for v in self.values if v is not None and not _isnan(v)]
        return statistics.fmean(vals) if vals else None

    def markdown(self) -> str:
        v = self.value
        if v is None:
            return ""
        text = f"{v:.{self.digits}f}"
        vals = [v for v in self.values if v is not None and not _isnan(v)]
        if len(vals) > 1:
            text += f"±{statistics.stdev(vals):.{self.digits}f}"
        return text

    def csv(self) -> str:
        v = self.value
        return "" if v is None else f"{v:.{max(self.digits, 4)}f}"


def _isnan(v) -> bool:
    return isinstance(v, float) and math.isnan(v)


def paper(v, digits=1) -> Cell:
    return Cell([v], digits)


@dataclass
class Table:
    key: str
    title: str
    columns: list
    rows: list = field(default_factory=list)  # lists of str | Cell; a str row = a group heading
    notes: list = field(default_factory=list)

    def add(self, *cells):
        self.rows.append(list(cells))

    def markdown(self) -> str:
        lines = [f"## {self.title}", "", "| " + " | ".join(self.columns) + " |",
                 "|" + "|".join("---" for _ in self.columns) + "|"]
        for row in self.rows:
            if isinstance(row, str):
                lines.append(f"| **{row}** |" + " |" * (len(self.columns) - 1))
                continue
            cells = [c.markdown() if isinstance(c, Cell) else str(c) for c in row]
            lines.append("| " + " | ".join(x.replace("|", "\\|") for x in cells) + " |")
        if self.notes:
            lines.append("")
            lines.extend(f"- {n}" for n in self.notes)
        return "\n".join(lines) + "\n"

    def write_csv(self, path: str) -> None:
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(self.columns)
            for row in self.rows:
                if isinstance(row, str):
                    continue
                w.writerow([c.csv() if isinstance(c, Cell) else str(c) for c in row])


def ours(runs: Sequence[Run], metric: str, scale: float = 100.0, digits: int = 1) -> Cell:
    cell = Cell([], digits)
    for r in runs:
        v = r.metrics.get(metric)
        if isinstance(v, (int, float)) and not _isnan(float(v)):
            cell.values.append(float(v) * scale)
            cell.runs.append(r.name)
    return cell


def run_names(*cells: Cell) -> str:
    names = []
    for c in cells:
        for n in c.runs:
            if n not in names:
                names.append(n)
    return "; ".join(names)


def seg_cells(paper_nyu, paper_sun, runs_nyu, runs_sun) -> list:
    """Paper / ours pairs for the 3 metrics of NYUDv2, then of SUN RGB-D."""
    cells = []
    for values, runs in ((paper_nyu, runs_nyu), (paper_sun, runs_sun)):
        for i, m in enumerate(SEG_METRICS):
            cells += [paper(values[i] if values else None), ours(runs, m)]
    return cells


def seg_columns(first: Sequence[str]) -> list:
    cols = list(first)
    for ds in SEG_DATASETS:
        for m in SEG_METRICS:
            cols += [f"{DATASET_NAMES[ds]} {SEG_METRIC_NAMES[m]} paper", "ours"]
    return cols + ["our runs"]


def is_main_mango(r: Run) -> bool:
    return r.family == "mango" and r.matches(**MAIN_CONFIG)


def _place(runs: Sequence[Run], rows: Sequence[tuple[str, str | None]]):
    """Assigns runs to paper rows `(family, variant)`; returns {row index: runs}, leftovers."""
    placed = {i: [] for i in range(len(rows))}
    left = []
    for r in runs:
        cands = [i for i, (fam, _) in enumerate(rows) if fam == r.family]
        if r.family == "mango" and not is_main_mango(r):
            continue  # MANGO outside the paper's configuration belongs to the ablations
        tokens = r.variant_tokens
        exact = [i for i in cands if rows[i][1] is not None and rows[i][1] in tokens]
        if exact:
            placed[exact[0]].append(r)
        elif len(cands) == 1 and rows[cands[0]][1] is None:
            placed[cands[0]].append(r)
        else:
            left.append(r)
    return placed, left


def _extra_label(r: Run) -> str:
    fusion = str(r.get("fusion", "?"))
    variant = sorted(r.variant_tokens)
    return f"{fusion}" + (f" ({', '.join(variant)})" if variant else "") + " (ours only)"


def _group_extra(runs: Sequence[Run]) -> dict:
    groups = {}
    for r in runs:
        groups.setdefault(_extra_label(r), []).append(r)
    return groups


def _inputs(r: Run) -> str:
    names = {"rgb": "RGB", "depth": "D", "image": "I", "text": "T"}
    return "+".join(names.get(domain(s), str(s)) for s in r.get("sources") or [])


def table1(runs: Sequence[Run]) -> Table:
    t = Table("table1_segmentation",
              "Table 1: RGB-D semantic segmentation on NYUDv2 and SUN RGB-D (%)",
              seg_columns(["Method", "Inputs"]))
    seg = {ds: [r for r in runs if r.experiment == ds] for ds in SEG_DATASETS}
    rows = [(fam, var) for _, _, _, fam, var, _, _ in TABLE1]
    placed = {ds: _place(seg[ds], rows) for ds in SEG_DATASETS}
    group = None
    for i, (grp, method, inputs, _, _, nyu, sun) in enumerate(TABLE1):
        if grp != group:
            t.rows.append(grp)
            group = grp
        cells = seg_cells(nyu, sun, placed["nyudv2"][0][i], placed["sunrgbd"][0][i])
        t.add(method, inputs, *cells, run_names(*cells))
    extra = _group_extra(placed["nyudv2"][1] + placed["sunrgbd"][1])
    if extra:
        t.rows.append("Our other runs")
    for label, rs in extra.items():
        cells = seg_cells(None, None, [r for r in rs if r.experiment == "nyudv2"],
                          [r for r in rs if r.experiment == "sunrgbd"])
        t.add(label, _inputs(rs[0]), *cells, run_names(*cells))
    t.notes.append("MANGO's row takes only runs in the paper's configuration (flow layer "
                   "'mango', 12 blocks, MMCA+IMCA+LICA, latent model); baselines fill the row of "
                   "their fusion family.")
    return t


def _task_of(r: Run):
    sources = frozenset(domain(s) for s in r.get("sources") or [])
    target = domain(r.get("target", ""))
    for label, srcs, tgt, _ in TABLE2_TASKS:
        # 'Edge' of RGB+Edge -> Depth: occlusion or texture edges, whichever a run used.
        alt = frozenset({"texture" if s == "edge" else s for s in srcs})
        if target == tgt and sources in (srcs, alt):
            return label
    names = {"rgb": "RGB", "shade": "Shade", "texture": "Texture", "edge": "Edge",
             "normal": "Normal", "depth": "Depth"}
    src = "+".join(names.get(s, s) for s in sorted(sources))
    return f"{src} → {names.get(target, target)}"


TABLE2_SCALE = {"fid": (1.0, 2), "kid": (100.0, 2), "mae": (10.0, 2), "mse": (10.0, 2)}


def table2(runs: Sequence[Run]) -> Table:
    cols = ["Task", "Method"]
    for label in ("FID", "KID (×10⁻²)", "MAE (×10⁻¹)", "MSE (×10⁻¹)"):
        cols += [f"{label} paper", "ours"]
    t = Table("table2_taskonomy", "Table 2: image-to-image translation on Taskonomy",
              cols + ["our runs"])
    tx = [r for r in runs if r.experiment == "taskonomy"]
    by_task = {}
    for r in tx:
        by_task.setdefault(_task_of(r), []).append(r)
    task_labels = [label for label, *_ in TABLE2_TASKS]
    task_labels += [k for k in by_task if k not in task_labels]
    fid_by = {}
    for task in task_labels:
        task_runs = by_task.get(task, [])
        methods = [(name, fam) for name, fam in TABLE2_METHODS]
        rows = [(fam, None) for _, fam in methods]
        placed, left = _place(task_runs, rows)
        entries = [(name, placed[i]) for i, (name, _) in enumerate(methods)]
        entries += list(_group_extra(left).items())
        for name, rs in entries:
            cells = []
            for m in ("fid", "kid", "mae", "mse"):
                scale, digits = TABLE2_SCALE[m]
                cells += [Cell([], digits), ours(rs, m, scale, digits)]
            fid_by[(task, name)] = cells[1].value
            t.add(task, name, *cells, run_names(*cells))
    for task, gap in TABLE2_FID_GAP.items():
        ours_gap = None
        a, b = fid_by.get((task, "MANGO")), fid_by.get((task, "GeminiFusion [20]"))
        if a is not None and b is not None:
            ours_gap = a - b
        cells = [Cell([gap], 2), Cell([ours_gap], 2)] + [Cell([], 2) for _ in range(6)]
        t.add(task, "MANGO − GeminiFusion", *cells, "")
    t.notes += [
        "The paper's Table 2 values are not in the text we have; it states that MANGO's FID is "
        "1.71 (Shade+Texture → RGB) and 29.37 (Depth+Normal → RGB) lower than GeminiFusion's "
        "(the 'MANGO − GeminiFusion' rows).",
        "FID / KID are scored on RGB targets and MAE / MSE on the others, as in the paper; we "
        "print every metric a run has. KID is printed ×100 and MAE / MSE ×10.",
    ]
    return t


def table3(runs: Sequence[Run]) -> Table:
    t = Table("table3_mmimdb", "Table 3: movie-genre classification on MM-IMDB (%)",
              ["Method", "Modality", "Micro F1 (%) paper", "ours", "Macro F1 (%) paper", "ours",
               "our runs"])
    mm = [r for r in runs if r.experiment == "mmimdb"]
    placed, left = _place(mm, [(fam, var) for _, _, fam, var, _, _ in TABLE3])
    for i, (method, modality, _, _, micro, macro) in enumerate(TABLE3):
        cells = [paper(micro), ours(placed[i], "micro_f1"), paper(macro),
                 ours(placed[i], "macro_f1")]
        t.add(method, modality, *cells, run_names(*cells))
    for label, rs in _group_extra(left).items():
        cells = [Cell(), ours(rs, "micro_f1"), Cell(), ours(rs, "macro_f1")]
        t.add(label, _inputs(rs[0]), *cells, run_names(*cells))
    return t


def _ablation_runs(runs, **fixed):
    return [r for r in runs if r.family == "mango" and r.experiment in SEG_DATASETS
            and r.matches(**fixed)]


def _seg_row(rs, nyu, sun):
    cells = seg_cells(nyu, sun, [r for r in rs if r.experiment == "nyudv2"],
                      [r for r in rs if r.experiment == "sunrgbd"])
    return cells + [run_names(*cells)]


def table4(runs: Sequence[Run]) -> Table:
    t = Table("table4_flow_layer", "Table 4: effectiveness of the invertible layer (%)",
              seg_columns(["Layer"]))
    base = {k: v for k, v in MAIN_CONFIG.items() if k not in ("flow_layer", "partitions")}
    # Only MANGO's own layer has partitions (a baseline layer's are None).
    rs = [r for r in _ablation_runs(runs, **base)
          if r.setting("flow_layer") != "mango" or r.partitions == FULL_PARTITIONS]
    known = set()
    for name, layer, nyu, sun in TABLE4:
        known.add(layer)
        t.add(name, *_seg_row([r for r in rs if r.setting("flow_layer") == layer], nyu, sun))
    for layer in sorted({str(r.setting("flow_layer")) for r in rs} - known):
        t.add(f"{layer} (ours only)",
              *_seg_row([r for r in rs if str(r.setting("flow_layer")) == layer], None, None))
    t.notes.append("MANGO runs with 12 blocks, MMCA+IMCA+LICA (for its own layer) and the latent "
                   "model; the flow layer varies (meta.fusion_details.flow_layer).")
    return t


def _mark(flag: bool) -> str:
    return "✓" if flag else ""


def table5(runs: Sequence[Run]) -> Table:
    t = Table("table5_partitions", "Table 5: effectiveness of the partition methods (%)",
              seg_columns(["MMCA", "IMCA", "LICA"]))
    base = {k: v for k, v in MAIN_CONFIG.items() if k != "partitions"}
    rs = _ablation_runs(runs, **base)
    sets = [p for p, _, _ in TABLE5]
    for parts, nyu, sun in TABLE5:
        t.add(*(_mark(p in parts) for p in ("mmca", "imca", "lica")),
              *_seg_row([r for r in rs if r.partitions == parts], nyu, sun))
    others = {r.partitions for r in rs if r.partitions is not None} - set(sets)
    for parts in sorted(others, key=lambda p: sorted(p)):
        extra = sorted(parts - FULL_PARTITIONS)
        row = [_mark(p in parts) for p in ("mmca", "imca", "lica")]
        if extra:
            row[-1] += f" (+{', '.join(extra)})"
        t.add(*row, *_seg_row([r for r in rs if r.partitions == parts], None, None))
    t.notes.append("MANGO runs with the 'mango' flow layer, 12 blocks and the latent model; "
                   "meta.fusion_details.partitions varies. Rows the paper lacks are ours only.")
    return t


def table6(runs: Sequence[Run]) -> Table:
    t = Table("table6_blocks_latent",
              "Table 6: number of blocks, with and without the latent model (%)",
              seg_columns(["# Blocks", "Latent model"]))
    rs = _ablation_runs(runs, flow_layer="mango", partitions=FULL_PARTITIONS)
    keys = [(b, lat) for b, lat, _, _ in TABLE6]
    for blocks, latent, nyu, sun in TABLE6:
        sel = [r for r in rs if r.get("num_blocks") == blocks and r.get("latent_model") is latent]
        t.add(str(blocks), "✓" if latent else "✗", *_seg_row(sel, nyu, sun))
    others = {(r.get("num_blocks"), r.get("latent_model")) for r in rs} - set(keys)
    for blocks, latent in sorted(others, key=lambda k: (str(k[0]), str(k[1]))):
        sel = [r for r in rs if r.get("num_blocks") == blocks and r.get("latent_model") == latent]
        t.add(f"{blocks} (ours only)", "✓" if latent else "✗", *_seg_row(sel, None, None))
    t.notes.append("The 16-block row is the paper's appendix Table 7 (latent model only). MANGO "
                   "runs with the 'mango' flow layer and MMCA+IMCA+LICA.")
    return t


def table8(runs: Sequence[Run]) -> Table:
    cols = ["Method", "NYUDv2 mIoU (%) paper", "ours", "SUN RGB-D mIoU (%) paper", "ours",
            "Params (M) paper", "ours", "GFLOPs paper", "ours", "Inference (ms) paper", "ours",
            "our runs"]
    t = Table("table8_cost", "Table 8 (appendix): computational cost", cols)
    seg = [r for r in runs if r.experiment in SEG_DATASETS]
    placed, _ = _place(seg, [(fam, None) for _, fam, *_ in TABLE8])
    for i, (method, _, nyu, sun, params, gflops, ms) in enumerate(TABLE8):
        rs = placed[i]
        nyu_runs = [r for r in rs if r.experiment == "nyudv2"]
        sun_runs = [r for r in rs if r.experiment == "sunrgbd"]
        cost = {"params": Cell([], 1), "gflops": Cell([], 0), "inference_ms": Cell([], 0)}
        for r in nyu_runs or sun_runs:
            for key, cell in cost.items():
                v = r.get(key)
                if isinstance(v, (int, float)):
                    cell.values.append(v / 1e6 if key == "params" else v)
                    cell.runs.append(r.name)
        cells = [paper(nyu), ours(nyu_runs, "miou"), paper(sun), ours(sun_runs, "miou"),
                 paper(params), cost["params"], paper(gflops, 0), cost["gflops"],
                 paper(ms, 0), cost["inference_ms"]]
        t.add(method, *cells, run_names(*cells))
    t.notes.append("Ours: meta.params (and meta.gflops / meta.inference_ms where a run records "
                   "them) of the NYUDv2 runs, else the SUN RGB-D ones.")
    return t


METRIC_ORDER = ("accuracy", "micro_f1", "macro_f1", "pixel_acc", "mean_acc", "miou", "mae",
                "mse", "fid", "kid")
PERCENT = {"accuracy", "micro_f1", "macro_f1", "pixel_acc", "mean_acc", "miou"}


def _metric_column(m: str) -> tuple[str, float, int]:
    if m in PERCENT or m.endswith("_accuracy"):
        return f"{m} (%)", 100.0, 2
    if m in ("kid", "kid_std"):
        return f"{m} (×100)", 100.0, 3
    return m, 1.0, 4


def runs_table(runs: Sequence[Run]) -> Table:
    metrics = []
    for r in runs:
        for split in r.splits.values():
            for m, v in split.items():
                if isinstance(v, (int, float)) and m not in metrics:
                    metrics.append(m)
    metrics.sort(key=lambda m: (METRIC_ORDER.index(m) if m in METRIC_ORDER else 99, m))
    cols = ["workdir", "experiment", "fusion", "flow layer", "blocks", "partitions", "latent",
            "sources → target", "split", "params (M)", "steps", "train time (s)"]
    cols += [_metric_column(m)[0] for m in metrics]
    t = Table("runs", "All runs", cols)
    for r in runs:
        parts = r.get("partitions")
        latent = r.get("latent_model")
        params = r.get("params")
        sources = "+".join(str(s) for s in r.get("sources") or [])
        for split, values in r.splits.items():
            row = [r.name, str(r.get("experiment", "")), str(r.get("fusion", "")),
                   str(r.get("flow_layer", "") or ""), str(r.get("num_blocks", "") or ""),
                   "+".join(parts) if parts else "", "" if latent is None else _mark(latent) or "✗",
                   f"{sources} → {r.get('target', '')}" if sources else str(r.get("target", "")),
                   split, Cell([params / 1e6] if isinstance(params, (int, float)) else [], 2),
                   str(r.get("steps", "") or ""),
                   Cell([r.get("train_time_s")] if isinstance(r.get("train_time_s"),
                                                               (int, float)) else [], 1)]
            for m in metrics:
                _, scale, digits = _metric_column(m)
                v = values.get(m)
                row.append(Cell([float(v) * scale] if isinstance(v, (int, float)) else [], digits))
            t.add(*row)
    if not runs:
        t.notes.append("No run found.")
    return t


def build_tables(runs: Sequence[Run]) -> list[Table]:
    return [table1(runs), table2(runs), table3(runs), table4(runs), table5(runs), table6(runs),
            table8(runs), runs_table(runs)]


def write_report(patterns: Iterable[str], out: str) -> list[Table]:
    """Reads the runs, writes every table as `.md` and `.csv` and `report.md` under `out`."""
    runs, skipped = load_runs(patterns)
    tables = build_tables(runs)
    os.makedirs(out, exist_ok=True)
    parts = ["# MANGO: our results beside the paper's", "",
             f"{len(runs)} run(s). Our numbers are each run's 'test' split ('val' where it has "
             "no test); the paper's are copied from its text. Empty 'ours' cells: no run fits "
             "that row yet. Several runs in one cell: mean±std.", ""]
    if skipped:
        parts += ["Skipped:", ""] + [f"- {s}" for s in skipped] + [""]
    for t in tables:
        md = t.markdown()
        with open(os.path.join(out, f"{t.key}.md"), "w") as f:
            f.write(md)
        t.write_csv(os.path.join(out, f"{t.key}.csv"))
        parts += [md]
    parts += robustness_section(patterns)
    with open(os.path.join(out, "report.md"), "w") as f:
        f.write("\n".join(parts))
    return tables


def robustness_section(patterns: Iterable[str]) -> list[str]:
    """The runs' `robustness.json` (`python -m experiments.robustness`) as one table."""
    from mango_jax import robustness

    found = {}
    for p in expand(patterns):
        path = os.path.join(os.path.dirname(p) if p.endswith(".json") else p, "robustness.json")
        if os.path.isfile(path):
            with open(path) as f:
                found[os.path.basename(os.path.dirname(os.path.abspath(path)))] = json.load(f)
    groups = {}  # One table per pair of modalities.
    for name, r in found.items():
        groups.setdefault(tuple(r["modalities"]), {})[name] = r
    return (["## Robustness to corrupted and missing modalities", ""] if groups else []) + [
        robustness.markdown(*robustness.table(g)[:2]) for g in groups.values()]


def define_flags(flag_values=flags.FLAGS) -> None:
    flags.DEFINE_list("workdirs", None, "Workdirs, results.json files or glob patterns.",
                      flag_values=flag_values)
    flags.DEFINE_string("out", "report", "Output directory.", flag_values=flag_values)
    flags.mark_flag_as_required("workdirs", flag_values=flag_values)


def main(argv, flag_values=flags.FLAGS) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    tables = write_report(flag_values.workdirs, flag_values.out)
    print(f"wrote {len(tables)} tables and report.md to {flag_values.out}")


if __name__ == "__main__":
    define_flags()
    app.run(main)
