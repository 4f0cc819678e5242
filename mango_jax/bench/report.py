"""Benchmark records, the issue's bars, text tables, the JSON file and the sweep plot.

Units in every record: FLOPs in GFLOP (XLA's count, 2 per multiply-add; `gmacs` = GFLOP / 2 is
the unit segmentation papers, Table 8 included, call "GFLOPs"), times in ms or s as the key
says, memory in bytes (`memory`) and MiB (`peak_mib`).
"""

from __future__ import annotations

import json
import math
import os
import tempfile

import numpy as np

from mango_jax.bench import xla
from mango_jax.bench.timing import Timing

MIB = 2 ** 20

# Dense bf16 peak of the GPUs the project runs on (TFLOP/s, NVIDIA data sheets, SXM parts).
GPU_PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0}


def gpu_peak_tflops(device_kind: str) -> float | None:
    """The bf16 peak of a GPU named like `device_kind` ('NVIDIA H100 80GB HBM3'), else None."""
    for name, peak in GPU_PEAK_BF16_TFLOPS.items():
        if name.lower() in device_kind.lower():
            return peak
    return None


def _gflops(flops: float | None) -> float | None:
    return None if flops is None else flops / 1e9


def forward_record(params: dict[str, int], forward: xla.Program) -> dict:
    """Parameters and forward FLOPs of a model, run at batch 1 (per-example cost)."""
    return {"params_m": params["total"] / 1e6,
            "params_m_by_part": {k: v / 1e6 for k, v in params.items() if k != "total"},
            "forward_gflops": _gflops(forward.flops),
            "forward_gmacs": None if forward.flops is None else forward.flops / 2e9}


def inference_record(program: xla.Program, timing: Timing) -> dict:
    """Inference at batch 1: median ms per image (Table 8's latency) and the build times."""
    return {"inference": {**timing.as_dict(), "lower_s": program.lower_s,
                          "compile_s": program.compile_s},
            "inference_ms": 1e3 * timing.median}


def train_record(program: xla.Program, timing: Timing, batch_size: int, *,
                 model_flops: float | None = None) -> dict:
    """One train step: FLOPs, build times, step time, throughput and memory.

    `achieved_gflops_per_s` counts every FLOP the program runs, remat's recomputation
    included; `model_gflops_per_s` counts only the FLOPs of the step without remat
    (`model_flops`, default: this program's), so it compares useful work per second.
    """
    seconds = timing.median
    memory = program.memory.as_dict() if program.memory else None
    model_flops = program.flops if model_flops is None else model_flops
    return {"train_step_gflops": _gflops(program.flops),
            "lower_s": program.lower_s, "compile_s": program.compile_s,
            "step": timing.as_dict(), "examples_per_s": batch_size / seconds,
            "achieved_gflops_per_s": None if program.flops is None
            else program.flops / seconds / 1e9,
            "model_gflops_per_s": None if model_flops is None else model_flops / seconds / 1e9,
            "memory": memory, "peak_mib": None if memory is None else memory["peak"] / MIB}


RATIO_KEYS = (("params_m", "params"), ("forward_gflops", "forward GFLOP"),
              ("inference_ms", "inference ms"),
              ("train_step_gflops", "train-step GFLOP"), ("compile_s", "compile s"),
              ("step_ms", "step ms"), ("examples_per_s", "examples/s"),
              ("achieved_gflops_per_s", "achieved GFLOP/s"),
              ("model_gflops_per_s", "model GFLOP/s"), ("peak_mib", "peak MiB"))


def figure(record: dict, key: str):
    """The figure `key` of a record (`step_ms`: the median step time)."""
    return record["step"]["median_ms"] if key == "step_ms" else record.get(key)


def ratios(numerator: dict, denominator: dict) -> dict[str, float | None]:
    """`numerator / denominator` for every figure both records have."""
    out = {}
    for key, _ in RATIO_KEYS:
        a, b = figure(numerator, key), figure(denominator, key)
        out[key] = None if a is None or b in (None, 0) else a / b
    return out


# Our record's figure for each of Table 8's columns (its GFLOPs are multiply-adds).
TABLE8_FIGURES = (("params_m", "params_m"), ("forward_gmacs", "gflops"),
                  ("inference_ms", "inference_ms"))
TABLE8_NAMES = {"geminifusion": "GeminiFusion", "tokenfusion": "TokenFusion"}


# Table 8's columns as keys of our ratios (a ratio of multiply-adds is one of FLOPs).
TABLE8_RATIO_KEYS = (("params_m", "params_m"), ("forward_gflops", "gflops"),
                     ("inference_ms", "inference_ms"))


def table8_ratios(table8: dict) -> dict:
    """The paper's own ratios, MANGO over each method of Table 8, keyed like ours."""
    return {f"mango / {name}": {ours: table8["MANGO"][its] / table8[paper][its]
                                for ours, its in TABLE8_RATIO_KEYS}
            for name, paper in TABLE8_NAMES.items()}


def bar(name: str, value: float | None, target: float, *, at_most: bool = False,
        note: str = "") -> dict:
    """One figure of the issue against its target (`at_most`: the value must not exceed it)."""
    met = None if value is None else (value <= target if at_most else value >= target)
    return {"name": name, "value": value, "target": ("<= " if at_most else ">= ") + f"{target}",
            "met": met, "note": note}


def fmt(value, digits: int = 3) -> str:
    """A table cell: 3 significant digits, thousands separated, "-" for a missing figure."""
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, int):
        return f"{value:,}"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}g}"


def table(header: list[str], rows: list[list]) -> str:
    """A plain-text table: first column left-aligned, the rest right-aligned."""
    cells = [[str(h) for h in header]] + [[r[0]] + [fmt(v) for v in r[1:]] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = []
    for n, row in enumerate(cells):
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                               for i, (c, w) in enumerate(zip(row, widths, strict=True))))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.integer, np.floating, np.bool_)):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_json(path: str, results: dict) -> None:
    """Writes `results` atomically (a reader never sees half a file); NumPy scalars become
    numbers and non-finite floats become null, so the file is strict JSON."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=folder, suffix=".tmp", delete=False) as f:
        json.dump(_jsonable(results), f, indent=2, allow_nan=False)
        f.write("\n")
    os.replace(f.name, path)


def plot_sweep(points: list[dict], path: str, title: str) -> None:
    """Step time and peak memory against tokens per modality, one line per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tokens = [p["tokens_per_modality"] for p in points]
    models = [k for k in points[0] if k != "tokens_per_modality"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for name in models:
        axes[0].plot(tokens, [p[name]["step"]["median_ms"] for p in points], marker="o",
                     label=name)
        axes[1].plot(tokens, [p[name]["peak_mib"] for p in points], marker="o", label=name)
    for ax, ylabel in zip(axes, ("train step, median (ms)", "peak memory (MiB)"), strict=True):
        ax.set(yscale="log", xlabel="tokens per modality N", ylabel=ylabel)
        ax.set_xscale("log", base=2)
        ax.set_xticks(tokens, [str(t) for t in tokens])
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.grid(alpha=0.3, which="both")
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
