"""Run outputs: `metrics.jsonl`, TensorBoard events (tensorboardX, no TensorFlow), progress."""

from __future__ import annotations

import json
import math
import os
import sys
import time

from tensorboardX import SummaryWriter


class MetricWriter:
    """Appends `{"step", "split", metric: value}` lines to metrics.jsonl and TensorBoard.

    Only the process that is told `active` (process 0) writes anything.
    """

    def __init__(self, workdir: str, *, active: bool = True):
        self.active = active
        if active:
            self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a")
            self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

    def write(self, step: int, split: str, metrics: dict[str, float]) -> None:
        if not self.active:
            return
        row = {"step": int(step), "split": split,
               **{k: float(v) for k, v in sorted(metrics.items())}}
        self._jsonl.write(json.dumps(row) + "\n")
        self._jsonl.flush()
        for key, value in metrics.items():
            if math.isfinite(float(value)):
                self._tb.add_scalar(f"{split}/{key}", float(value), int(step))
        self._tb.flush()

    def close(self) -> None:
        if self.active:
            self._jsonl.close()
            self._tb.close()


def read_metrics(workdir: str) -> list[dict]:
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def _clock(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Progress:
    """A one-line bar with ETA and examples/s, printed at each logging step."""

    def __init__(self, total_steps: int, global_batch: int, start_step: int, *, active: bool,
                 width: int = 24, stream=None):
        self.total, self.batch, self.active, self.width = total_steps, global_batch, active, width
        self.stream = stream or sys.stdout  # the stdout of now, not of when this was imported
        self._t0, self._s0 = time.perf_counter(), start_step
        self._last_t, self._last_s = self._t0, start_step

    def update(self, step: int, logs: dict[str, float]) -> None:
        now = time.perf_counter()
        rate = (step - self._last_s) * self.batch / max(now - self._last_t, 1e-9)
        per_step = (now - self._t0) / max(step - self._s0, 1)
        self._last_t, self._last_s = now, step
        if not self.active:
            return
        done = int(self.width * step / max(self.total, 1))
        shown = "  ".join(f"{k} {logs[k]:.4f}" for k in ("loss", "task_loss", "nll_bpd")
                          if k in logs)
        self.stream.write(f"[{'#' * done}{'.' * (self.width - done)}] {step}/{self.total}  "
                          f"{shown}  {rate:,.0f} ex/s  ETA {_clock(per_step * (self.total - step))}"
                          "\n")
        self.stream.flush()
