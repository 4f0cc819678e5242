r"""Runs a sweep (experiments/sweeps/) on this machine, a Cloud TPU slice or a SLURM cluster.

    python -m experiments.sweep --sweep=demo --launcher=local                # one after another
    python -m experiments.sweep --sweep=table4 --launcher=local --parallel=2  # two at a time
    python -m experiments.sweep --sweep=table4 --launcher=tpu --tpu_name=my-v4-32 \
        --zone=us-central2-b --root=/mnt/runs --execute
    python -m experiments.sweep --sweep=table6_7 --launcher=slurm --root=/shared/runs \
        --slurm_nodes=2 --slurm_gpus_per_node=8 --slurm_partition=gpu --execute

Trial t trains with `python -m experiments.main <t's flags> --workdir=<root>/<t.name>`;
`--set=key=value` adds `--config.key=value` to every trial (not part of the names: use another
--root for other global settings).

- local: runs the trials here, `--parallel` at a time, each logging to <workdir>/sweep.log;
  trials whose workdir holds results.json are skipped, interrupted ones resume from their last
  checkpoint. Then it writes `experiments.report`'s tables over the sweep into --report_dir.
- tpu: prints the `gcloud compute tpus tpu-vm ssh ... --worker=all --command=...` line of each
  trial (every host of the slice runs the same command; JAX finds its peers itself), or with
  --execute runs them one after another. --root must be on storage every host shares.
- slurm: writes one sbatch script per trial (one task per GPU, the layout JAX's SLURM
  detection expects) and a submit.sh, or with --execute submits them.

Remote commands skip a trial whose results.json exists, so relaunching a sweep is safe.
"""

from __future__ import annotations

import fnmatch
import os
import shlex
import subprocess
import sys
import time

from absl import app, flags

from experiments import cli, report, sweeps
from mango_jax.errors import ConfigError

_SWEEP = flags.DEFINE_string("sweep", None, "A sweep of experiments/sweeps or a .py file.")
_LAUNCHER = flags.DEFINE_enum("launcher", "local", ["local", "tpu", "slurm"], "Where to run.")
_ROOT = flags.DEFINE_string("root", "runs", "Workdirs are <root>/<trial name>.")
_SET = flags.DEFINE_multi_string("set", [], "key=value: --config.key=value for every trial.")
_ONLY = flags.DEFINE_list("only", [], "Run only trials whose name matches one of these globs.")
_PARALLEL = flags.DEFINE_integer("parallel", 1, "local: trials running at the same time.")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "local: print the commands, run nothing.")
_REPORT_DIR = flags.DEFINE_string("report_dir", None,
                                  "local: report folder (default <root>/reports/<sweep>).")
_EXECUTE = flags.DEFINE_bool("execute", False, "tpu / slurm: run gcloud / sbatch too.")
_REPO_DIR = flags.DEFINE_string("repo_dir", None, "tpu / slurm: this repository on the hosts "
                                "(default: ~/mango_jax on TPU VMs, this checkout on SLURM).")
_PYTHON = flags.DEFINE_string("python", "python3", "tpu / slurm: the hosts' Python.")
_SETUP = flags.DEFINE_string("setup", "", "tpu / slurm: shell commands before Python, e.g. "
                             "'source .venv/bin/activate'.")
_TPU_NAME = flags.DEFINE_string("tpu_name", None, "tpu: the TPU VM / pod slice name.")
_ZONE = flags.DEFINE_string("zone", None, "tpu: its zone.")
_PROJECT = flags.DEFINE_string("project", None, "tpu: its project (default: gcloud's).")
_NODES = flags.DEFINE_integer("slurm_nodes", 1, "slurm: nodes per trial.")
_GPUS = flags.DEFINE_integer("slurm_gpus_per_node", 8, "slurm: GPUs (= tasks) per node.")
_CPUS = flags.DEFINE_integer("slurm_cpus_per_task", 8, "slurm: CPUs per task (data loading).")
_TIME = flags.DEFINE_string("slurm_time", "24:00:00", "slurm: time limit per trial.")
_PARTITION = flags.DEFINE_string("slurm_partition", None, "slurm: partition.")
_SBATCH = flags.DEFINE_multi_string("sbatch", [], "slurm: extra #SBATCH options, e.g. "
                                    "--sbatch=--account=abc.")

RESULTS = "results.json"


def workdir(root: str, trial: sweeps.Trial) -> str:
    return os.path.join(root, trial.name)


