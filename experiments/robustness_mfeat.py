"""The worked robustness example on mfeat pix + fou: trains the runs, then evaluates them.

    python -m experiments.robustness_mfeat [--root=runs/robustness] [--out=benchmarks]

Trains (one after another, skipping finished runs) MANGO, late fusion, the unimodal models on
each view (uni_a: pix, uni_b: fou) and further baselines at the `experiments/mfeat.py`
defaults, then runs `python -m experiments.robustness` on all of them against the late-fusion
run and writes
`<out>/robustness_mfeat_cpu.json` (the combined result), `.txt` (the table) and
`robustness_mfeat_<modality>.png`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from absl import app, flags

# name -> experiments.main overrides (mfeat.py's `fusion=` and fields).
RUNS = {
    "mango": ["--config=experiments/mfeat.py:fusion=mango"],
    "late": ["--config=experiments/mfeat.py:fusion=late"],
    "uni_a": ["--config=experiments/mfeat.py:fusion=unimodal",
                     "--config.model.fusion.modality=a"],
    "uni_b": ["--config=experiments/mfeat.py:fusion=unimodal",
                     "--config.model.fusion.modality=b"],
    "concat": ["--config=experiments/mfeat.py:fusion=concat"],
    "gmu": ["--config=experiments/mfeat.py:fusion=gmu"],
}


def main(argv) -> None:
    del argv
    root, out = flags.FLAGS.root, flags.FLAGS.out
    for name, args in RUNS.items():
        workdir = os.path.join(root, name)
        if not os.path.isfile(os.path.join(workdir, "results.json")):
            subprocess.run([sys.executable, "-m", "experiments.main", *args,
                            f"--workdir={workdir}"], check=True)
    from experiments import robustness

    combined = os.path.join(root, "combined")
    robustness.run([os.path.join(root, n) for n in RUNS], late=os.path.join(root, "late"),
                   out=combined)
    os.makedirs(out, exist_ok=True)
    shutil.copy(os.path.join(combined, "robustness.json"),
                os.path.join(out, "robustness_mfeat_cpu.json"))
    shutil.copy(os.path.join(combined, "robustness.md"),
                os.path.join(out, "robustness_mfeat_cpu.txt"))
    for m in ("pix", "fou"):
        shutil.copy(os.path.join(combined, f"robustness_{m}.png"),
                    os.path.join(out, f"robustness_mfeat_{m}.png"))


if __name__ == "__main__":
    flags.DEFINE_string("root", "runs/robustness", "Where the runs are trained.")
    flags.DEFINE_string("out", "benchmarks", "Where the result files go.")
    app.run(main)
