"""Runs written by older versions (tests/fixtures/mfeat_glow_v0: config version 0, results
schema 0) still evaluate, resume, load and report; a checkpoint that cannot be read is named and
skipped for the previous one.

Every test works on its own copy of the fixture, a two-checkpoint (steps 3 and 6) Glow run."""

from __future__ import annotations

import csv
import json
import os
import shutil

import numpy as np
import pytest
from main_runner import run_main

import mango_jax
from experiments import cli, mfeat, report
from mango_jax import data, migrate
from mango_jax.results import SCHEMA_VERSION, Results
from mango_jax.train.checkpoint import CheckpointError

FIXTURE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures",
                       "mfeat_glow_v0")
CONFIG_ARG = "runlocal,flow=glow,views=zer+mor"  # what the fixture ran with (its README)
OVERRIDES = ("--config.model.encoder.vector_hidden=8",)
MORE_STEPS = 8  # resumed runs train on to here (one train-step program for the module)


def old_results() -> dict:
    with open(os.path.join(FIXTURE, "results.json")) as f:
        return json.load(f)


@pytest.fixture
def old_run(tmp_path):
    workdir = str(tmp_path / "old")
    shutil.copytree(FIXTURE, workdir, ignore=shutil.ignore_patterns("README.md"))
    return workdir


def main(workdir: str, data_dir: str, *args: str) -> None:
    run_main([f"--config=experiments/mfeat.py:{CONFIG_ARG}", *OVERRIDES,
              f"--config.data.data_dir={data_dir}", f"--workdir={workdir}", *args])


def flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in tree.items():
        out.update(flatten(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k: v})
    return out


def test_old_config_reads_as_the_current_fields():
    old = flatten(json.loads(open(os.path.join(FIXTURE, "config.json")).read()))
    assert "model.fusion.flow.glow_kernel_size" in old and "version" not in old
    migrated = flatten(migrate.read_config(os.path.join(FIXTURE, "config.json")).to_dict())
    current = mfeat.get_config(CONFIG_ARG)
    current.model.encoder.vector_hidden = 8
    current = flatten(json.loads(current.to_json_best_effort()))
    # Every field of the old run is a field of today's config, at the value the run used; the
    # fields added since are the only ones it lacks.
    assert set(migrated) <= set(current)
    differ = {k: (v, current[k]) for k, v in migrated.items() if current[k] != v}
    # mfeat's G trains rematerialised since; the old run did not, and its config says so.
    assert differ == {"data.data_dir": ("/tmp/oldmfeat", "data"),
                      "model.fusion.flow.remat": (False, True)}
    assert migrated["model.fusion.flow.glow.kernel_size"] == old[
        "model.fusion.flow.glow_kernel_size"]
    # AttnFlow's coupling read Glow's kernel size then; the migrated config keeps what ran.
    assert migrated["model.fusion.flow.attnflow.kernel_size"] == old[
        "model.fusion.flow.glow_kernel_size"]


def test_old_results_read_as_the_current_schema(tmp_path):
    results = Results.load(os.path.join(FIXTURE, "results.json"))
    assert results.schema_version == SCHEMA_VERSION
    assert results.fusion_details == {"flow_layer": "glow", "num_blocks": 1, "partitions": None}
    assert results.splits == {k: v for k, v in old_results().items() if k != "meta"}
    assert results.config["version"] == migrate.CONFIG_VERSION
    assert results.config["model"]["fusion"]["flow"]["glow"]["kernel_size"] == 3
    # Older still: MANGO's settings at the top of meta, no fusion_details.
    meta = {**old_results()["meta"], "flow_layer": "mango", "num_blocks": 12,
            "partitions": ["mmca", "imca"], "gflops": 1.0}
    del meta["fusion_details"]
    flat = Results.from_json({"test": {"miou": 0.5}, "meta": meta})
    assert flat.fusion_details == {"flow_layer": "mango", "num_blocks": 12,
                                   "partitions": ["mmca", "imca"]}
    # Round trip, and a file of a newer schema is refused by name.
    path = str(tmp_path / "results.json")
    flat.save(path)
    assert Results.load(path) == flat
    newer = flat.to_json()
    newer["meta"]["schema_version"] = SCHEMA_VERSION + 1
    with pytest.raises(ValueError, match=r"x\.json: results schema_version 2 is not one"):
        Results.from_json(newer, "x.json")


