"""Your own data end to end: prepare a paired folder, train it through `experiments.main`,
predict through `experiments.predict`; the predictions on the test split reproduce the metrics
the training run reported (scored here with NumPy / scikit-learn), `mango_jax.load` works on
another device count than training, and bad predict input fails naming the row."""

from __future__ import annotations

import csv
import json
import math
import os
import pickle
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import paired_fixtures as fx
import pytest
from PIL import Image
from sklearn.metrics import confusion_matrix, f1_score
from xla_env import devices_flag

import mango_jax
from experiments import mfeat
from experiments import paired as paired_config
from experiments.predict import predict
from mango_jax.data import paired
from mango_jax.data.core import DataFormatError
from mango_jax.train import loop
from mango_jax.train.writers import read_metrics

REPO = Path(__file__).resolve().parents[2]


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def results(workdir):
    with open(os.path.join(workdir, "results.json")) as f:
        return json.load(f)


def run(args, devices=None):
    env = dict(os.environ)
    if devices is not None:
        env["XLA_FLAGS"] = devices_flag(devices)
    out = subprocess.run([sys.executable, "-m", *args], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def mango_run(shared_between_workers):
    """Multi-class images + vectors, MANGO, trained on the suite's 8 devices by the command
    (once for every test process)."""
    def train(root):
        with open(root / "written.pkl", "wb") as f:
            pickle.dump(fx.write_multiclass(str(root / "raw")), f)
        paired.SPEC.prepare(data_dir=str(root / "data"), manual_dir=str(root / "raw"),
                            name="pairs")
        run(["experiments.main",
             f"--config=experiments/paired.py:name=pairs,data_dir={root / 'data'},runlocal",
             "--config.eval_batch_size=8", f"--workdir={root / 'run'}"])  # one unpadded batch

    root = shared_between_workers("paired_mango", train)
    with open(root / "written.pkl", "rb") as f:
        return root, pickle.load(f), str(root / "run")


def test_predictions_reproduce_the_reported_accuracy_on_one_device(mango_run, tmp_path):
    root, written, workdir = mango_run
    assert jax.device_count() == 8  # trained on 8 devices; predicted below on 1
    run(["experiments.predict", f"--workdir={workdir}", f"--manual_dir={root / 'raw'}",
         "--split=test", f"--out={tmp_path / 'pred'}", "--checkpoint=latest"], devices=1)
    rows = read_csv(tmp_path / "pred" / "predictions.csv")
    test = [i for i, s in enumerate(written["split"]) if s == "test"]
    assert [int(r["row"]) for r in rows] == test and {r["split"] for r in rows} == {"test"}
    assert list(rows[0]) == ["row", "split", "prediction"] + [f"p_{c}" for c in fx.CLASSES]
    probs = np.array([[float(r[f"p_{c}"]) for c in fx.CLASSES] for r in rows])
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    assert [r["prediction"] for r in rows] == [fx.CLASSES[i] for i in probs.argmax(1)]
    accuracy = np.mean([r["prediction"] == written["label"][int(r["row"])] for r in rows])
    assert accuracy == pytest.approx(results(workdir)["test"]["accuracy"], abs=1e-9)

    # The same model loaded here, on 8 devices, from raw examples: the same probabilities.
    predictor = mango_jax.load(workdir, checkpoint="latest")
    examples = [{"photo": f"img/{i}.png", "feat": f"vec/{i}.npy"} for i in test]
    out = predictor.predict(examples, root=str(root / "raw"))
    np.testing.assert_allclose(out["probabilities"], probs, atol=2e-5)
    assert out["classes"] == [r["prediction"] for r in rows]

    # log p(F) in nats, against the NLL in bits per dimension the run reported on test.
    a, b = predictor.features(examples, root=str(root / "raw"))
    dims = (a.shape[1] + b.shape[1]) * a.shape[2]
    ll = predictor.log_likelihood(examples, root=str(root / "raw"))
    assert ll.shape == (len(test),) and ll.dtype == np.float32
    reported = results(workdir)["test"]["nll_bpd"]
    assert np.mean(-ll) / (dims * math.log(2.0)) == pytest.approx(reported, rel=1e-4)


def test_best_checkpoint_is_the_best_validated_step(mango_run):
    _, _, workdir = mango_run
    val = {r["step"]: r["accuracy"] for r in read_metrics(workdir) if r["split"] == "val"}
    kept = [s for s in val if os.path.isdir(os.path.join(workdir, "checkpoints", str(s)))]
    best = max(kept, key=lambda s: (val[s], s))
    assert mango_jax.load(workdir).step == best
    assert mango_jax.load(workdir, checkpoint="latest").step == 6


def test_a_predict_manifest_needs_no_labels_and_rejects_unseen_classes(mango_run, tmp_path):
    root, written, workdir = mango_run
    raw = root / "raw"
    lines = ["photo,feat"] + [f"{raw}/img/{i}.png,{raw}/vec/{i}.npy" for i in range(3)]
    (tmp_path / "new.csv").write_text("\n".join(lines) + "\n")
    rows = read_csv(predict(workdir, str(tmp_path / "out"), manifest=str(tmp_path / "new.csv")))
    assert [int(r["row"]) for r in rows] == [0, 1, 2] and all(r["prediction"] in fx.CLASSES
                                                              for r in rows)
    lines = ["split,photo,feat,label", f"test,{raw}/img/0.png,{raw}/vec/0.npy,cat",
             f"test,{raw}/img/1.png,{raw}/vec/1.npy,fox"]
    (tmp_path / "bad.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataFormatError, match=r"row 1 \(line 3\), column 'label', value 'fox'"):
        predict(workdir, str(tmp_path / "out2"), manifest=str(tmp_path / "bad.csv"))
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "small.png")
    with pytest.raises(DataFormatError, match=r"row 0 .*column 'photo'.*small\.png.*shape"):
        mango_jax.load(workdir, "latest").predict([{"photo": str(tmp_path / "small.png"),
                                                    "feat": f"{raw}/vec/0.npy"}])


def train_in_process(config, workdir):
    config.eval_splits = ("test",)
    config.num_steps = 3
    config.eval_every = 0
    return loop.run(config, workdir)


def test_multilabel_text_predictions_reproduce_the_reported_f1(tmp_path):
    written = fx.write_multilabel_text(str(tmp_path / "raw"))
    paired.SPEC.prepare(data_dir=str(tmp_path / "data"), manual_dir=str(tmp_path / "raw"),
                        name="tagged", text_columns="caption")
    config = paired_config.get_config(f"name=tagged,data_dir={tmp_path / 'data'},"
                                      "fusion=concat,runlocal")
    reported = train_in_process(config, str(tmp_path / "run")).splits["test"]
    rows = read_csv(predict(str(tmp_path / "run"), str(tmp_path / "out"),
                            manual_dir=str(tmp_path / "raw"), split="test"))
    truth = [[c in written["label"][int(r["row"])].split("|") for c in fx.CLASSES] for r in rows]
    guess = [[c in r["prediction"].split("|") for c in fx.CLASSES] for r in rows]
    for avg in ("micro", "macro"):
        assert f1_score(truth, guess, average=avg, zero_division=0) == pytest.approx(
            reported[f"{avg}_f1"], abs=1e-6)


def test_segmentation_masks_reproduce_the_reported_miou(tmp_path):
    written = fx.write_segmentation(str(tmp_path / "raw"))
    paired.SPEC.prepare(data_dir=str(tmp_path / "data"), manual_dir=str(tmp_path / "raw"),
                        name="scenes")
    config = paired_config.get_config(f"name=scenes,data_dir={tmp_path / 'data'},"
                                      "fusion=concat,runlocal")
    reported = train_in_process(config, str(tmp_path / "run")).splits["test"]
    rows = read_csv(predict(str(tmp_path / "run"), str(tmp_path / "out"),
                            manual_dir=str(tmp_path / "raw"), split="test"))
    masks = [np.asarray(Image.open(tmp_path / "out" / r["prediction"])) for r in rows]
    labels = [written["label"][int(r["row"])] for r in rows]
    keep = np.concatenate([lab.ravel() for lab in labels]) != 255
    cm = confusion_matrix(np.concatenate([lab.ravel() for lab in labels])[keep],
                          np.concatenate([m.ravel() for m in masks])[keep], labels=[0, 1, 2])
    iou = np.diag(cm) / (cm.sum(0) + cm.sum(1) - np.diag(cm))
    assert np.nanmean(iou) == pytest.approx(reported["miou"], abs=1e-6)


def test_a_built_in_dataset_run_predicts_its_split(mfeat_data_dir, tmp_path):
    config = mfeat.get_config("runlocal,fusion=concat")
    config.data.data_dir = mfeat_data_dir
    config.eval_batch_size = 80
    reported = train_in_process(config, str(tmp_path / "run")).splits["test"]
    rows = read_csv(predict(str(tmp_path / "run"), str(tmp_path / "out"), split="test"))
    assert [int(r["row"]) for r in rows] == list(range(400))
    labels = []
    from mango_jax import data

    for batch in data.make_iterator(config.data, "test", batch_size=80, train=False, seed=0,
                                    shard_by_process=False):
        labels += list(batch["label"][batch["mask"]])
    accuracy = np.mean([r["prediction"] == str(y) for r, y in zip(rows, labels, strict=True)])
    assert accuracy == pytest.approx(reported["accuracy"], abs=1e-9)
