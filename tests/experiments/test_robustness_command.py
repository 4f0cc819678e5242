"""`python -m experiments.robustness` end to end on tiny trained mfeat runs (MANGO and late
fusion): every file it promises, consistent with the runs' own results."""

from __future__ import annotations

import json
import os

import pytest
from absl import flags

from experiments import mfeat, robustness_mfeat
from experiments import robustness as command
from mango_jax import fusion, robustness
from mango_jax.train import loop


def train(workdir, data_dir, fusion):
    config = mfeat.get_config(f"runlocal,fusion={fusion}")
    config.data.data_dir = data_dir
    config.num_steps = 3
    config.eval_every = 0
    config.robustness.update(num_levels=3, impute_steps=2)  # Fast; the levels span [0, 1].
    loop.run(config, workdir)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, mfeat_data_dir):
    root = tmp_path_factory.mktemp("robustness")
    dirs = {name: str(root / name) for name in ("mango", "late")}
    for name, d in dirs.items():
        train(d, mfeat_data_dir, name)
    return dirs


def test_command_writes_every_promised_file(runs, mfeat_data_dir, tmp_path):
    values = flags.FlagValues()
    command.define_flags(values)
    values([
        "robustness", f"--workdirs={runs['mango']},{runs['late']}", f"--out={tmp_path}",
        f"--data_dir={mfeat_data_dir}", "--checkpoint=latest"])
    command.main([], values)
    for d in runs.values():
        with open(os.path.join(d, "robustness.json")) as f:
            r = json.load(f)
        with open(os.path.join(d, "results.json")) as f:
            results = json.load(f)
        assert r["version"] == robustness.VERSION and r["levels"][0] == 0 and r["levels"][-1] == 1
        # Level 0 is the clean model: the run's own test accuracy.
        assert r["clean"]["test"] == pytest.approx(results["test"]["accuracy"], abs=1e-6)
        for m in ("pix", "fou"):
            assert os.path.isfile(os.path.join(d, f"robustness_{m}.png"))
            for entry in r["corruptions"][m].values():
                assert entry["metric"][0] == pytest.approx(r["clean"]["test"])
                assert entry["auroc"]["max_softmax"][0] == 0.5  # Clean vs itself.
                assert entry["effective_robustness"] is not None
            strategies = r["missing"][m]["strategies"]
            assert ("flow" in strategies) == (r["fusion"] == "mango")
        if r["fusion"] == "mango":
            assert {"nll", "typicality", "cross_modal_distance", "conditional_nll"} <= set(
                r["corruptions"]["pix"]["gaussian"]["auroc"])
        else:  # Against itself, late fusion's effective robustness is 0.
            assert r["summary"]["effective_robustness"] == pytest.approx(0.0, abs=1e-9)
    with open(tmp_path / "robustness.json") as f:
        combined = json.load(f)
    assert set(combined["runs"]) == {"mango", "late"}
    assert set(combined["normalised"]["relative_robustness"].values()) <= {0.0, 1.0, None}
    assert (tmp_path / "robustness.md").read_text().count("\n") == 4
    assert (tmp_path / "robustness_pix.png").is_file()
    from experiments.report import write_report  # experiments.report collects them.

    built = write_report([runs["mango"], runs["late"]], str(tmp_path / "report"))
    table = next(t for t in built if t.key == "robustness_pix_fou")
    assert {row[0] for row in table.rows} == {os.path.normpath(runs["mango"]),
                                              os.path.normpath(runs["late"])}
    assert "## Robustness to corrupted and missing modalities (pix + fou)" in (
        tmp_path / "report" / "report.md").read_text()


def test_the_worked_example_runs_every_registered_method():
    """`python -m experiments.robustness_mfeat` trains one run per fusion method of the
    registry (the unimodal model once per view) and the modality-dropout runs; every run's
    `--config=` parses and its `--config.*` overrides name fields the config has."""
    runs = robustness_mfeat.runs()
    methods = {}
    for name, args in runs.items():
        (arg,) = [a[len("--config="):] for a in args if a.startswith("--config=")]
        config = mfeat.get_config(arg.split(":", 1)[1])
        for override in (a[len("--config."):] for a in args if a.startswith("--config.")):
            path, value = override.split("=")
            *parents, leaf = path.split(".")
            node = config
            for part in parents:
                node = node[part]
            assert leaf in node, (name, override)
            node[leaf] = type(node[leaf])(value)
        methods[name] = config
    assert {c.model.fusion.name for c in methods.values()} == set(fusion.NAMES)
    assert [methods[n].model.fusion.modality for n in ("uni_a", "uni_b")] == ["a", "b"]
    assert methods["mango_mdrop"].model.modality_dropout == robustness_mfeat.MODALITY_DROPOUT
    assert methods["late_mdrop"].model.fusion.name == "late"
    assert methods["mango"].model.modality_dropout == 0.0
