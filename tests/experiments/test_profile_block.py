"""The block profiler runs end to end and reports both programs' time, FLOPs and operations."""

import re
import subprocess
import sys


def test_profile_block_small():
    out = subprocess.run(
        [sys.executable, "-m", "experiments.profile_block", "--dim=16", "--heads=2",
         "--tokens=4", "--steps=2", "--top=3"],
        capture_output=True, text=True, check=True, timeout=600).stdout
    reports = re.findall(r"^(MANGO block|pre-LN transformer layer).*: ([\d.]+) ms per step.*?"
                         r"([\d.e-]+) GFLOP, ([\d.e-]+) GFLOP/s\n  operations: ([\d.]+) ms in "
                         r"(\d+) calls; busy threads \(ms\): [\d.]+", out, flags=re.M)
    assert [r[0] for r in reports] == ["MANGO block", "pre-LN transformer layer"]
    for _, wall, gflop, rate, _, calls in reports:
        assert float(wall) > 0 and float(gflop) > 0 and float(rate) > 0 and int(calls) > 0
    # The MANGO block does more work than one transformer layer of the same width.
    assert float(reports[0][2]) > float(reports[1][2])
    kinds = re.findall(r"^ +[\d.]+ ms +\d+ x  (\S+)$", out, flags=re.M)
    # At most --top kinds per model; a trace of two tiny steps may hold fewer.
    assert 2 <= len(kinds) <= 6 and "ParseArguments" not in kinds


def test_profile_block_pattern():
    out = subprocess.run(
        [sys.executable, "-m", "experiments.profile_block", "--dim=16", "--heads=2",
         "--tokens=4", "--steps=1", "--top=1", "--pattern=lica,coupling"],
        capture_output=True, text=True, check=True, timeout=600).stdout
    assert re.search(r"^MANGO block \(lica, coupling\): [\d.]+ ms per step", out, flags=re.M)
