"""The references measured beside MANGO: their configs, the parameter-matched depth, and the
bench command end to end at mfeat's runlocal size."""

import functools
import importlib
import json
import os
import subprocess
import sys

import pytest

from experiments import mfeat, nyudv2
from mango_jax.bench import subjects

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_reference_parse_and_validation():
    assert subjects.Reference.parse("geminifusion=params") == subjects.Reference(
        "geminifusion", "params")
    assert subjects.Reference.parse("cross_attention").depth == "equal"
    with pytest.raises(ValueError, match="depth rule"):
        subjects.Reference.parse("tokenfusion=flops")
    with pytest.raises(ValueError, match="neither"):
        subjects.Reference("mango")


def test_reference_config_keeps_width_heads_and_sets_the_depth():
    spec = subjects.preset("paper_nyudv2")
    config = subjects.reference_config(spec.model, "geminifusion", 5, dense=True)
    assert config.fusion.name == "geminifusion" and config.fusion.num_layers == 5
    assert config.fusion.num_heads == spec.model.fusion.flow.num_heads
    assert config.dim == spec.model.dim and config.encoder == spec.model.encoder
    assert spec.model.fusion.name == "mango"


def test_matched_depth_is_the_nearest_parameter_count():
    config = mfeat.get_config("runlocal")
    spec = subjects.Spec("x", config.model, subjects.segmentation_info("nyudv2", 32, 5),
                         ("rgb", "depth"), config.optimizer, batch_size=2,
                         compute_dtype="float32", sweep_tokens=(), sweep_blocks=1)
    spec.model.encoder.patch_size = 8

    @functools.cache
    def count(name, layers):
        return subjects.model_parameter_counts(
            subjects.reference_config(spec.model, name, layers, dense=True), spec.info,
            spec.modalities)["total"]

    target = count("tokenfusion", 3) + 10  # just above 3 layers: 3 is nearest
    brute = min(range(1, 5), key=lambda n: (abs(count("tokenfusion", n) - target), n))
    layers, params = subjects.matched_depth(spec.model, spec.info, spec.modalities,
                                            "tokenfusion", target, dense=True)
    assert (layers, params) == (brute, count("tokenfusion", brute)) and layers == 3


def test_bench_command_at_mfeat_size_compares_with_cross_attention(mfeat_data_dir, tmp_path):
    out = tmp_path / "bench.json"
    command = [sys.executable, "-m", "experiments.bench",
               "--config=experiments/mfeat.py:runlocal",
               f"--config.data.data_dir={mfeat_data_dir}",
               "--references=cross_attention,geminifusion=params", "--sweep=none", "--rounds=1",
               "--warmup=0", f"--out={out}"]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(out.read_text())
    assert results["references"]["cross_attention"] == {
        "depth_rule": "equal", "num_layers": 1, "fusion": "cross_attention"}
    assert set(results["train"]) == {"mango", "mango_remat", "cross_attention", "geminifusion"}
    # A 'params' reference gets the depth whose parameter count is nearest MANGO's.
    config = mfeat.get_config("runlocal")
    config.data.data_dir = str(mfeat_data_dir)
    spec = subjects.from_experiment(config, "x")
    gemini = results["references"]["geminifusion"]
    layers, params = subjects.matched_depth(
        spec.model, spec.info, spec.modalities, "geminifusion",
        results["train"]["mango"]["params_m"] * 1e6)
    assert gemini["depth_rule"] == "params" and gemini["num_layers"] == layers
    assert results["train"]["geminifusion"]["params_m"] == pytest.approx(params / 1e6)
    assert "mango / geminifusion" in results["ratios"]
    ratio = results["ratios"]["mango / cross_attention"]
    mango, cross = results["train"]["mango"], results["train"]["cross_attention"]
    assert ratio["inference_ms"] == pytest.approx(mango["inference_ms"] / cross["inference_ms"])
    assert ratio["step_ms"] == pytest.approx(mango["step"]["median_ms"]
                                             / cross["step"]["median_ms"])
    assert mango["compile_s"] > 0 and cross["compile_s"] > 0
    names = [b["name"] for b in results["bars"]]
    assert "train step time, MANGO / cross-attention" in names
    assert "train step FLOP/s, MANGO / cross-attention" in names
    assert "table8" not in results
    assert "mango / cross_attention" in done.stdout


def test_nyudv2_experiments_compare_as_table8_does():
    spec = subjects.from_experiment(nyudv2.get_config("runlocal"), "x")
    assert spec.references == subjects.TABLE8_REFERENCES and spec.homogeneous
    other = subjects.from_experiment(mfeat.get_config("runlocal"), "x")
    assert other.references == subjects.EXPERIMENT_REFERENCES and not other.homogeneous


def test_mae_preset_is_the_nyudv2_experiment_with_vit_b16_encoders():
    module = importlib.import_module(subjects.CONFIG_PRESETS["paper_nyudv2_mae"])
    spec = subjects.from_experiment(module.get_config(), "paper_nyudv2_mae")
    # MAE's ViT-B/16 (facebook/vit-mae-base): width 768, 12 blocks of 12 heads, MLP 3072.
    encoder = spec.model.encoder
    assert (spec.model.dim, encoder.patch_size, encoder.depth, encoder.num_heads,
            encoder.mlp_ratio) == (768, 16, 12, 12, 4.0)
    assert spec.model.latent_model
    assert spec.info.modality_shapes == {"rgb": (256, 256, 3), "depth": (256, 256, 1)}
    assert spec.model.fusion.flow.num_blocks == 12
    assert spec.references == subjects.TABLE8_REFERENCES and spec.homogeneous
