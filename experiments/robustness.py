"""Robustness to corrupted and missing modalities of trained runs (`mango_jax.robustness`).

    python -m experiments.robustness --workdirs=runs/mfeat
    python -m experiments.robustness --workdirs='runs/rob/*' --late=runs/rob/late --out=report/

Each run gets `robustness.json` (versioned) and `robustness_<modality>.png` beside its
`results.json`. Effective robustness is measured against `--late` or, when not given, a run of
the list whose fusion is 'late'; without one it is left out with a note. With several runs,
`--out` also receives the combined `robustness.json`, `robustness.md` (the table, scores raw and
max-min normalised across the runs) and the curves of all runs per modality.
"""

from __future__ import annotations

import json
import os
import time

from absl import flags

import mango_jax
from experiments import cli
from experiments.report.load import expand
from mango_jax import robustness

FILE = "robustness.json"


def define_flags(flag_values=flags.FLAGS) -> None:
    flags.DEFINE_list("workdirs", None, "Workdirs or glob patterns, comma-separated.",
                      flag_values=flag_values)
    flags.DEFINE_string("late", None, "A late-fusion run of the same data (effective "
                        "robustness); default: a run of --workdirs whose fusion is 'late'.",
                        flag_values=flag_values)
    flags.DEFINE_string("out", None, "Folder for the combined table of several runs.",
                        flag_values=flag_values)
    flags.DEFINE_string("checkpoint", "best", "'best' or 'latest'.", flag_values=flag_values)
    flags.DEFINE_string("data_dir", None, "Override the runs' data.data_dir.",
                        flag_values=flag_values)
    flags.mark_flag_as_required("workdirs", flag_values=flag_values)


def _workdir(path: str) -> str:
    return os.path.dirname(path) if path.endswith(".json") else path


def evaluate_run(workdir: str, *, checkpoint: str = "best", data_dir: str | None = None) -> dict:
    predictor = mango_jax.load(workdir, checkpoint)
    data_config = predictor.config.data
    if data_dir:
        data_config = data_config.copy_and_resolve_references()
        data_config.data_dir = data_dir
    start = time.perf_counter()
    result = robustness.evaluate(predictor, data_config=data_config)
    result["workdir"], result["checkpoint_step"] = workdir, predictor.step
    result["seconds"] = round(time.perf_counter() - start, 1)
    return result


def write_run(workdir: str, result: dict) -> None:
    with open(os.path.join(workdir, FILE), "w") as f:
        json.dump(result, f, indent=1)
    for i, m in enumerate(result["modalities"]):
        robustness.plot_curves({os.path.basename(workdir.rstrip("/")): result}, i,
                               os.path.join(workdir, f"robustness_{m}.png"))


def run(workdirs, *, late: str | None = None, out: str | None = None,
        checkpoint: str = "best", data_dir: str | None = None) -> dict[str, dict]:
    """Evaluates every run (and the late-fusion reference), writes the files; label -> result."""
    dirs = [_workdir(p) for p in expand(workdirs)]
    if not dirs:
        raise ValueError(f"--workdirs={','.join(workdirs)} matched no run")
    results = {}
    for d in dict.fromkeys(dirs + ([late] if late else [])):
        results[d] = evaluate_run(d, checkpoint=checkpoint, data_dir=data_dir)
        print(f"{d}: {results[d]['fusion']} in {results[d]['seconds']} s", flush=True)
    late = late or next((d for d, r in results.items() if r["fusion"] == "late"), None)
    reference = results.get(late)
    for d, r in results.items():
        robustness.add_effective_robustness(r, reference)
        if reference is not None:
            r["late_reference"] = late
        write_run(d, r)
    labels = {d: os.path.basename(d.rstrip("/")) for d in results if d in dirs}
    if len(set(labels.values())) < len(labels):
        labels = {d: d for d in labels}
    shown = {labels[d]: results[d] for d in labels}
    head, rows, normalised = robustness.table(shown)
    text = robustness.markdown(head, rows)
    print(text)
    if out and len(shown) > 1:
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, FILE), "w") as f:
            json.dump({"version": robustness.VERSION, "late_reference": late,
                       "normalised": normalised, "runs": shown}, f, indent=1)
        with open(os.path.join(out, "robustness.md"), "w") as f:
            f.write(text)
        first = next(iter(shown.values()))
        for i, m in enumerate(first["modalities"]):
            robustness.plot_curves(shown, i, os.path.join(out, f"robustness_{m}.png"))
    return results


def main(argv, flag_values=flags.FLAGS) -> None:
    del argv
    run(flag_values.workdirs, late=flag_values.late, out=flag_values.out,
        checkpoint=flag_values.checkpoint, data_dir=flag_values.data_dir)


if __name__ == "__main__":
    define_flags()
    cli.run(main)
