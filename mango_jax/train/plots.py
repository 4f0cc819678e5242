"""PNG plots of a run: loss, NLL and metric curves (a fusion method draws its own figures in
`FusionModule.diagnostics`)."""

from __future__ import annotations

import os

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from mango_jax.train.writers import read_metrics  # noqa: E402


def _curves(rows, key):
    out = {}
    for row in rows:
        if key in row:
            out.setdefault(row["split"], []).append((row["step"], row[key]))
    return {split: np.asarray(sorted(points)) for split, points in out.items()}


def _plot(path, title, series, ylabel):
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, points in series.items():
        ax.plot(points[:, 0], points[:, 1], label=label, marker="." if len(points) < 30 else None)
    ax.set(title=title, xlabel="step", ylabel=ylabel)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_curves(workdir: str, metric_names) -> list[str]:
    """loss.png, nll.png (when the run logged an NLL) and one PNG per eval metric."""
    rows = read_metrics(workdir)
    written = []
    for key, name, label in (("loss", "loss.png", "loss"),
                             ("nll_bpd", "nll.png", "NLL (bits/dim)")):
        series = _curves(rows, key)
        if series:
            path = os.path.join(workdir, name)
            _plot(path, label, series, label)
            written.append(path)
    eval_rows = [r for r in rows if r["split"] != "train"]
    for metric in metric_names:
        series = _curves(eval_rows, metric)
        if series:
            path = os.path.join(workdir, f"metric_{metric.replace('/', '_')}.png")
            _plot(path, metric, series, metric)
            written.append(path)
    return written
