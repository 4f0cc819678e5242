"""Training: jit vs per-device (pmap-style) agreement, exact resume, NaN stop, outputs, Glow's
data-dependent ActNorm initialisation."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import mango_jax
from experiments import mfeat
from mango_jax import data, flows
from mango_jax.results import SCHEMA_VERSION
from mango_jax.train import loop
from mango_jax.train.checkpoint import Checkpointer
from mango_jax.train.writers import read_metrics


def tiny_config(data_dir, arg="runlocal", **overrides):
    config = mfeat.get_config(arg)
    config.data.data_dir = data_dir
    config.update(batch_size=16, eval_batch_size=80, num_steps=6, log_every=1, eval_every=0,
                  checkpoint_every=3)
    config.optimizer.warmup_steps = 2
    config.update_from_flattened_dict(overrides)
    return config


def train_losses(workdir):
    return {row["step"]: row["loss"] for row in read_metrics(workdir) if row["split"] == "train"}


def test_runs_on_eight_devices():
    assert jax.device_count() == 8, "make test sets 8 simulated CPU devices"


def test_jit_and_pmap_forms_agree(mfeat_data_dir, tmp_path):
    losses = {}
    for form in ("jit", "pmap"):
        # Dropout masks differ between the forms by design (one global mask vs one stream
        # per device), so the forms are compared without dropout.
        config = tiny_config(mfeat_data_dir, **{"parallelism": form, "num_steps": 5,
                                                "checkpoint_every": 100,
                                                "model.encoder.dropout": 0.0,
                                                "model.head_dropout": 0.0})
        trainer = loop.Trainer(config, str(tmp_path / form))
        trainer.run_until(5)
        trainer.close()
        losses[form] = np.array([v for _, v in sorted(train_losses(str(tmp_path / form)).items())])
    assert len(losses["jit"]) == 5
    np.testing.assert_allclose(losses["pmap"], losses["jit"], rtol=1e-5)
    assert np.all(np.diff(losses["jit"]) != 0)  # the parameters really moved


def test_stop_and_resume_is_bitwise_exact(mfeat_data_dir, tmp_path):
    full = str(tmp_path / "full")
    loop.train(tiny_config(mfeat_data_dir), full)

    stopped = str(tmp_path / "stopped")
    first = loop.Trainer(tiny_config(mfeat_data_dir), stopped)
    first.run_until(3)  # preempted after the step-3 checkpoint
    first.close()
    second = loop.Trainer(tiny_config(mfeat_data_dir), stopped)
    assert second.resume() and second.step == 3
    second.run_until(second.steps)
    second.close()

    expected, resumed = train_losses(full), train_losses(stopped)
    assert [resumed[s] for s in (4, 5, 6)] == [expected[s] for s in (4, 5, 6)]
    assert expected[4] != expected[3]
    a = jax.tree.leaves(nnx.state(mango_jax.load(full, "latest").model, nnx.Param))
    b = jax.tree.leaves(nnx.state(mango_jax.load(stopped, "latest").model, nnx.Param))
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(mfeat_data_dir, tmp_path):
    config = tiny_config(mfeat_data_dir, **{"checkpoint_every": 1,
                                            "optimizer.learning_rate": 1e30,
                                            "optimizer.warmup_steps": 0,
                                            "optimizer.grad_clip_norm": 0.0})
    workdir = str(tmp_path / "nan")
    with pytest.raises(loop.NonFiniteLossError, match=r"at step (\d+)") as err:
        loop.train(config, workdir)
    bad_step = int(err.value.args[0].split("at step ")[1].split(";")[0])
    checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"))
    assert checkpointer.latest_step() == bad_step - 1
    predictor = mango_jax.load(workdir, "latest")
    for leaf in jax.tree.leaves(nnx.state(predictor.model, nnx.Param)):
        assert np.all(np.isfinite(np.asarray(leaf)))
    checkpointer.close()


def test_non_finite_loss_before_any_checkpoint_says_there_is_none(mfeat_data_dir, tmp_path):
    trainer = loop.Trainer(tiny_config(mfeat_data_dir), str(tmp_path / "run"))
    with pytest.raises(loop.NonFiniteLossError, match="at step 1;") as err:
        trainer.check_finite([(1, {"loss": np.float32(np.nan)})])
    assert "No checkpoint had been written yet." in str(err.value)
    assert "step None" not in str(err.value)
    trainer.close()


def test_gradient_accumulation_matches_one_big_batch(mfeat_data_dir, tmp_path):
    losses = {}
    for k in (1, 2):
        config = tiny_config(mfeat_data_dir, **{"optimizer.grad_accum_steps": k,
                                                "num_steps": 2, "checkpoint_every": 100,
                                                "model.encoder.dropout": 0.0,
                                                "model.head_dropout": 0.0})
        trainer = loop.Trainer(config, str(tmp_path / f"k{k}"))
        trainer.run_until(2)
        trainer.close()
        losses[k] = [v for _, v in sorted(train_losses(str(tmp_path / f"k{k}")).items())]
    np.testing.assert_allclose(losses[2], losses[1], rtol=1e-5)


def test_run_writes_results_plots_and_events(mfeat_data_dir, tmp_path):
    config = tiny_config(mfeat_data_dir, "views=fac+zer,runlocal", eval_every=3)
    workdir = str(tmp_path / "run")
    results = loop.run(config, workdir)
    with open(os.path.join(workdir, "results.json")) as f:
        written = json.load(f)
    assert written["test"]["accuracy"] == results.splits["test"]["accuracy"]
    assert written["meta"]["schema_version"] == SCHEMA_VERSION
    assert 0.0 <= written["test"]["accuracy"] <= 1.0
    assert written["meta"]["sources"] == ["fac", "zer"]
    assert written["meta"]["fusion_details"] == {"flow_layer": "mango", "num_blocks": 1,
                                                 "partitions": ["imca", "lica", "mmca"]}
    assert written["meta"]["diagnostics"] == {
        "attention_maps": "attention.png",
        "attention_kinds": ["mmca_ab", "mmca_ba", "imca_1", "imca_2", "imca_3", "imca_4", "lica"]}
    for name in ("loss.png", "nll.png", "metric_accuracy.png", "attention.png"):
        assert os.path.getsize(os.path.join(workdir, name)) > 1000, name
    assert os.listdir(os.path.join(workdir, "tensorboard"))
    splits = {row["split"] for row in read_metrics(workdir)}
    assert {"train", "val", "final_val", "final_test"} <= splits


def test_bf16_compute_and_checkpoint_policy(mfeat_data_dir, tmp_path):
    config = tiny_config(mfeat_data_dir, **{"compute_dtype": "bfloat16", "checkpoint_every": 1,
                                            "eval_every": 1, "keep_checkpoints": 2,
                                            "best_metric": "accuracy"})
    workdir = str(tmp_path / "bf16")
    trainer = loop.train(config, workdir)
    for leaf in jax.tree.leaves(nnx.state(trainer.model, nnx.Param)):
        assert leaf.dtype == np.float32  # float32 master weights
    rows = read_metrics(workdir)
    assert all(np.isfinite(r["loss"]) for r in rows if r["split"] == "train")
    accuracy = {r["step"]: r["accuracy"] for r in rows if r["split"] == "val"}
    kept = sorted(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints"))
                  if d.isdigit())
    assert {5, 6} <= set(kept) and len(kept) <= 3
    assert max(accuracy[s] for s in kept) == max(accuracy.values())  # the best survives


def test_glow_actnorms_are_initialised_from_the_first_batch_and_not_on_resume(mfeat_data_dir,
                                                                             tmp_path):
    config = tiny_config(mfeat_data_dir, "flow=glow,runlocal", num_steps=3)
    workdir = str(tmp_path / "glow")
    trainer = loop.Trainer(config, workdir)
    model = trainer.model
    first = next(data.make_iterator(config.data, "train", batch_size=config.batch_size,
                                    train=True, seed=config.data.seed))
    a, b = model.features(first)
    x = np.concatenate([np.asarray(a, np.float64), np.asarray(b, np.float64)], axis=1)
    actnorm = model.fusion.flow.children()[0].layers[0]  # G's first layer sees the features
    assert isinstance(actnorm, flows.ActNorm)
    np.testing.assert_allclose(actnorm.bias[...], -x.mean(axis=(0, 1)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(actnorm.log_scale[...], -np.log(x.std(axis=(0, 1))), rtol=1e-4,
                               atol=1e-5)
    y = np.asarray(actnorm(jnp.asarray(x, jnp.float32))[0], np.float64)
    np.testing.assert_allclose(y.mean(axis=(0, 1)), 0.0, atol=1e-5)
    np.testing.assert_allclose(y.std(axis=(0, 1)), 1.0, rtol=1e-4)
    trainer.run_until(3)
    trainer.close()
    trained = nnx.to_pure_dict(nnx.state(trainer.model.fusion.flow, nnx.Param))

    resumed = loop.Trainer(config, workdir)
    fresh = resumed.model.fusion.flow.children()[0].layers[0]
    np.testing.assert_array_equal(fresh.bias[...], 0.0)  # not initialised again
    np.testing.assert_array_equal(fresh.log_scale[...], 0.0)
    assert resumed.resume() and resumed.step == 3
    restored = nnx.to_pure_dict(nnx.state(resumed.model.fusion.flow, nnx.Param))
    for x, y in zip(jax.tree.leaves(trained), jax.tree.leaves(restored), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    resumed.close()
