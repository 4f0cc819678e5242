"""Transparent huge pages for the host memory XLA:CPU allocates on every step.

XLA:CPU allocates each execution's temporary buffer afresh. glibc serves a block that large
(over 32 MiB, or 64 MiB from a thread's arena) with its own `mmap` and unmaps it when freed, so
every train step whose temporaries exceed that faults in all of them again, 4 KiB at a time:
at experiments/mfeat.py's size MANGO's step faults 26,760 times (its 104.5 MiB of
temporaries), at the paper's NYUDv2 size about 680,000 times (2.6 GiB). With glibc's tunable
`glibc.malloc.hugetlb=1` malloc asks the kernel for transparent huge pages on such blocks, and
the step faults a few hundred to a few thousand times, 2 MiB each (`python -m
experiments.host_memory_check`: 192 and 2,604 times at those sizes).

The tunable is read when a process starts, so the commands of experiments/ re-execute
themselves with it (`experiments.cli.run`); a script of one's own can call
`reexec_with_huge_pages()` first thing. `MANGO_JAX_HUGE_PAGES=0` leaves the allocator alone.
"""

from __future__ import annotations

import os
import platform
import sys

TUNABLE = "glibc.malloc.hugetlb"
OPT_OUT = "MANGO_JAX_HUGE_PAGES"
_THP_MODE = "/sys/kernel/mm/transparent_hugepage/enabled"


def _glibc_with_hugetlb() -> bool:
    """glibc 2.35 or later, the first with the tunable."""
    name, version = platform.libc_ver()
    if name != "glibc":
        return False
    major, minor = (int(part) for part in version.split(".")[:2])
    return (major, minor) >= (2, 35)


def _huge_pages_enabled() -> bool:
    """The kernel gives transparent huge pages to a process that asks (mode `always` or
    `madvise`, not `never`)."""
    try:
        with open(_THP_MODE) as f:
            return "[never]" not in f.read()
    except OSError:
        return False


def applies(env=os.environ) -> bool:
    """Whether a process started with `env` would gain by the tunable: Linux with glibc ≥ 2.35
    and transparent huge pages on, the tunable not yet in `GLIBC_TUNABLES`, and no opt-out."""
    if env.get(OPT_OUT, "1") == "0" or TUNABLE in env.get("GLIBC_TUNABLES", ""):
        return False
    return sys.platform.startswith("linux") and _glibc_with_hugetlb() and _huge_pages_enabled()


def environment(env=os.environ) -> dict[str, str]:
    """`env` with `glibc.malloc.hugetlb=1` added to the tunables it already has."""
    tunables = [t for t in env.get("GLIBC_TUNABLES", "").split(":") if t]
    return {**env, "GLIBC_TUNABLES": ":".join([*tunables, f"{TUNABLE}=1"])}


def reexec_with_huge_pages() -> None:
    """Replaces this process by itself started with the tunable, when `applies()`: same
    interpreter, arguments and process id. Call it before any work that must not run twice."""
    if applies():
        sys.stdout.flush()
        sys.stderr.flush()
        os.execve(sys.executable, sys.orig_argv, environment())
