"""The benchmark harness's arithmetic: FLOP counting, memory, timing, records and the JSON file."""

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from mango_jax import model as model_lib
from mango_jax import paper
from mango_jax.bench import report, subjects, timing, xla


def test_program_flops_match_the_analytic_count():
    m, k, n = 24, 40, 8
    matmul = xla.build(jax.jit(jnp.matmul), jnp.ones((m, k)), jnp.ones((k, n)))
    assert matmul.flops == 2 * m * k * n

    def solve_then_scale(a, b):
        x = jax.lax.linalg.triangular_solve(a, b, left_side=True, lower=False)
        return x @ jnp.ones((n, n))

    batch, rows = 3, 32
    program = xla.build(jax.jit(solve_then_scale), jnp.eye(rows) + jnp.zeros((batch, 1, 1)),
                        jnp.ones((batch, rows, n)))
    # XLA reports -1 for the solve (a custom call); the harness replaces it by m² k per matrix.
    assert program.flops == batch * rows * rows * n + 2 * batch * rows * n * n


def test_custom_call_scan_counts_solves_by_side_and_flags_unknown_calls():
    hlo = "\n".join([
        '  %a = f32[2,16,8]{1,2,0} custom-call(%p, %q), custom_call_target="lapack_strsm_ffi", '
        'backend_config={diag = 78 : ui8, side = 76 : ui8}',
        '  %b = f32[8,16]{0,1} custom-call(%p, %q), custom_call_target="lapack_strsm_ffi", '
        'backend_config={diag = 78 : ui8, side = 82 : ui8}',
        '  %c = f32[4]{0} custom-call(%p), custom_call_target="some_kernel"',
        "  %d = f32[8,16]{1,0} dot(%p, %q)",
    ])
    calls = xla.custom_calls(hlo)
    assert calls.count == 3
    assert calls.unknown == 1
    assert calls.solve_flops == 2 * 16 * 16 * 8 + 8 * 16 * 16


def test_peak_memory_counts_donated_buffers_once():
    memory = xla.Memory(argument=100, output=60, alias=40, temp=7)
    assert memory.peak == 127
    assert memory.as_dict()["peak"] == 127
    donated = xla.build(jax.jit(lambda x: x * 2.0, donate_argnums=0), jnp.ones((256, 256)))
    assert donated.memory.alias == donated.memory.output == 256 * 256 * 4
    assert donated.memory.peak == donated.memory.argument + donated.memory.temp


def test_round_robin_interleaves_candidates_and_skips_warmup():
    order = []
    calls = {name: (lambda name=name: order.append(name)) for name in ("a", "b", "c")}
    timings = timing.round_robin(calls, rounds=4, warmup=2)
    assert order == ["a", "b", "c"] * 6
    for t in timings.values():
        assert len(t.seconds) == len(t.dispatch) == 4
        assert t.median == np.median(t.seconds)
        assert all(d <= s for d, s in zip(t.dispatch, t.seconds, strict=True))
    with pytest.raises(ValueError, match="rounds"):
        timing.round_robin(calls, rounds=0, warmup=1)


def test_train_record_derives_throughput_from_the_median():
    program = xla.Program(compiled=None, lower_s=1.0, compile_s=2.0, flops=6e9,
                          memory=xla.Memory(argument=3 * report.MIB, output=report.MIB,
                                            alias=report.MIB, temp=2 * report.MIB))
    steps = timing.Timing(seconds=(0.5, 3.0, 1.0, 2.0, 1.5), dispatch=(0.1,) * 5)
    record = report.train_record(program, steps, batch_size=4)
    assert record["step"]["median_ms"] == pytest.approx(1500.0)
    assert record["step"]["min_ms"] == pytest.approx(500.0)
    assert record["examples_per_s"] == pytest.approx(4 / 1.5)
    assert record["achieved_gflops_per_s"] == pytest.approx(4.0)
    assert record["model_gflops_per_s"] == pytest.approx(4.0)
    assert record["peak_mib"] == pytest.approx(5.0)
    remat = report.train_record(program, steps, batch_size=4, model_flops=4.5e9)
    assert remat["achieved_gflops_per_s"] == pytest.approx(4.0)
    assert remat["model_gflops_per_s"] == pytest.approx(3.0)


def test_ratios_and_bars():
    a = {"params_m": 2.0, "step": {"median_ms": 30.0}, "peak_mib": 8.0, "compile_s": None}
    b = {"params_m": 4.0, "step": {"median_ms": 10.0}, "peak_mib": 0.0, "compile_s": 1.0}
    r = report.ratios(a, b)
    assert r["params_m"] == 0.5
    assert r["step_ms"] == 3.0
    assert r["peak_mib"] is None and r["compile_s"] is None
    assert report.bar("x", 0.8, 0.7)["met"] is True
    assert report.bar("x", 2.5, 2.0, at_most=True)["met"] is False
    assert report.bar("x", None, 2.0)["met"] is None


