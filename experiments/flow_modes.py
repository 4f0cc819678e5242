r"""G's train step in its four execution modes: unrolled or scanned blocks, with or without remat.

    python -m experiments.flow_modes                                   # experiments/mfeat.py's G
    python -m experiments.flow_modes --dim=384 --heads=8 --tokens=256 --blocks=12 --batch=2 \
        --coupling_hidden=512 --rounds=3                               # the paper_nyudv2 preset's

`flow.scan` runs G's repeated blocks (pairs of blocks, as the coupling's parity alternates) as
one `jax.lax.scan`, so XLA compiles one body instead of L; `flow.remat` recomputes each block in
the backward pass. Both keep G's values. For each mode this jits `value_and_grad` of
`sum(z²) + sum(logdet)` over G's parameters and input `[B, 2·tokens, D]` and prints the compile
time, the median step time (all modes timed in turn) and XLA's peak memory. FLOPs are the
unrolled program's: XLA's cost analysis counts a loop body once.
"""

from __future__ import annotations

import jax
from absl import flags
from flax import nnx

from experiments import cli
from mango_jax import flows
from mango_jax.bench import report, subjects
from mango_jax.bench.timing import load_average, round_robin

DIM = flags.DEFINE_integer("dim", 64, "Width D.")
HEADS = flags.DEFINE_integer("heads", 4, "Attention heads.")
TOKENS = flags.DEFINE_integer("tokens", 8, "Tokens per modality.")
BLOCKS = flags.DEFINE_integer("blocks", 4, "Blocks of G.")
PATTERN = flags.DEFINE_list("pattern", None, "Layers of each block (flow.block_pattern), "
                            "default the paper's.")
BATCH = flags.DEFINE_integer("batch", 64, "Batch size.")
HIDDEN = flags.DEFINE_integer("coupling_hidden", 128, "Hidden width of the coupling layers.")
ROUNDS = flags.DEFINE_integer("rounds", 20, "Timed steps per mode (median of these).")
WARMUP = flags.DEFINE_integer("warmup", 3, "Untimed steps before them.")

MODES = {"unrolled": (False, False), "unrolled + remat": (False, True),
         "scan": (True, False), "scan + remat": (True, True)}


def train_step(scan: bool, remat: bool, x: jax.Array):
    config = flows.default_config()
    config.update(dim=DIM.value, num_heads=HEADS.value, num_blocks=BLOCKS.value,
                  tokens_per_modality=(TOKENS.value, TOKENS.value),
                  coupling_hidden=HIDDEN.value, scan=scan, remat=remat)
    if PATTERN.value:
        config.block_pattern = tuple(PATTERN.value)
    return subjects.module_train_step(flows.build(config, rngs=nnx.Rngs(0)),
                                      lambda g, x: g(x), x)


def main(argv):
    del argv
    x = jax.random.normal(jax.random.key(0), (BATCH.value, 2 * TOKENS.value, DIM.value))
    built = {name: train_step(*mode, x) for name, mode in MODES.items()}
    load = load_average()
    times = round_robin({name: run for name, (_, run) in built.items()}, rounds=ROUNDS.value,
                        warmup=WARMUP.value)
    flops = {remat: built[name][0].flops for name, (scan, remat) in MODES.items() if not scan}
    print(f"G's train step: D={DIM.value}, {HEADS.value} heads, 2 x {TOKENS.value} tokens, "
          f"{BLOCKS.value} blocks{' of ' + ', '.join(PATTERN.value) if PATTERN.value else ''}, "
          f"batch {BATCH.value}, {jax.devices()[0].platform}, "
          f"load {load}")
    rows = []
    for name, (_, remat) in MODES.items():
        program = built[name][0]
        ms = 1e3 * times[name].median
        rows.append([name, program.compile_s, ms, flops[remat] / 1e9,
                     flops[remat] / ms / 1e6, program.memory.peak / report.MIB])
    print(report.table(["mode", "compile s", "step ms", "GFLOP", "GFLOP/s", "peak MiB"], rows))


if __name__ == "__main__":
    cli.run(main)
