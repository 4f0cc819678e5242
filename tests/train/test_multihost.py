"""Multi-host training on one machine: 2 processes × 4 CPU devices against 1 process × 8.

The two processes join through `jax.distributed.initialize` and exchange data with gloo CPU
collectives, as the hosts of a TPU pod slice or a SLURM job do. They train the demo config
(`experiments/mfeat.py:runlocal,fusion=concat`: MANGO's flows take three times longer to compile
on CPU, and the multi-host path does not depend on the fusion method) for 3 steps, save a
checkpoint, restore it in a fresh `Trainer` and train 3 more steps; the losses
and the eval metrics must be those of one process with 8 devices (trained meanwhile by the test
itself). Then the two processes resume from the one-process checkpoint of step 3: a job restarted
on another number of hosts continues on the same data and losses.

This file is also the worker script: `python test_multihost.py --process_id=...`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from jax.experimental import multihost_utils
from xla_env import devices_flag

from experiments import mfeat
from mango_jax.train import distributed, loop
from mango_jax.train.writers import read_metrics

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STEPS, SAVE_AT = 6, 3
TIMEOUT_S = 300
FUSION = "concat"


def tiny_config(data_dir):
    config = mfeat.get_config(f"runlocal,fusion={FUSION}")
    config.data.data_dir = data_dir
    config.batch_size = 16
    config.eval_batch_size = 48  # 400 val examples: every process pads its last eval batch
    config.num_steps = STEPS
    config.log_every = 1
    config.eval_every = 0
    config.checkpoint_every = SAVE_AT
    config.optimizer.warmup_steps = 2
    return config


def train_losses(workdir):
    return {row["step"]: row["loss"] for row in read_metrics(workdir) if row["split"] == "train"}


def resume_and_finish(config, workdir) -> loop.Trainer:
    """A fresh `Trainer` resumes the checkpoint of SAVE_AT in `workdir` and trains to STEPS."""
    trainer = loop.Trainer(config, workdir)
    if not trainer.resume() or trainer.step != SAVE_AT:
        raise AssertionError(f"resumed at step {trainer.step}, expected {SAVE_AT}")
    trainer.run_until(STEPS)
    trainer.close()
    return trainer


def worker(argv) -> None:
    parser = argparse.ArgumentParser()
    for name in ("process_id", "port"):
        parser.add_argument(f"--{name}", type=int, required=True)
    for name in ("data_dir", "tmp"):
        parser.add_argument(f"--{name}", required=True)
    args = parser.parse_args(argv)
    # Trainers after the first load their compiled steps from this cache instead of compiling.
    jax.config.update("jax_compilation_cache_dir",
                      os.path.join(args.tmp, f"jax_cache_{args.process_id}"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    distributed.initialize(coordinator_address=f"localhost:{args.port}", num_processes=2,
                           process_id=args.process_id, timeout_s=60)
    assert (jax.process_count(), jax.device_count(), jax.local_device_count()) == (2, 8, 4)
    config, tmp = tiny_config(args.data_dir), args.tmp

    trainer = loop.Trainer(config, os.path.join(tmp, "two_processes"))
    trainer.run_until(SAVE_AT)
    trainer.close()
    metrics = resume_and_finish(config, os.path.join(tmp, "two_processes")).evaluate("val")
    with open(os.path.join(tmp, f"process_{args.process_id}.json"), "w") as f:
        json.dump(metrics, f)

    # Resume the one-process run's checkpoint of step 3 once the test has written it.
    deadline = time.monotonic() + TIMEOUT_S
    while not os.path.exists(os.path.join(tmp, "one_process_done")):
        if time.monotonic() > deadline:
            raise TimeoutError("the one-process reference run never finished")
        time.sleep(0.2)
    resumed = os.path.join(tmp, "resumed")
    if args.process_id == 0:
        shutil.copytree(os.path.join(tmp, "one_process", "checkpoints"),
                        os.path.join(resumed, "checkpoints"))
        shutil.rmtree(os.path.join(resumed, "checkpoints", str(STEPS)))
    multihost_utils.sync_global_devices("checkpoint copied")
    resume_and_finish(config, resumed)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def start_workers(tmp_path, data_dir):
    port = free_port()
    env = {**os.environ, "XLA_FLAGS": devices_flag(4),
           "JAX_PLATFORMS": "cpu",
           "PYTHONPATH": os.pathsep.join(filter(None, [ROOT, os.path.join(ROOT, "tests", "data"),
                                                       os.environ.get("PYTHONPATH")]))}
    procs = []
    for i in range(2):
        log = open(tmp_path / f"process_{i}.log", "w")
        procs.append((subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), f"--process_id={i}", f"--port={port}",
             f"--data_dir={data_dir}", f"--tmp={tmp_path}"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT), log))
    return procs


def stop(procs) -> None:
    for proc, log in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        log.close()


def wait_for(procs, tmp_path, deadline: float) -> None:
    """Waits for every worker; a failure or the deadline kills the others and fails the test
    with the workers' output."""
    problem = None
    try:
        while problem is None and any(proc.poll() is None for proc, _ in procs):
            if any(proc.poll() not in (None, 0) for proc, _ in procs):
                problem = "a process failed"
            elif time.monotonic() > deadline:
                problem = f"timed out after {TIMEOUT_S} s"
            else:
                time.sleep(0.2)
    finally:
        stop(procs)
    if problem is None and any(proc.returncode != 0 for proc, _ in procs):
        problem = "a process failed"
    if problem is not None:
        logs = "\n".join(f"--- process {i} (exit {proc.returncode}) ---\n"
                         + (tmp_path / f"process_{i}.log").read_text()[-4000:]
                         for i, (proc, _) in enumerate(procs))
        raise AssertionError(f"two-process training: {problem}\n{logs}")