def test_write_json_is_strict_and_atomic(tmp_path):
    path = tmp_path / "out" / "bench.json"
    report.write_json(str(path), {"a": np.float32(1.5), "b": (np.int64(3), float("nan")),
                                  "c": {"d": float("inf"), "e": np.bool_(True)}})

    def reject(constant):
        raise AssertionError(f"non-standard JSON constant {constant}")

    loaded = json.loads(path.read_text(), parse_constant=reject)
    assert loaded == {"a": 1.5, "b": [3, None], "c": {"d": None, "e": True}}
    assert os.listdir(path.parent) == ["bench.json"]


def test_table_aligns_and_marks_missing_figures():
    text = report.table(["", "x", "y"], [["row one", 1234.5, None], ["r2", 0.012345, True]])
    lines = text.splitlines()
    assert len({len(line) for line in lines}) == 1
    assert "1,234" in lines[2] and lines[2].rstrip().endswith("-")
    assert "0.0123" in lines[3] and lines[3].endswith("yes")


def test_gpu_peak_lookup():
    assert report.gpu_peak_tflops("NVIDIA H100 80GB HBM3") == 989.0
    assert report.gpu_peak_tflops("cpu") is None


def test_token_sweep_resizes_images_to_a_grid_of_n_patches():
    spec = subjects.preset("paper_nyudv2")
    for tokens in (64, 128, 512):
        info, config = subjects.with_tokens(spec.info, spec.modalities, spec.model, tokens)
        h, w = info.modality_shapes["rgb"][:2]
        assert (h // 16) * (w // 16) == tokens and h <= w
        assert info.modality_shapes["depth"] == (h, w, 1)
        assert info.label_shape == (h, w)
        assert not config.latent_model
        assert model_lib.token_counts(config, info, spec.modalities) == (tokens, tokens)
    assert spec.model.latent_model  # the spec itself is untouched


def test_token_sweep_of_vector_modalities_sets_the_token_count():
    info = dataclasses.replace(subjects.segmentation_info("x", 32, 3), task="multiclass",
                               modality_kinds={"rgb": "vector", "depth": "vector"},
                               label_shape=())
    _, config = subjects.with_tokens(info, ("rgb", "depth"), model_lib.default_config(), 12)
    assert config.tokens_per_modality == 12


def test_synthetic_batch_has_the_dataset_layout():
    info = subjects.segmentation_info("nyudv2", 32, 40, depth_channels=1)
    batch = subjects.synthetic_batch(info, ("rgb", "depth"), 3)
    assert batch["rgb"].shape == (3, 32, 32, 3) and batch["rgb"].dtype == np.float32
    assert batch["depth"].shape == (3, 32, 32, 1)
    assert batch["label"].shape == (3, 32, 32) and batch["label"].dtype == np.int32
    assert batch["label"].min() >= 0 and batch["label"].max() < 40
    assert batch["mask"].all()


def test_transformer_baseline_matches_width_depth_and_heads():
    spec = subjects.preset("paper_nyudv2")
    config = subjects.transformer_config(spec.model)
    flow = spec.model.fusion.flow
    assert config.fusion.name == "concat" and config.fusion.mode == "token"
    assert config.fusion.num_layers == flow.num_blocks == 12
    assert config.fusion.num_heads == flow.num_heads
    assert config.dim == spec.model.dim and config.encoder == spec.model.encoder
    assert spec.model.fusion.name == "mango"


def test_experiment_configs_must_use_mango():
    config = ml_collections.ConfigDict({"model": model_lib.default_config()})
    config.model.fusion = ml_collections.ConfigDict({"name": "concat"})
    with pytest.raises(ValueError, match="MANGO"):
        subjects.from_experiment(config, "x")


def test_paper_preset_is_the_documented_mapping():
    spec = subjects.preset("paper_nyudv2")
    assert spec.model.dim == 384 and spec.model.encoder.depth == 7
    assert spec.model.encoder.patch_size == 16 and spec.model.fusion.flow.num_blocks == 12
    assert "depth 7" in spec.notes["encoder_mapping"]


def test_table8_ratios_are_the_papers():
    ratios = report.table8_ratios(paper.table8_costs())
    assert ratios["mango / geminifusion"]["inference_ms"] == pytest.approx(144 / 153)
    assert ratios["mango / geminifusion"]["forward_gflops"] == pytest.approx(152 / 174)
    assert ratios["mango / tokenfusion"]["params_m"] == pytest.approx(72.9 / 45.9)
