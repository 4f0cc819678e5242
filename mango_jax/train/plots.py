"""PNG plots of a run: loss, NLL and metric curves, and ICA attention maps (paper Figure 7)."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from flax import nnx  # noqa: E402

from mango_jax.flows import ICA, LICA  # noqa: E402
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


def attention_maps(model, batch, pattern) -> dict[str, np.ndarray]:
    """The first block's ICA matrix of each partition kind for example 0, head 0: `[n, n]`.

    `pattern` names the block's layers (flow.block_pattern); LICA's map is the attention over
    its mixed tokens. Jitted: the un-jitted walk over a paper-size block is slow.
    """
    graph, state = nnx.split(model)

    def maps_of(state, batch):
        model = nnx.merge(graph, state)
        a, b = model.features(batch)
        x = jnp.concatenate([a, b], axis=1)[:1]
        maps = {}
        for kind, layer in zip(pattern, model.fusion.flow.layers[0].layers, strict=True):
            attn = None
            if isinstance(layer, ICA):
                attn = layer.attention(x[:, np.asarray(layer.idx1)])
            elif isinstance(layer, LICA):
                attn = layer.ica.attention(layer.mix.apply(x)[:, np.asarray(layer.ica.idx1)])
            if attn is not None and kind not in maps:
                maps[kind] = attn[0, 0]
            x = layer(x)[0]
        return maps

    batch = {k: v for k, v in batch.items() if k in model.modalities}
    return {k: np.asarray(v) for k, v in jax.jit(maps_of)(state, batch).items()}


def plot_attention(workdir: str, maps: dict[str, np.ndarray]) -> str | None:
    if not maps:
        return None
    fig, axes = plt.subplots(1, len(maps), figsize=(3 * len(maps), 3.2), squeeze=False)
    for ax, (kind, attn) in zip(axes[0], maps.items(), strict=True):
        image = ax.imshow(attn, cmap="viridis")
        ax.set_title(kind)
        ax.set_xticks([])
        ax.set_yticks([])
        fig.colorbar(image, ax=ax, fraction=0.046)
    fig.suptitle("ICA attention, first block, head 0")
    fig.tight_layout()
    path = os.path.join(workdir, "attention.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
