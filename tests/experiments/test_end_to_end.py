"""Every flow layer (MANGO's G) and every fusion method through `experiments.main` on mfeat at
runlocal sizes: train, `--mode=eval` from the checkpoint, then resume to more steps.

The cases are read from `mango_jax.flows.LAYERS` and `mango_jax.fusion.NAMES` when the tests are
collected, so a layer or method added later is covered without touching this file. Each case
calls `experiments.main.main` in-process (absl flags parsed as on the command line), and the
module shares one persistent JAX compilation cache: the eval and resume calls of a case, and the
programs the cases have in common (optimiser updates, initialisers), load what the first call
compiled instead of compiling again. A constant learning rate keeps the resumed run's train step
the same program as the first run's. Every case trains with modality dropout (one modality
zeroed for half the training examples), which every method must accept.
"""

from __future__ import annotations

import json
import os

import pytest
from main_runner import run_main

from mango_jax import flows, fusion
from mango_jax.train.writers import read_metrics

CASES = [("mango", layer) for layer in flows.LAYERS] + [
    (name, "mango") for name in fusion.NAMES if name != "mango"]
STEPS, MORE_STEPS = 2, 4


def run_mfeat(method: str, layer: str, data_dir: str, workdir: str, *, steps: int,
              mode: str = "train_and_eval") -> None:
    """`python -m experiments.main --config=experiments/mfeat.py:fusion=...,flow=...,runlocal`
    with the test's data, steps, schedule and modality dropout, evaluating the validation split
    only."""
    run_main([f"--config=experiments/mfeat.py:fusion={method},flow={layer},runlocal",
              f"--config.data.data_dir={data_dir}", f"--config.num_steps={steps}",
              "--config.eval_every=0", "--config.eval_splits=('val',)",
              "--config.optimizer.schedule=constant",
              "--config.optimizer.warmup_steps=0", "--config.model.modality_dropout=0.5",
              f"--workdir={workdir}", f"--mode={mode}"])


def results(workdir: str) -> dict:
    with open(os.path.join(workdir, "results.json")) as f:
        return json.load(f)


def check_dynmm_report(results: dict) -> None:
    """DynMM's modality level: the eval shares of its paths, and the FLOPs and compute saved
    they imply, land in results.json (the fusion level: tests/experiments/test_configs.py)."""
    meta = results["meta"]
    details = meta["fusion_details"]
    assert details["level"] == "modality" and details["paths"] == ["a", "ab"]
    flops = details["path_flops"]
    assert list(flops) == details["paths"] and flops["a"] < flops["ab"]
    assert set(meta["diagnostics"]) == {"val"}
    shares = {p: results["val"][f"dynmm/share_{p}"] for p in details["paths"]}
    assert sum(shares.values()) == pytest.approx(1.0) and min(shares.values()) >= 0
    report = meta["diagnostics"]["val"]
    assert report["shares"] == pytest.approx(shares)
    dynamic = details["gate_flops"] + sum(shares[p] * flops[p] for p in flops)
    assert report["flops_per_example"] == pytest.approx(dynamic)
    assert report["compute_saved"] == pytest.approx(1 - dynamic / flops["ab"])


@pytest.mark.parametrize(("method", "layer"), CASES, ids=[f"{m}-{g}" for m, g in CASES])
def test_train_eval_resume(method, layer, mfeat_data_dir, tmp_path, capsys):
    workdir = str(tmp_path / "run")
    run_mfeat(method, layer, mfeat_data_dir, workdir, steps=STEPS)
    trained = results(workdir)
    meta = trained["meta"]
    assert (meta["fusion"], meta["steps"], meta["experiment"]) == (method, STEPS, "mfeat")
    assert meta["sources"] == ["pix", "fou"] and meta["params"] > 0
    assert meta["config"]["model"]["modality_dropout"] == 0.5
    assert 0 < meta["compile_s"] < meta["wall_time_s"] and meta["train_time_s"] <= meta[
        "wall_time_s"]
    assert set(trained) == {"val", "meta"} and 0.0 <= trained["val"]["accuracy"] <= 1.0
    is_mango = method == "mango"
    assert ("nll_bpd" in trained["val"]) == is_mango
    if is_mango:
        assert meta["fusion_details"]["flow_layer"] == layer
        assert (meta["fusion_details"]["partitions"] is None) == (layer != "mango")
    # Model-specific output only where the method has it: ICA attention maps need MANGO's G.
    has_attention = is_mango and layer == "mango"
    assert os.path.exists(os.path.join(workdir, "attention.png")) == has_attention
    # Figures returned by diagnostics(): MANGO's attention maps, DynMM's path shares and savings.
    assert bool(meta["diagnostics"]) == (has_attention or method == "dynmm")
    assert os.path.exists(os.path.join(workdir, "nll.png")) == is_mango
    if method == "dynmm":
        check_dynmm_report(trained)

    run_mfeat(method, layer, mfeat_data_dir, workdir, steps=STEPS, mode="eval")
    evaluated = results(workdir)
    assert evaluated["meta"]["steps"] == STEPS and evaluated["meta"]["train_time_s"] is None
    assert evaluated["val"] == pytest.approx(trained["val"], rel=1e-6, abs=1e-7)

    capsys.readouterr()
    run_mfeat(method, layer, mfeat_data_dir, workdir, steps=MORE_STEPS)
    assert f"Resumed from step {STEPS} in {workdir}" in capsys.readouterr().out
    assert results(workdir)["meta"]["steps"] == MORE_STEPS
    train_steps = [row["step"] for row in read_metrics(workdir) if row["split"] == "train"]
    assert train_steps == [STEPS, MORE_STEPS]  # runlocal logs every 2 steps; none repeated


