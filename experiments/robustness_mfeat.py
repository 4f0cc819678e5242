"""The worked robustness example on mfeat pix + fou: trains the runs, then evaluates them.

    python -m experiments.robustness_mfeat [--root=runs/robustness] [--out=benchmarks]

Trains (one after another, skipping finished runs) every fusion method of the registry at the
`experiments/mfeat.py` defaults (`runs()`: the unimodal model once per view, MANGO and late
fusion also with modality dropout), then runs `python -m experiments.robustness` on all of them
against the late-fusion run and writes `<out>/robustness_mfeat_cpu.json` (the combined
result), `.txt` (the table) and `robustness_mfeat_<modality>.png`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from absl import flags

from experiments import cli
from mango_jax.fusion import NAMES

# Modality dropout's q for the `*_mdrop` runs: half the training examples keep both views and a
# quarter train each single-view path (mfeat has 1,200 train examples, so 300 per view per epoch);
# clean accuracy has room, since pix alone reaches 0.98 here.
MODALITY_DROPOUT = 0.5


def runs() -> dict[str, list[str]]:
    """name -> experiments.main overrides: MANGO and late fusion, each also with modality
    dropout (`*_mdrop`), the unimodal model on each view (uni_a = pix, uni_b = fou), then every
    other method of the fusion registry."""
    def fusion(name, *fields):
        return [f"--config=experiments/mfeat.py:fusion={name}", *fields]

    dropout = f"--config.model.modality_dropout={MODALITY_DROPOUT}"
    out = {"mango": fusion("mango"), "late": fusion("late"),
           "mango_mdrop": fusion("mango", dropout), "late_mdrop": fusion("late", dropout),
           "uni_a": fusion("unimodal", "--config.model.fusion.modality=a"),
           "uni_b": fusion("unimodal", "--config.model.fusion.modality=b")}
    for name in NAMES:
        if name not in ("mango", "late", "unimodal"):
            out[name] = fusion(name)
    return out


def train(root: str) -> dict[str, list[str]]:
    """Trains every run of `runs()` under `root` that has no results.json yet."""
    todo = runs()
    for name, args in todo.items():
        workdir = os.path.join(root, name)
        if not os.path.isfile(os.path.join(workdir, "results.json")):
            subprocess.run([sys.executable, "-m", "experiments.main", *args,
                            f"--workdir={workdir}"], check=True)
    return todo


def main(argv) -> None:
    del argv
    root, out = flags.FLAGS.root, flags.FLAGS.out
    names = train(root)
    from experiments import robustness

    combined = os.path.join(root, "combined")
    robustness.run([os.path.join(root, n) for n in names], late=os.path.join(root, "late"),
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
    cli.run(main)
