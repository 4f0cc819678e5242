"""Page faults and time of a train step with and without huge pages for XLA:CPU's buffers.

    python -m experiments.host_memory_check --config=experiments/mfeat.py
    python -m experiments.host_memory_check --preset=paper_nyudv2 --rounds=4

Runs the train steps of MANGO (no remat) and of the joint transformer of the same size in
child processes started alternately with glibc's default allocator (`MANGO_JAX_HUGE_PAGES=0`)
and with `glibc.malloc.hugetlb=1` (`mango_jax.train.host_memory`), `--pairs` times, and prints
per child the temporaries XLA allocates per step, the minor page faults per step and the median
step time. Alternating processes is the fairest comparison a shared host allows: the allocator
is chosen when a process starts.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time

import jax
from absl import app, flags
from ml_collections import config_flags

from experiments import cli
from mango_jax.bench import subjects
from mango_jax.train import host_memory

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file[:args].",
                                          lock_config=False)
_PRESET = flags.DEFINE_enum("preset", None, list(subjects.PRESETS),
                            "Built-in setting, used when --config is not given.")
_PAIRS = flags.DEFINE_integer("pairs", 2, "Child processes of each kind, alternated.")
_ROUNDS = flags.DEFINE_integer("rounds", 8, "Timed steps per subject and child.")
_OUT = flags.DEFINE_string("out", None, "Also write the children's records to this JSON file.")
_CHILD = flags.DEFINE_bool("child", False, "Measure in this process and print one JSON line.")


def _spec() -> subjects.Spec:
    if _CONFIG.value is not None:
        return subjects.from_experiment(_CONFIG.value, "experiment")
    if _PRESET.value is None:
        raise app.UsageError("pass --config=experiments/<name>.py[:args] or --preset=...")
    return subjects.preset(_PRESET.value)


def measure(spec: subjects.Spec, rounds: int) -> dict:
    """`{subject: {temp_mib, faults_per_step, step_ms}}` in this process, one warm-up step
    each and the subjects' steps interleaved."""
    model = spec.model.copy_and_resolve_references()
    model.fusion.flow.remat = False
    steps, record = {}, {}
    for name, config in (("mango", model), ("transformer", subjects.transformer_config(model))):
        subject = subjects.Subject(config, spec.info, spec.modalities, spec.optimizer,
                                   compute_dtype=spec.compute_dtype)
        batch = subject.batch(spec.batch_size)
        program = subject.train_program(batch)
        steps[name] = subject.stepper(program, batch)
        jax.block_until_ready(steps[name]())
        temp = program.compiled.memory_analysis().temp_size_in_bytes
        record[name] = {"temp_mib": temp / 2**20, "faults": [], "seconds": []}
    for _ in range(rounds):
        for name, step in steps.items():
            faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            start = time.perf_counter()
            jax.block_until_ready(step())
            record[name]["seconds"].append(time.perf_counter() - start)
            record[name]["faults"].append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                                          - faults)
    return {name: {"temp_mib": r["temp_mib"],
                   "faults_per_step": statistics.median(r["faults"]),
                   "step_ms": statistics.median(r["seconds"]) * 1e3}
            for name, r in record.items()}


def _child_env(huge_pages: bool | None) -> dict[str, str]:
    """This environment without glibc's tunables and the opt-out (None), and with the one or
    the other."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("GLIBC_TUNABLES", host_memory.OPT_OUT)}
    if huge_pages is None:
        return env
    if huge_pages:
        return host_memory.environment(env)
    return {**env, host_memory.OPT_OUT: "0"}


def _child_args(argv: list[str]) -> list[str]:
    """The command's arguments less the parent's own (`--out`, `--pairs`)."""
    args, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg.split("=")[0] in ("--out", "--pairs"):
            skip = "=" not in arg
        else:
            args.append(arg)
    return args


def main(argv):
    del argv
    spec = _spec()
    if _CHILD.value:
        print(json.dumps({"glibc_tunables": os.environ.get("GLIBC_TUNABLES", ""),
                          **measure(spec, _ROUNDS.value)}), flush=True)
        return
    if not host_memory.applies(_child_env(None)):
        raise app.UsageError("this host cannot give glibc's malloc transparent huge pages "
                                 "(needs Linux, glibc >= 2.35 and transparent_hugepage not "
                                 "'never'): there is nothing to compare")
    args = _child_args(sys.argv[1:])
    records = []
    for _ in range(_PAIRS.value):
        for huge_pages in (False, True):
            done = subprocess.run([sys.executable, "-m", "experiments.host_memory_check",
                                   "--child", *args], env=_child_env(huge_pages),
                                  capture_output=True, text=True, check=False)
            if done.returncode:
                sys.exit(done.stderr[-3000:])
            record = json.loads(done.stdout.strip().splitlines()[-1])
            records.append({"huge_pages": huge_pages, **record})
            print(f"huge pages {'on ' if huge_pages else 'off'} "
                  + "  ".join(f"{name} {r['step_ms']:8.1f} ms/step, "
                              f"{r['faults_per_step']:8.0f} faults/step "
                              f"({r['temp_mib']:.0f} MiB temporaries)"
                              for name, r in record.items() if name != "glibc_tunables"),
                  flush=True)
    if _OUT.value:
        with open(_OUT.value, "w") as f:
            json.dump({"command": " ".join(["python -m experiments.host_memory_check",
                                            *sys.argv[1:]]),
                       "cpu_count": os.cpu_count(), "records": records}, f, indent=1)


if __name__ == "__main__":
    cli.run(main)