def test_scanned_rematerialised_G_trains_as_the_unrolled_one(mfeat_data_dir, tmp_path):
    """`flow.scan` and `flow.remat` change how G runs, not what it computes: four blocks (two
    scanned pairs, each block with one layer of every kind: ICA, LICA, coupling) train to the
    unrolled run's losses, and the run evaluates from its checkpoint."""
    common = ["--config=experiments/mfeat.py:runlocal", f"--config.data.data_dir={mfeat_data_dir}",
              "--config.num_steps=4", "--config.eval_splits=('val',)",
              "--config.model.fusion.flow.num_blocks=4",
              "--config.model.fusion.flow.block_pattern=('mmca_ab','lica','coupling')"]
    scanned = ["--config.model.fusion.flow.scan=True", "--config.model.fusion.flow.remat=True"]
    unrolled = ["--config.model.fusion.flow.scan=False", "--config.model.fusion.flow.remat=False"]
    losses = {}
    for name, extra in (("unrolled", unrolled), ("scanned", scanned)):
        workdir = str(tmp_path / name)
        run_main([*common, "--config.eval_every=0", f"--workdir={workdir}", *extra])
        losses[name] = [row["loss"] for row in read_metrics(workdir) if row["split"] == "train"]
    flow = results(workdir)["meta"]["config"]["model"]["fusion"]["flow"]
    assert flow["scan"] and flow["remat"] and flow["num_blocks"] == 4
    assert flow["block_pattern"] == ["mmca_ab", "lica", "coupling"]
    assert len(losses["scanned"]) == 2 and losses["scanned"][0] != losses["scanned"][1]
    assert losses["scanned"] == pytest.approx(losses["unrolled"], rel=1e-5)
    trained = results(workdir)["val"]
    run_main([*common, *scanned, f"--workdir={workdir}", "--mode=eval"])
    assert results(workdir)["val"] == pytest.approx(trained, rel=1e-6, abs=1e-7)


def test_a_baseline_with_shared_weights_trains_and_evaluates_from_the_checkpoint(
        mfeat_data_dir, tmp_path):
    """`shared_weights` (the RGB-D configs' default for TokenFusion and GeminiFusion; both
    build it through `TransformerFusion.stacks`): one set of transformer layers serves both
    modalities through training, the checkpoint and its evaluation."""
    from mango_jax.predict import read_run
    from mango_jax.train.loop import build_model, parameter_counts

    workdir = str(tmp_path / "run")
    common = ["--config=experiments/mfeat.py:fusion=geminifusion,runlocal",
              f"--config.data.data_dir={mfeat_data_dir}", f"--config.num_steps={STEPS}",
              "--config.eval_every=0", "--config.eval_splits=('val',)",
              "--config.model.fusion.shared_weights=True", f"--workdir={workdir}"]
    run_main(common)
    trained = results(workdir)
    fused = trained["meta"]["config"]["model"]["fusion"]
    assert fused["shared_weights"] is True
    config, info = read_run(workdir)
    config.model.fusion.shared_weights = False
    separate = parameter_counts(build_model(config, info))["total"]
    dim = config.model.dim
    hidden = int(dim * fused["mlp_ratio"])
    per_layer = 4 * (dim * dim + dim) + (dim * hidden + hidden) + (hidden * dim + dim)
    assert separate - trained["meta"]["params"] == fused["num_layers"] * per_layer
    run_main([*common, "--mode=eval"])
    assert results(workdir)["val"] == pytest.approx(trained["val"], rel=1e-6, abs=1e-7)
