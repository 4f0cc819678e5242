"""The compile profile runs end to end and reports each model's step and optimiser update."""

import re
import subprocess
import sys


def test_compile_profile_small(mfeat_data_dir):
    out = subprocess.run([sys.executable, "-m", "experiments.compile_profile",
                          "--config=experiments/mfeat.py:runlocal",
                          f"--config.data.data_dir={mfeat_data_dir}"],
                         capture_output=True, text=True, check=True, timeout=600).stdout
    rows = dict(re.findall(r"^(mango \(scan\)|mango|transformer)  +(.+)$", out, flags=re.M))
    assert list(rows) == ["mango", "mango (scan)", "transformer"]
    figures = {name: [float(v.replace(",", "")) for v in line.split()]
               for name, line in rows.items()}
    for params, arrays, *seconds in figures.values():
        assert params > 0 and arrays > 0 and all(s > 0 for s in seconds)
    # G keeps more parameter arrays per block than a transformer layer has.
    assert figures["mango"][1] > figures["transformer"][1]
