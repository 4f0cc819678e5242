"""Joining a multi-process job through JAX's own runtime (`jax.distributed.initialize`).

Every process of a job runs the same program. JAX finds its peers itself on Cloud TPU VMs
(GCE metadata or GKE's `TPU_WORKER_HOSTNAMES`) and under SLURM (`srun`); anywhere else the
coordinator address, the process count and this process's id are given explicitly. CPU
processes exchange data with gloo collectives, which is how a multi-host job is tested on one
machine.
"""

from __future__ import annotations

import glob
import importlib.util
import os
from collections.abc import Mapping

import jax
import numpy as np
from jax.experimental import multihost_utils

SLURM_VARIABLES = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID",
                   "SLURM_LOCALID")


def on_tpu_vm() -> bool:
    """A Cloud TPU VM: TPU chips attached (`/dev/accel*`, `/dev/vfio/N`) and libtpu installed."""
    chips = glob.glob("/dev/accel*") or [p for p in glob.glob("/dev/vfio/*")
                                        if os.path.basename(p).isdigit()]
    return bool(chips) and importlib.util.find_spec("libtpu") is not None


def detect_cluster(environ: Mapping[str, str] | None = None) -> str | None:
    """'slurm' inside a multi-task `srun` step, 'tpu' on a Cloud TPU VM, else None.

    A single-host TPU VM counts too: `jax.distributed.initialize()` is harmless there and the
    same command then works on every slice size.
    """
    environ = os.environ if environ is None else environ
    if all(v in environ for v in SLURM_VARIABLES) and int(environ["SLURM_NTASKS"]) > 1:
        return "slurm"
    if environ.get("TPU_WORKER_HOSTNAMES") or on_tpu_vm():
        return "tpu"
    return None


def initialize(enable: bool | None = None, *, coordinator_address: str | None = None,
               num_processes: int | None = None, process_id: int | None = None,
               timeout_s: int = 300, environ: Mapping[str, str] | None = None) -> str | None:
    """Joins the job's other processes when there are any; call before any other JAX use.

    Args:
      enable: True: always initialise; False: never (a single-process run); None: when a
        cluster is detected or an explicit coordinator, process count or id is given.
      coordinator_address, num_processes, process_id: explicit setup (all three), for jobs
        that JAX cannot detect; process 0 listens on the coordinator's port.
      timeout_s: how long to wait for every process to join.

    Returns:
      How the job was set up ('slurm', 'tpu', 'explicit'), or None when single-process.
    """
    explicit = {"coordinator_address": coordinator_address, "num_processes": num_processes,
                "process_id": process_id}
    given = sorted(k for k, v in explicit.items() if v is not None)
    if enable is False:
        if given:
            raise ValueError(f"--{', --'.join(given)} given with --nodistributed; drop them or "
                             "the --nodistributed flag.")
        return None
    cluster = detect_cluster(environ)
    if not (enable or given or cluster):
        return None
    if cluster is None and len(given) < 3:
        missing = sorted(set(explicit) - set(given))
        raise ValueError(
            f"multi-process run without a TPU pod or SLURM environment: also give "
            f"--{', --'.join(missing)} (the coordinator host:port, the process count and "
            "this process's id, 0 on the coordinator).")
    # gloo is the default CPU collectives in jax 0.10; explicit for CPU-only multi-process runs.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes, process_id=process_id,
                               initialization_timeout=int(timeout_s))
    return cluster or "explicit"


def _is_key(x) -> bool:
    return hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def place(tree, shardings):
    """`tree` (the same values in every process) laid out with `shardings`, which may span
    processes: each process fills only the shards its own devices hold."""
    if jax.process_count() == 1:
        return jax.device_put(tree, shardings)

    def put(x, sharding):
        if _is_key(x):
            data = put(jax.random.key_data(x), sharding)
            return jax.random.wrap_key_data(data, impl=jax.random.key_impl(x))
        host = np.asarray(x)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree.map(put, tree, shardings)


def host_copy(tree):
    """`tree` with every array that spans other processes gathered onto this host.

    A collective when arrays span processes: every process must call it, in the same order.
    Used where one process alone computes on the model (plots) after multi-process training.
    """
    def fetch(x):
        if not isinstance(x, jax.Array) or x.is_fully_addressable:
            return x
        if _is_key(x):
            data = multihost_utils.process_allgather(jax.random.key_data(x), tiled=True)
            return jax.random.wrap_key_data(np.asarray(data), impl=jax.random.key_impl(x))
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))

    return jax.tree.map(fetch, tree)
