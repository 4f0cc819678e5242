r"""Where one flow block's train step spends its time, beside one transformer layer's.

    python -m experiments.profile_block [--dim=384] [--heads=8] [--tokens=256] [--batch=2]
                                        [--pattern=lica,lica] [--coupling_hidden=512]
    python -m experiments.profile_block --dim=64 --heads=4 --tokens=8 --batch=64 \
        --coupling_hidden=128                                # experiments/mfeat.py's size

Builds one MANGO block (the default pattern) and one pre-LN transformer layer of the same width,
jits `value_and_grad` of each over its parameters and input `[B, 2·tokens, D]`, and traces
`--steps` calls with `jax.profiler`. It prints, per program: the median wall time, XLA's FLOPs
and FLOP/s, then the time the traced XLA:CPU operations took, summed by kind (`ynn_fusion`:
YNNPACK library fusions, `triangular_solve`, XLA's own loop fusions, ...) with their count per
step and the busy time of each thread. With several threads busy at once the operation times
add up to more than the wall time. This is the measurement behind issue #6's note on why
MANGO's train step reaches a lower FLOP/s than the transformer's at the paper's size.
"""

from __future__ import annotations

import collections
import glob
import gzip
import json
import re
import statistics
import tempfile
import time

import jax
import jax.numpy as jnp
from absl import flags
from flax import nnx

from experiments import cli
from mango_jax import flows
from mango_jax.bench import subjects
from mango_jax.nn import TransformerBlock

DIM = flags.DEFINE_integer("dim", 384, "Width D (the paper_nyudv2 preset's).")
HEADS = flags.DEFINE_integer("heads", 8, "Attention heads.")
TOKENS = flags.DEFINE_integer("tokens", 256, "Tokens per modality.")
PATTERN = flags.DEFINE_list("pattern", None, "Layers of the MANGO block (flow.block_pattern), "
                            "e.g. `lica,lica` to time LICA alone; default: the paper's block.")
BATCH = flags.DEFINE_integer("batch", 2, "Batch size.")
HIDDEN = flags.DEFINE_integer("coupling_hidden", 512, "Hidden width of the coupling layer.")
STEPS = flags.DEFINE_integer("steps", 5, "Traced (and timed) calls after 3 warm-up calls.")
TOP = flags.DEFINE_integer("top", 8, "Operation kinds listed per program.")

_RUNTIME = ("Thunk", "$", "Pjit", "Slinky", "Common", "PjRt", "end: ", "ParseArguments")


def profile(name, program, run, steps: int, top: int) -> None:
    for _ in range(3):
        run()
    times = []
    with tempfile.TemporaryDirectory() as trace_dir:
        jax.profiler.start_trace(trace_dir)
        for _ in range(steps):
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
        jax.profiler.stop_trace()
        (path,) = glob.glob(f"{trace_dir}/**/*.trace.json.gz", recursive=True)
        with gzip.open(path) as f:
            events = json.load(f)["traceEvents"]
    kinds, counts, threads = collections.Counter(), collections.Counter(), collections.Counter()
    for event in events:
        if event.get("ph") != "X" or event["name"].startswith(_RUNTIME):
            continue
        kind = re.sub(r"[.\d]+$", "", event["name"])
        kinds[kind] += event["dur"] / 1e3 / steps
        counts[kind] += 1 / steps
        threads[event["tid"]] += event["dur"] / 1e3 / steps
    wall = statistics.median(times) * 1e3
    print(f"\n{name}: {wall:.1f} ms per step (median of {steps}, traced), "
          f"{program.flops / 1e9:.3g} GFLOP, {program.flops / wall / 1e6:.3g} GFLOP/s")
    total = sum(threads.values())
    busy = sorted((v for v in threads.values() if v >= 0.01 * total), reverse=True)
    print(f"  operations: {sum(kinds.values()):.1f} ms in {round(sum(counts.values()))} calls; "
          f"busy threads (ms): {', '.join(f'{v:.3g}' for v in busy)}")
    for kind, ms in kinds.most_common(top):
        print(f"  {ms:8.1f} ms  {round(counts[kind]):5d} x  {kind}")


def main(argv):
    del argv
    dim, heads, tokens = DIM.value, HEADS.value, TOKENS.value
    x = jax.random.normal(jax.random.key(0), (BATCH.value, 2 * tokens, dim))
    config = flows.default_config()
    config.update(dim=dim, num_heads=heads, tokens_per_modality=(tokens, tokens), num_blocks=12,
                  coupling_hidden=HIDDEN.value)
    if PATTERN.value:
        config.block_pattern = tuple(PATTERN.value)
    block = flows.build(config, rngs=nnx.Rngs(0)).children()[0]
    layer = TransformerBlock(dim, num_heads=heads, mlp_ratio=4.0, dropout=0.0, rngs=nnx.Rngs(0))
    print(f"train step of one block, D={dim}, {heads} heads, 2 x {tokens} tokens, "
          f"batch {BATCH.value}, {jax.devices()[0].platform}")
    profile("MANGO block (" + ", ".join(config.block_pattern) + ")",
            *subjects.module_train_step(block, lambda m, x: m(x), x), STEPS.value, TOP.value)
    profile("pre-LN transformer layer (MLP ratio 4)",
            *subjects.module_train_step(layer, lambda m, x: (m(x), jnp.zeros(x.shape[0])), x),
            STEPS.value, TOP.value)


if __name__ == "__main__":
    cli.run(main)
