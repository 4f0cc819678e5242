r"""Throughput of the NYUDv2-layout training pipeline (decode + scale/crop/flip + normalise).

Writes NYUDv2 TokenFusion-layout fixtures at the cropped NYU size (default 200 images of
425 x 560: an RGB PNG, a 40-class mask PNG and a 16-bit depth PNG each, with smooth image-like
content so PNG decoding costs what it does on real photos) into a temporary folder, prepares
them with `python -m mango_jax.data.prepare`'s code path, then runs
`make_iterator(cfg, 'train', train=True)` at 256 x 256 with 2 grain workers and prints the
median examples/s over the timed batches after a warm-up.

  python -m experiments.bench_data [--num_images=200] [--batch_size=16] [--num_workers=2]

It also prints the CPU time per example (main process + workers, from /proc), so that a run on a
busy machine still shows what the pipeline costs: with W workers on W free cores the pipeline
sustains about W / (CPU seconds per example) examples/s.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time

import numpy as np
from absl import flags
from PIL import Image

from experiments import cli
from mango_jax import data
from mango_jax.data import nyudv2

FLAGS = flags.FLAGS
flags.DEFINE_integer("num_images", 200, "Training images to write.")
flags.DEFINE_integer("height", 425, "Image height (the cropped NYU size is about 425 x 560).")
flags.DEFINE_integer("width", 560, "Image width.")
flags.DEFINE_integer("image_size", 256, "Training crop.")
flags.DEFINE_integer("batch_size", 16, "Batch size.")
flags.DEFINE_integer("num_workers", 2, "grain worker processes.")
flags.DEFINE_integer("num_threads", 2, "Reading threads per worker.")
flags.DEFINE_integer("warmup_batches", 8, "Batches not timed.")
flags.DEFINE_integer("timed_examples", 480, "Examples timed after warm-up.")
flags.DEFINE_integer(
    "window_examples", 64,
    "Examples per timing window; the median is over windows (a per-batch median would count "
    "batches already waiting in the prefetch buffers).",
)
flags.DEFINE_string("workdir", None, "Where to write fixtures (default: a temporary folder).")


def _image_like(rng: np.random.Generator, h: int, w: int, k: int) -> np.ndarray:
    """Smooth gradients, a few flat rectangles, mild noise: compresses like a photo."""
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    img = np.stack([
        128 + 100 * np.sin(xx / (37 + k % 11) + k),
        128 + 100 * np.cos(yy / (29 + k % 7)),
        128 + 90 * np.sin((xx + yy) / 53.0),
    ], -1)
    for _ in range(6):
        y0, x0 = rng.integers(0, h - 40), rng.integers(0, w - 40)
        img[y0 : y0 + rng.integers(20, 120), x0 : x0 + rng.integers(20, 160)] = rng.integers(
            0, 255, 3
        )
    img += rng.normal(0, 3, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def write_fixtures(root: str, n_train: int, n_test: int, h: int, w: int) -> None:
    rng = np.random.default_rng(0)
    for sub in ("rgb", "masks", "depth"):
        os.makedirs(os.path.join(root, sub), exist_ok=True)
    yy, xx = np.mgrid[:h, :w]
    for split, names in (("train.txt", range(n_train)), ("val.txt", range(n_train,
                                                                           n_train + n_test))):
        lines = []
        for k in names:
            stem = f"{k + 1:06d}.png"
            Image.fromarray(_image_like(rng, h, w, k)).save(os.path.join(root, "rgb", stem))
            mask = ((xx // (30 + k % 20) + yy // 45 + k) % 41).astype(np.uint8)
            mask[mask == 40] = 255
            Image.fromarray(mask).save(os.path.join(root, "masks", stem))
            depth = (800 + 6 * xx + 4 * yy + 200 * np.sin(xx / 40.0 + k)).astype(np.uint16)
            Image.fromarray(depth).save(os.path.join(root, "depth", stem))
            lines.append(f"rgb/{stem}\tmasks/{stem}\tdepth/{stem}\n")
        with open(os.path.join(root, split), "w") as f:
            f.writelines(lines)


def _cpu_seconds() -> float | None:
    """User + system CPU seconds of this process and all its live descendants (Linux /proc)."""
    try:
        tick = os.sysconf("SC_CLK_TCK")
        procs = {}
        for pid in os.listdir("/proc"):
            if pid.isdigit():
                try:
                    with open(f"/proc/{pid}/stat") as f:
                        fields = f.read().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                procs[int(pid)] = (int(fields[1]), int(fields[11]) + int(fields[12]))
        mine, frontier = set(), {os.getpid()}
        while frontier:
            mine |= frontier
            frontier = {p for p, (ppid, _) in procs.items() if ppid in frontier} - mine
        return sum(procs[p][1] for p in mine if p in procs) / tick
    except (OSError, ValueError, IndexError):
        return None


def run(workdir: str) -> float:
    raw = os.path.join(workdir, "raw")
    t0 = time.time()
    if not os.path.isfile(os.path.join(raw, "val.txt")):  # reuse fixtures in --workdir
        write_fixtures(raw, FLAGS.num_images, 4, FLAGS.height, FLAGS.width)
    t1 = time.time()
    nyudv2.SPEC.prepare(data_dir=os.path.join(workdir, "data"), manual_dir=raw)
    t2 = time.time()
    print(f"wrote {FLAGS.num_images} fixtures of {FLAGS.height}x{FLAGS.width} in {t1 - t0:.1f}s,"
          f" prepared in {t2 - t1:.1f}s")
    cfg = data.default_config("nyudv2")
    cfg.data_dir = os.path.join(workdir, "data")
    cfg.image_size = FLAGS.image_size
    cfg.num_threads = FLAGS.num_threads
    it = data.make_iterator(cfg, "train", batch_size=FLAGS.batch_size, train=True, seed=0,
                            num_workers=FLAGS.num_workers)
    try:
        for _ in range(FLAGS.warmup_batches):
            batch = next(it)
        shapes = {k: (v.shape, str(v.dtype)) for k, v in batch.items()}
        rates = []
        seen = 0
        window = max(1, FLAGS.window_examples // FLAGS.batch_size)
        cpu0, wall0 = _cpu_seconds(), time.perf_counter()
        while seen < FLAGS.timed_examples:
            t = time.perf_counter()
            for _ in range(window):
                batch = next(it)
            dt = time.perf_counter() - t
            rates.append(window * FLAGS.batch_size / dt)
            seen += window * FLAGS.batch_size
        cpu1, wall1 = _cpu_seconds(), time.perf_counter()
    finally:
        close = getattr(it, "close", None)
        if close is not None:
            close()
    median = statistics.median(rates)
    mean = seen / (wall1 - wall0)
    print(f"batch: {shapes}")
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = float("nan")
    if cpu0 is not None and cpu1 is not None and cpu1 > cpu0:
        per_ex = (cpu1 - cpu0) / seen
        busy = (cpu1 - cpu0) / (wall1 - wall0)
        print(f"CPU: {per_ex * 1e3:.1f} ms per example (main process + workers), "
              f"{busy:.2f} CPUs busy on average; load average {load:.1f} on {os.cpu_count()} "
              f"CPUs. CPU-bound capacity with {FLAGS.num_workers} workers on "
              f"{FLAGS.num_workers} free cores: ~{FLAGS.num_workers / per_ex:.0f} examples/s")
    print(f"NYUDv2-layout training pipeline at {FLAGS.image_size}x{FLAGS.image_size}, "
          f"{FLAGS.num_workers} workers, batch {FLAGS.batch_size}, {os.cpu_count()} CPUs: "
          f"median {median:.0f} examples/s over {len(rates)} windows ({seen} examples after "
          f"{FLAGS.warmup_batches} warm-up batches; overall mean {mean:.0f} examples/s)")
    return median


def main(argv):
    del argv
    if FLAGS.workdir:
        run(FLAGS.workdir)
    else:
        with tempfile.TemporaryDirectory(prefix="bench_data-") as tmp:
            run(tmp)


if __name__ == "__main__":
    cli.run(main)
    sys.exit(0)