def set_flags(assignments) -> list[str]:
    """`key=value` -> `--config.key=value`."""
    out = []
    for item in assignments:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set={item!r}: write key=value, e.g. --set=data.data_dir=/data")
        out.append(f"--config.{key.removeprefix('config.')}={value}")
    return out


def main_args(trial: sweeps.Trial, work: str, extra: list[str]) -> list[str]:
    return ["-m", "experiments.main", *trial.flags(), *extra, f"--workdir={work}"]


def select(trials: list[sweeps.Trial], patterns: list[str]) -> list[sweeps.Trial]:
    if not patterns:
        return trials
    chosen = [t for t in trials if any(fnmatch.fnmatch(t.name, p) for p in patterns)]
    if not chosen:
        raise ConfigError(f"--only={','.join(patterns)} matches none of "
                         f"{[t.name for t in trials]}")
    return chosen


def run_local(trials, *, root: str, extra: list[str], parallel: int = 1,
              python: str = sys.executable, log=print) -> dict[str, str]:
    """Runs the unfinished trials, `parallel` at a time; returns {name: 'done' | 'skipped' |
    'failed (exit N)'}. Ctrl-C stops every running trial (they resume when run again)."""
    if parallel < 1:
        raise ConfigError(f"--parallel={parallel} must be at least 1")
    env = dict(os.environ)
    if parallel > 1:  # several trials share the accelerators: no process takes all memory
        env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    status, queue, running = {}, [], []
    for t in trials:
        if os.path.exists(os.path.join(workdir(root, t), RESULTS)):
            status[t.name] = "skipped"
            log(f"[skip] {t.name}: finished ({workdir(root, t)}/{RESULTS})")
        else:
            queue.append(t)
    total = len(queue)
    try:
        while queue or running:
            while queue and len(running) < parallel:
                t = queue.pop(0)
                work = os.path.abspath(workdir(root, t))
                os.makedirs(work, exist_ok=True)
                out = open(os.path.join(work, "sweep.log"), "a")
                proc = subprocess.Popen([python, *main_args(t, work, extra)], cwd=sweeps.REPO,
                                        env=env, stdout=out, stderr=subprocess.STDOUT)
                running.append((t, proc, out, time.monotonic()))
                log(f"[start {total - len(queue)}/{total}] {t.name} -> {work}/sweep.log")
            for item in [r for r in running if r[1].poll() is not None]:
                t, proc, out, start = item
                running.remove(item)
                out.close()
                ok = proc.returncode == 0 and os.path.exists(
                    os.path.join(workdir(root, t), RESULTS))
                status[t.name] = "done" if ok else f"failed (exit {proc.returncode})"
                log(f"[{'done' if ok else 'FAIL'}] {t.name}: {status[t.name]} in "
                    f"{time.monotonic() - start:.0f} s")
            time.sleep(0.2)
    finally:
        for _, proc, out, _ in running:
            proc.kill()
            proc.wait()
            out.close()
    return status


def write_report(trials, root: str, out: str) -> str:
    """experiments.report's tables over the sweep's finished trials; the runs table."""
    finished = [workdir(root, t) for t in trials
                if os.path.exists(os.path.join(workdir(root, t), RESULTS))]
    tables = report.write_report(finished, out)
    return report.render.markdown(next(t for t in tables if t.key == "runs"))


def tpu_command(trial: sweeps.Trial, work: str, extra: list[str], *, tpu_name: str, zone: str,
                project: str | None, repo_dir: str, python: str, setup: str) -> list[str]:
    """The gcloud line that runs `trial` on every host of the slice (skipped when finished)."""
    run = shlex.join([python, *main_args(trial, work, extra)])
    remote = " && ".join(filter(None, [f"cd {repo_dir}", setup,
                                       f"(test -f {shlex.quote(work)}/{RESULTS} || {run})"]))
    return ["gcloud", "compute", "tpus", "tpu-vm", "ssh", tpu_name, f"--zone={zone}",
            *([f"--project={project}"] if project else []), "--worker=all",
            f"--command={remote}"]


