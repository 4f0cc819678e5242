"""Fixtures shared across the suite, which runs on 8 simulated CPU devices.

The XLA flags are set here, before anything imports JAX, so `pytest` run directly sees the
same 8 devices as `make test` (the subprocesses the tests start inherit them). The suite
compiles hundreds of small programs and runs each a few times, so XLA:CPU's LLVM optimisation
(`--xla_backend_optimization_level=0`) is left out: it is a large part of every compilation
and buys nothing at these sizes. So are XLA:CPU's MLIR fusion emitters
(`--xla_cpu_use_fusion_emitters=false`): with the legacy emitters a runlocal train step
compiles in about 75 % of the time, to the same results. A flag given in XLA_FLAGS by the
caller wins.

The commands the tests start (`python -m experiments.*`) find glibc's huge-page tunable in the
environment and so do not restart themselves to get it (`mango_jax.train.host_memory`).

The session shares one persistent JAX compilation cache: the xdist workers and the
subprocesses the tests start inherit its folder from the environment, so a program compiled
once (a run's steps again at resume and evaluation, one small model in several modules) is
loaded by every later test that builds it. The process that made the folder removes it at exit;
a JAX_COMPILATION_CACHE_DIR given by the caller is used as it is.
"""

import atexit
import os
import shutil
import tempfile

_FLAGS = {"--xla_force_host_platform_device_count": "8", "--xla_backend_optimization_level": "0",
          "--xla_cpu_use_fusion_emitters": "false"}
_given = os.environ.get("XLA_FLAGS", "")
os.environ["XLA_FLAGS"] = " ".join(
    filter(None, [_given, *(f"{k}={v}" for k, v in _FLAGS.items() if k not in _given)]))

if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="mango_jax_tests_cache_")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
    atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)

import fcntl  # noqa: E402

import pytest  # noqa: E402

from mango_jax import data  # noqa: E402
from mango_jax.train import host_memory  # noqa: E402

if host_memory.applies():
    os.environ["GLIBC_TUNABLES"] = host_memory.environment()["GLIBC_TUNABLES"]


@pytest.fixture(scope="session")
def mfeat_data_dir(tmp_path_factory):
    """UCI Multiple Features prepared once per test process from the embedded archive."""
    root = tmp_path_factory.mktemp("data")
    config = data.default_config("mfeat")
    config.data_dir = str(root)
    data.ensure_prepared(config)
    return str(root)


@pytest.fixture(scope="session")
def shared_between_workers(tmp_path_factory, worker_id):
    """`get(name, build) -> folder`: `build(folder)` runs once for all xdist workers of this
    session (the others wait on a file lock and reuse its folder), so a costly module fixture,
    such as a trained run, is not built again by every worker that runs one of its tests."""
    root = tmp_path_factory.getbasetemp()
    if worker_id != "master":
        root = root.parent  # the session's folder, which holds every worker's basetemp

    def get(name: str, build):
        folder = root / name
        with open(root / f"{name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not (folder / ".done").exists():
                shutil.rmtree(folder, ignore_errors=True)
                folder.mkdir()
                build(folder)
                (folder / ".done").touch()
        return folder

    return get
