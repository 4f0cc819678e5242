"""Huge pages for XLA:CPU's per-step buffers: the commands restart themselves with glibc's
tunable, and with it a step's large temporaries no longer fault in 4 KiB at a time."""

import os
import subprocess
import sys

from mango_jax.train import host_memory

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# A command through `experiments.cli.run` whose one jitted program has large temporaries (a
# cumulative sum, 96 MiB): it prints its process id when it starts (twice if it restarts
# itself), then its tunables, arguments, the 4 KiB pages of its temporaries and the minor page
# faults of one call after a warm-up call.
COMMAND = """
import os, resource, sys
print("pid", os.getpid(), flush=True)
import jax, jax.numpy as jnp
from experiments import cli

def main(argv):
    f = jax.jit(lambda x: jnp.sum(jnp.cumsum(x, axis=0)[-1]))
    x = jnp.ones((4096, 3072), jnp.float32)
    temp = f.lower(x).compile().memory_analysis().temp_size_in_bytes
    f(x).block_until_ready()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    f(x).block_until_ready()
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    print("tunables", os.environ.get("GLIBC_TUNABLES", ""))
    print("argv", " ".join(argv[1:]))
    print("faults", faults)
    print("pages", temp // 4096)

if __name__ == "__main__":
    cli.run(main)
"""


def run_command(tmp_path, **env_changes):
    script = tmp_path / "command.py"
    script.write_text(COMMAND)
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "XLA_FLAGS")}
    env.update(PYTHONPATH=REPO, **env_changes)
    done = subprocess.run([sys.executable, str(script), "--", "a", "b"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [line.split(" ", 1) for line in done.stdout.splitlines()]
    return env, {key: [v for k, v in lines if k == key] for key in ("pid", "tunables", "argv",
                                                                    "faults", "pages")}


def test_a_command_restarts_itself_with_huge_pages_and_stops_faulting(tmp_path):
    env, out = run_command(tmp_path)
    assert out["argv"] == ["a b"]
    if not host_memory.applies(env):  # not Linux with glibc >= 2.35 and huge pages on
        assert len(out["pid"]) == 1 and out["tunables"] == [""]
        return
    assert len(out["pid"]) == 2 and out["pid"][0] == out["pid"][1]  # the same process, again
    assert out["tunables"] == ["glibc.malloc.hugetlb=1"]
    huge, pages = int(out["faults"][0]), int(out["pages"][0])
    assert pages * 4096 > 64 * 2**20  # above what any of glibc's arenas serves without mmap

    _, plain = run_command(tmp_path, MANGO_JAX_HUGE_PAGES="0")
    assert len(plain["pid"]) == 1 and plain["tunables"] == [""]
    faults = int(plain["faults"][0])
    assert faults >= 0.9 * pages, (faults, pages)  # every 4 KiB page of them, every call
    assert huge <= 0.05 * pages, (huge, faults, pages)


def test_tunables_are_added_to_the_callers_and_never_twice():
    env = host_memory.environment({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2", "A": "1"})
    assert env == {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1", "A": "1"}
    assert not host_memory.applies(env)
    assert not host_memory.applies({"MANGO_JAX_HUGE_PAGES": "0"})