def sbatch_script(trial: sweeps.Trial, work: str, extra: list[str], *, job: str, log: str,
                  repo_dir: str, python: str, setup: str, nodes: int, gpus_per_node: int,
                  cpus_per_task: int, time_limit: str, partition: str | None,
                  sbatch: list[str]) -> str:
    """One task per GPU: JAX's SLURM detection gives task i the GPU of its local rank."""
    options = [f"--job-name={job}", f"--nodes={nodes}", f"--ntasks-per-node={gpus_per_node}",
               f"--gpus-per-node={gpus_per_node}", f"--cpus-per-task={cpus_per_task}",
               f"--time={time_limit}", f"--output={log}",
               *([f"--partition={partition}"] if partition else []), *sbatch]
    lines = ["#!/bin/bash", *(f"#SBATCH {o}" for o in options), "set -euo pipefail",
             f"cd {repo_dir}", *([setup] if setup else []),
             f"if [ -f {shlex.quote(work)}/{RESULTS} ]; then echo 'finished already'; exit 0; fi",
             "srun " + shlex.join([python, *main_args(trial, work, extra)])]
    return "\n".join(lines) + "\n"


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    sweep_name = os.path.splitext(os.path.basename(_SWEEP.value))[0]
    trials = select(sweeps.load(_SWEEP.value), _ONLY.value)
    sweeps.check(trials)
    extra, root = set_flags(_SET.value), _ROOT.value
    if _LAUNCHER.value == "local":
        if _DRY_RUN.value:
            for t in trials:
                print(shlex.join([sys.executable, *main_args(t, workdir(root, t), extra)]))
            return
        status = run_local(trials, root=root, extra=extra, parallel=_PARALLEL.value)
        out = _REPORT_DIR.value or os.path.join(root, "reports", sweep_name)
        print(f"\n{write_report(trials, root, out)}\nReport: {out}/report.md")
        failed = {n: s for n, s in status.items() if s.startswith("failed")}
        if failed:
            sys.exit("failed trials (see <workdir>/sweep.log): " + ", ".join(
                f"{n} {s}" for n, s in failed.items()))
        return
    repo_dir = _REPO_DIR.value or ("~/mango_jax" if _LAUNCHER.value == "tpu" else sweeps.REPO)
    if _LAUNCHER.value == "slurm":
        root = os.path.abspath(root)  # sbatch runs the scripts from other folders
    workdirs = ",".join(workdir(root, t) for t in trials)
    if _LAUNCHER.value == "tpu":
        if not (_TPU_NAME.value and _ZONE.value):
            raise app.UsageError("--launcher=tpu needs --tpu_name and --zone")
        if not os.path.isabs(root):
            print(f"note: --root={root} is relative to {repo_dir} on each host; a multi-host "
                  "slice needs a folder every host shares (a gcsfuse or NFS mount)",
                  file=sys.stderr)
        for t in trials:
            command = tpu_command(t, workdir(root, t), extra, tpu_name=_TPU_NAME.value,
                                  zone=_ZONE.value, project=_PROJECT.value, repo_dir=repo_dir,
                                  python=_PYTHON.value, setup=_SETUP.value)
            print(shlex.join(command), flush=True)
            if _EXECUTE.value:
                subprocess.run(command, check=True)
    else:
        folder = os.path.join(root, "slurm", sweep_name)
        os.makedirs(folder, exist_ok=True)
        scripts = []
        for t in trials:
            path = os.path.join(folder, f"{t.name}.sbatch")
            with open(path, "w") as f:
                f.write(sbatch_script(
                    t, workdir(root, t), extra, job=f"{sweep_name}-{t.name}"[:120],
                    log=os.path.join(folder, f"{t.name}-%j.out"), repo_dir=repo_dir,
                    python=_PYTHON.value, setup=_SETUP.value, nodes=_NODES.value,
                    gpus_per_node=_GPUS.value, cpus_per_task=_CPUS.value,
                    time_limit=_TIME.value, partition=_PARTITION.value, sbatch=_SBATCH.value))
            scripts.append(path)
        with open(os.path.join(folder, "submit.sh"), "w") as f:
            f.write("#!/bin/bash\nset -e\n" + "".join(f"sbatch {shlex.quote(p)}\n"
                                                      for p in scripts))
        print(f"wrote {len(scripts)} sbatch scripts and submit.sh to {folder}")
        if _EXECUTE.value:
            for path in scripts:
                subprocess.run(["sbatch", path], check=True)
    print(f"When the trials finish: python -m experiments.report --workdirs={workdirs} "
          f"--out={os.path.join(root, 'reports', sweep_name)}")


if __name__ == "__main__":
    # Required only when run: a test importing this module parses the global flags too.
    flags.mark_flags_as_required(["sweep"])
    cli.run(main)
