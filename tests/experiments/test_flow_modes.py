"""The execution-mode comparison runs end to end and reports each mode of G's train step."""

import re
import subprocess
import sys


def test_flow_modes_small():
    out = subprocess.run(
        [sys.executable, "-m", "experiments.flow_modes", "--dim=16", "--heads=2", "--tokens=4",
         "--blocks=4", "--pattern=mmca_ab,lica,coupling", "--batch=4", "--coupling_hidden=16",
         "--rounds=1", "--warmup=0"],
        capture_output=True, text=True, check=True, timeout=600).stdout
    rows = dict(re.findall(r"^(unrolled \+ remat|unrolled|scan \+ remat|scan)  +(.+)$", out,
                           flags=re.M))
    assert list(rows) == ["unrolled", "unrolled + remat", "scan", "scan + remat"]
    figures = {mode: [float(v.replace(",", "")) for v in line.split()]
               for mode, line in rows.items()}
    for compile_s, step_ms, gflop, rate, peak in figures.values():
        assert compile_s > 0 and step_ms > 0 and gflop > 0 and rate > 0 and peak > 0
    # Remat recomputes each block in the backward pass: more FLOPs than the plain step.
    assert figures["unrolled + remat"][2] > figures["unrolled"][2]
