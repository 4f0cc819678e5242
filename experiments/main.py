"""Train and evaluate a config.

    python -m experiments.main --config=experiments/mfeat.py --workdir=runs/mfeat
    python -m experiments.main --config=experiments/nyudv2.py:flow=glow,blocks=8 \
        --config.optimizer.learning_rate=3e-4 --workdir=runs/nyu_glow8

Resumes from the latest checkpoint in --workdir. A multi-process job (a TPU pod slice, a SLURM
`srun` step, several hosts named explicitly) runs the same command in every process, and each
calls `jax.distributed.initialize()` first. TPU VMs and SLURM are detected; elsewhere add
`--coordinator_address=host0:1234 --num_processes=2 --process_id=0` (1 on the other host).
See README.md, "Multiple devices and TPU pods".
"""

from __future__ import annotations

import os

from absl import app, flags, logging
from ml_collections import config_flags

from experiments import cli
from experiments.common import check_data, method_configs, use_pretrained
from mango_jax import fusion, model
from mango_jax.errors import ConfigError
from mango_jax.results import Results

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file[:args].",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run folder (checkpoints, logs, results).")
_MODE = flags.DEFINE_enum("mode", "train_and_eval", ["train", "eval", "train_and_eval"],
                          "What to run.")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", None, "Multi-process job: call jax.distributed.initialize(). Default: when a "
    "TPU VM or a multi-task SLURM step is detected or --coordinator_address etc. are given; "
    "--nodistributed: never.")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None,
                                   "host:port of process 0 (outside TPU VMs and SLURM).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in the job.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index (0: coordinator).")
_DISTRIBUTED_TIMEOUT = flags.DEFINE_integer("distributed_timeout", 300,
                                            "Seconds to wait for every process to join.")
flags.mark_flags_as_required(["config"])


def format_comparison(all_results: dict[str, Results], split: str = "test") -> str:
    """One row per method: the split's task metrics (those every method reports; a method's own
    diagnostics stay in its results.json), parameters and training time."""
    reported = [{k for k in r.splits[split] if "/" not in k and "loss" not in k and k != "nll_bpd"}
                for r in all_results.values()]
    names = sorted(set.intersection(*reported))
    widths = [max(12, len(n) + 2) for n in names]
    header = f"{'method':<16}" + "".join(f"{n:>{w}}" for n, w in zip(names, widths)) + \
        f"{'params':>12}{'train s':>10}"
    lines = [f"{split} split", header]
    for method, results in all_results.items():
        lines.append(f"{method:<16}" + "".join(f"{results.splits[split][n]:>{w}.4f}"
                                               for n, w in zip(names, widths))
                     + f"{results.params:>12,}{results.train_time_s or 0:>10.1f}")
    return "\n".join(lines)


def format_results(results: Results) -> str:
    rows = list(results.splits.items())
    names = sorted({k for _, m in rows for k in m if "/" not in k})
    width = max(len(n) for n in names) + 2
    lines = ["split".ljust(8) + "".join(n.rjust(width) for n in names)]
    for split, metrics in rows:
        lines.append(split.ljust(8) + "".join(
            f"{metrics[n]:.4f}".rjust(width) if n in metrics else "-".rjust(width)
            for n in names))
    return "\n".join(lines)


def finalize(config, info) -> None:
    """Fills in the fields the model derives, so that the printed and saved config is the model
    that runs, and refuses a model that cannot be built (ConfigError).

    Filled: `num_steps` (0: from num_epochs), `model.tokens_per_modality` (unset: the encoders'
    natural count where both modalities give the same), and the fusion method's derived
    fields (`FusionModule.resolve`, e.g. MANGO's `flow.dim`).
    """
    from mango_jax.train import loop

    modalities = tuple(config.data.modalities)
    net = config.model
    if net.fusion.name not in fusion.NAMES:
        raise ConfigError(f"model.fusion.name={net.fusion.name!r}; valid: "
                          f"{', '.join(fusion.NAMES)}")
    for m in modalities:
        length, kind = info.modality_shapes[m][0], info.modality_kinds[m]
        if (kind == "tokens" and not net.encoder.pretrained.get(m)
                and length > net.encoder.text_max_len):
            raise ConfigError(f"{m}: texts of {length} tokens exceed model.encoder.text_max_len="
                              f"{net.encoder.text_max_len}; raise it or lower "
                              "data.max_text_len")
    tokens = model.token_counts(net, info, modalities)
    if net.tokens_per_modality is None and tokens[0] == tokens[1]:
        net.tokens_per_modality = tokens[0]
    fusion.REGISTRY[net.fusion.name].resolve(net.fusion, dim=net.dim, tokens=tuple(tokens))
    config.num_steps = loop.total_steps(config, info)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)
    import jax

    from mango_jax.train import distributed

    distributed.initialize(_DISTRIBUTED.value, coordinator_address=_COORDINATOR.value,
                           num_processes=_NUM_PROCESSES.value, process_id=_PROCESS_ID.value,
                           timeout_s=_DISTRIBUTED_TIMEOUT.value)
    from mango_jax import data
    from mango_jax.train import loop

    config = _CONFIG.value
    workdir = _WORKDIR.value or os.path.join("runs", config.experiment)
    methods = method_configs(config)
    for method in methods.values():
        use_pretrained(method)
    check_data(config.data)
    loop.prepare_data(config.data)
    info = data.dataset_info(config.data)
    for method in methods.values():
        finalize(method, info)
    loop.log(f"{jax.process_count()} process(es), {jax.device_count()} device(s)")
    all_results = {}
    for name, method in methods.items():
        method_dir = os.path.join(workdir, name) if len(methods) > 1 else workdir
        loop.log(f"\n=== {name} -> {method_dir}\nConfig ({method_dir}/config.json):\n{method}")
        results = loop.run(method, method_dir, _MODE.value)
        if results is not None:
            all_results[name] = results
            loop.log(f"\nResults ({method_dir}/results.json):\n{format_results(results)}")
    if len(all_results) > 1 and jax.process_index() == 0:
        table = format_comparison(all_results)
        with open(os.path.join(workdir, "comparison.txt"), "w") as f:
            f.write(table + "\n")
        print(f"\nComparison ({workdir}/comparison.txt):\n{table}")


if __name__ == "__main__":
    cli.run(main)
