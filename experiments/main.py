"""Train and evaluate a config.

    python -m experiments.main --config=experiments/mfeat.py --workdir=runs/mfeat
    python -m experiments.main --config=experiments/nyudv2.py:flow=glow,blocks=8 \
        --config.optimizer.learning_rate=3e-4 --workdir=runs/nyu_glow8

Resumes from the latest checkpoint in --workdir. With --distributed (or on a TPU pod / SLURM,
where it is detected) every process calls `jax.distributed.initialize()` first.
"""

from __future__ import annotations

import os

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file[:args].",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run folder (checkpoints, logs, results).")
_MODE = flags.DEFINE_enum("mode", "train_and_eval", ["train", "eval", "train_and_eval"],
                          "What to run.")
_DISTRIBUTED = flags.DEFINE_bool("distributed", False,
                                 "Call jax.distributed.initialize() (multi-host).")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in the job.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index.")
flags.mark_flags_as_required(["config"])


def _auto_distributed() -> bool:
    """TPU pod slices and SLURM jobs announce themselves through the environment."""
    return bool(os.environ.get("TPU_WORKER_HOSTNAMES") or
                int(os.environ.get("SLURM_NTASKS", "1")) > 1)


def format_results(results: dict) -> str:
    rows = [(split, metrics) for split, metrics in results.items() if split != "meta"]
    names = sorted({k for _, m in rows for k in m if "/" not in k})
    width = max(len(n) for n in names) + 2
    lines = ["split".ljust(8) + "".join(n.rjust(width) for n in names)]
    for split, metrics in rows:
        lines.append(split.ljust(8) + "".join(
            f"{metrics[n]:.4f}".rjust(width) if n in metrics else "-".rjust(width)
            for n in names))
    return "\n".join(lines)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)
    import jax

    if _DISTRIBUTED.value or _auto_distributed():
        jax.distributed.initialize(coordinator_address=_COORDINATOR.value,
                                   num_processes=_NUM_PROCESSES.value,
                                   process_id=_PROCESS_ID.value)
    from mango_jax.train import loop

    config = _CONFIG.value
    workdir = _WORKDIR.value or os.path.join("runs", config.experiment)
    loop.log(f"Config ({jax.process_count()} process(es), {jax.device_count()} device(s)):\n"
             f"{config}")
    results = loop.run(config, workdir, _MODE.value)
    if results is not None and jax.process_index() == 0:
        print(f"\nResults ({workdir}/results.json):\n{format_results(results)}")


if __name__ == "__main__":
    app.run(main)
