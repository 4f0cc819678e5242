"""`python -m experiments.host_memory_check`: alternating child processes without and with
huge pages, each measuring MANGO's and the transformer's train steps."""

import json
import os
import subprocess
import sys

from mango_jax.train import host_memory

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_command_alternates_the_allocators_and_records_both_models(mfeat_data_dir, tmp_path):
    out = tmp_path / "check.json"
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    done = subprocess.run(
        [sys.executable, "-m", "experiments.host_memory_check",
         "--config=experiments/mfeat.py:runlocal", f"--config.data.data_dir={mfeat_data_dir}",
         "--pairs=1", "--rounds=1", "--out", str(out)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False)
    if not host_memory.applies(env):
        assert done.returncode == 2 and "cannot give glibc's malloc" in done.stderr
        return
    assert done.returncode == 0, done.stderr[-3000:]
    records = json.loads(out.read_text())["records"]
    assert [r["huge_pages"] for r in records] == [False, True]
    assert [r["glibc_tunables"] for r in records] == ["", "glibc.malloc.hugetlb=1"]
    for record in records:
        for name in ("mango", "transformer"):
            assert record[name]["temp_mib"] > 0 and record[name]["step_ms"] > 0
            assert record[name]["faults_per_step"] >= 0
    assert [line.split()[:3] for line in done.stdout.splitlines()] == [
        ["huge", "pages", "off"], ["huge", "pages", "on"]]