def test_old_run_loads_evaluates_resumes_and_reports(old_run, mfeat_data_dir, tmp_path, capsys):
    # mango_jax.load builds the model from the old config.json (its data moved here).
    with open(os.path.join(old_run, "config.json")) as f:
        config = json.load(f)
    config["data"]["data_dir"] = mfeat_data_dir
    with open(os.path.join(old_run, "config.json"), "w") as f:
        json.dump(config, f)
    predictor = mango_jax.load(old_run, "latest")
    assert predictor.step == 6
    batch = next(iter(data.make_iterator(predictor.config.data, "test", batch_size=400,
                                         train=False, seed=0)))
    p = np.asarray(predictor.predict_batch(batch)["probabilities"], np.float64)
    labels = np.asarray(batch["label"])
    task_loss = -np.mean(np.log(p[np.arange(len(labels)), labels]))
    # The old code's reported test loss, from the new code's model of its checkpoint.
    assert task_loss == pytest.approx(old_results()["test"]["task_loss"], rel=1e-5)

    main(old_run, mfeat_data_dir, "--mode=eval")
    evaluated = Results.load(os.path.join(old_run, "results.json"))
    assert evaluated.steps == 6 and evaluated.schema_version == SCHEMA_VERSION
    for split in ("val", "test"):
        assert evaluated.splits[split] == pytest.approx(old_results()[split], rel=1e-5)
    with open(os.path.join(old_run, "config.json")) as f:
        assert json.load(f)["version"] == migrate.CONFIG_VERSION

    capsys.readouterr()
    main(old_run, mfeat_data_dir, f"--config.num_steps={MORE_STEPS}")
    assert f"Resumed from step 6 in {old_run}" in capsys.readouterr().out
    assert Results.load(os.path.join(old_run, "results.json")).steps == MORE_STEPS

    out = str(tmp_path / "report")
    report.write_report([FIXTURE, old_run], out)
    with open(os.path.join(out, "runs.csv")) as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == "test"]
    assert [(r["workdir"], r["flow layer"], r["steps"]) for r in rows] == [
        (os.path.normpath(FIXTURE), "glow", "6"),
        (os.path.normpath(old_run), "glow", str(MORE_STEPS))]
    accuracy = old_results()["test"]["accuracy"]
    assert float(rows[0]["accuracy (%)"]) == pytest.approx(100 * accuracy)


def overwrite_array_data(checkpoint: str) -> None:
    """Overwrites the files that hold the arrays' bytes (TensorStore's OCDBT `d/` folders)."""
    rng = np.random.default_rng(0)
    for folder, _, names in os.walk(os.path.join(checkpoint, "state")):
        for name in names if os.path.basename(folder) == "d" else ():
            path = os.path.join(folder, name)
            size = os.path.getsize(path)
            with open(path, "wb") as f:
                f.write(rng.bytes(size))


def test_unreadable_latest_checkpoint_falls_back_to_the_previous(old_run, mfeat_data_dir,
                                                                 capsys):
    latest = os.path.join(old_run, "checkpoints", "6")
    overwrite_array_data(latest)
    capsys.readouterr()
    main(old_run, mfeat_data_dir, "--mode=eval")
    out, err = capsys.readouterr()
    assert f"warning: checkpoint step 6 at {latest} cannot be read: " in out
    assert "warning: using checkpoint step 3 instead, the newest that can be read" in out
    assert "Traceback" not in out + err and "TensorStore details" not in out
    assert Results.load(os.path.join(old_run, "results.json")).steps == 3
    assert os.path.isdir(latest)  # evaluation leaves the checkpoints as they are

    main(old_run, mfeat_data_dir, f"--config.num_steps={MORE_STEPS}")  # from step 3
    out = capsys.readouterr().out
    assert f"Resumed from step 3 in {old_run}" in out
    assert f"kept as {latest}.unreadable" in out
    assert Results.load(os.path.join(old_run, "results.json")).steps == MORE_STEPS
    # The broken checkpoint is kept beside the new one of its step (saved at 6 and 8); the
    # keep-last-2 policy counted only readable ones.
    assert sorted(os.listdir(os.path.join(old_run, "checkpoints"))) == [
        "6", "6.unreadable", str(MORE_STEPS)]

    for step in (6, MORE_STEPS):
        overwrite_array_data(os.path.join(old_run, "checkpoints", str(step)))
    with pytest.raises(CheckpointError) as raised:
        main(old_run, mfeat_data_dir, "--mode=eval")
    # The command prints it after `error: ` and exits with status 2 (experiments.cli).
    assert cli.mistake(raised.value, []) == str(raised.value)
    lines = str(raised.value).splitlines()
    assert lines[0] == "no checkpoint can be read:"
    assert [line.split(" cannot be read: ")[0] for line in lines[1:3]] == [
        f"checkpoint step {s} at {old_run}/checkpoints/{s}" for s in (MORE_STEPS, 6)]