def test_cluster_detection_and_flag_checks(monkeypatch):
    monkeypatch.setattr(distributed, "on_tpu_vm", lambda: False)  # were the test on a TPU VM
    slurm = {v: "0" for v in distributed.SLURM_VARIABLES} | {"SLURM_STEP_NODELIST": "n[1-2]"}
    assert distributed.detect_cluster({**slurm, "SLURM_NTASKS": "16"}) == "slurm"
    assert distributed.detect_cluster({**slurm, "SLURM_NTASKS": "1"}) is None  # one task
    assert distributed.detect_cluster({"SLURM_NTASKS": "16"}) is None  # sbatch, outside srun
    assert distributed.detect_cluster({"TPU_WORKER_HOSTNAMES": "h0,h1"}) == "tpu"
    # Neither a cluster nor explicit flags: a single-process run, JAX untouched.
    assert distributed.initialize(None, environ={}) is None
    assert distributed.initialize(False, environ={**slurm, "SLURM_NTASKS": "16"}) is None
    with pytest.raises(ValueError, match="also give --num_processes, --process_id"):
        distributed.initialize(None, coordinator_address="h0:1234", environ={})
    with pytest.raises(ValueError, match="--nodistributed"):
        distributed.initialize(False, process_id=1, environ={})


def test_two_processes_train_like_one(mfeat_data_dir, tmp_path):
    assert jax.device_count() == 8, "run with XLA_FLAGS=--xla_force_host_platform_device_count=8"
    deadline = time.monotonic() + TIMEOUT_S
    procs = start_workers(tmp_path, mfeat_data_dir)
    try:
        # The reference, one process with 8 devices, trains while the workers run.
        one = str(tmp_path / "one_process")
        trainer = loop.Trainer(tiny_config(mfeat_data_dir), one)
        trainer.run_until(STEPS)
        one_val = trainer.evaluate("val")
        trainer.close()
        (tmp_path / "one_process_done").touch()
    except BaseException:
        stop(procs)
        raise
    wait_for(procs, tmp_path, deadline)

    expected = train_losses(one)
    assert sorted(expected) == list(range(1, STEPS + 1))
    assert len(set(expected.values())) == STEPS  # the parameters really moved
    two = train_losses(str(tmp_path / "two_processes"))  # process 0's log, across the restart
    assert sorted(two) == sorted(expected)
    np.testing.assert_allclose([two[s] for s in expected], list(expected.values()), rtol=1e-5)
    data_dir = tmp_path / "two_processes" / "checkpoints" / str(SAVE_AT) / "data"
    assert sorted(p.name for p in data_dir.glob("*.json")) == [
        "process_0-of-2.json", "process_1-of-2.json"]
    # Both processes hold the same eval results, those of the 8-device process up to the order
    # of summation (the examples are split differently over the devices).
    vals = [json.loads((tmp_path / f"process_{i}.json").read_text()) for i in range(2)]
    assert vals[0] == vals[1]
    assert vals[0]["accuracy"] == one_val["accuracy"]
    for name, value in one_val.items():
        np.testing.assert_allclose(vals[0][name], value, rtol=1e-4, err_msg=name)
    # The two processes resumed the one-process checkpoint of step 3 and went on identically.
    resumed = train_losses(str(tmp_path / "resumed"))
    assert sorted(resumed) == list(range(SAVE_AT + 1, STEPS + 1))
    np.testing.assert_allclose([resumed[s] for s in sorted(resumed)],
                               [expected[s] for s in sorted(resumed)], rtol=1e-5)


if __name__ == "__main__":
    worker(sys.argv[1:])
