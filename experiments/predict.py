"""Predictions of a trained run into a CSV (and PNGs for dense tasks).

    python -m experiments.predict --workdir=runs/my_pairs --manual_dir=PATH --split=test \
        --out=preds/                                # the test rows of PATH/manifest.csv
    python -m experiments.predict --workdir=runs/my_pairs --manifest=new.csv --out=preds/
    python -m experiments.predict --workdir=runs/mfeat --split=test --out=preds/   # built-in

`--out/predictions.csv` has the columns `row` (the data row's index in the manifest, from 0;
for a built-in dataset the example's index in the split), `split`, `prediction` (a class
name, names joined by `|`, or for segmentation / translation the PNG `<row>.png` written beside
the CSV: the class-id mask at the label's size, or the RGB image) and, for classification,
`p_<class>` per class. A predict manifest has the training run's two modality columns; split
and label columns are optional (a label, when given, must be a class seen in training).
"""

from __future__ import annotations

import csv
import os

import numpy as np
from absl import app, flags, logging

from experiments import cli
from mango_jax.errors import ConfigError


def manifest_rows(predictor, *, manual_dir, manifest, split):
    """(rows, source path, root) of the examples to predict, checked as a manifest."""
    from mango_jax.data import paired

    if manifest:
        m = paired.read_manifest(manifest, need_labels=False, need_split=False,
                                 modalities=predictor.modalities)
        rows = m.rows if split is None else [r for r in m.rows if r["split"] == split]
    else:
        m = paired.read_manifest(os.path.join(manual_dir, paired.MANIFEST), need_labels=False,
                                 modalities=predictor.modalities)
        rows = [r for r in m.rows if r["split"] == split]
    if not rows:
        raise app.UsageError(f"{m.path} has no rows" + (f" in split {split!r}" if split else ""))
    return rows, m.path, m.root


def decoded_batches(predictor, *, manual_dir, manifest, split):
    """Yields (rows, splits, decoded predictions) batch by batch."""
    if predictor.transform is None:
        if manual_dir or manifest or not split:
            raise app.UsageError(f"{predictor.info.name} is a built-in dataset: pass --split "
                                 "alone (its prepared split is read)")
        from mango_jax import data

        it = data.make_iterator(predictor.config.data, split, train=False, seed=0,
                                batch_size=predictor.batch_size, shard_by_process=False)
        seen = 0
        for batch in it:
            keep = np.asarray(batch["mask"])
            out = predictor.predict_batch(batch)
            n = int(keep.sum())
            yield (list(range(seen, seen + n)), [split] * n,
                   {k: [v for v, k_ in zip(vals, keep, strict=True) if k_]
                    for k, vals in out.items()})
            seen += n
        return
    if bool(manual_dir) == bool(manifest) or (manual_dir and not split):
        raise app.UsageError("pass --manual_dir=PATH --split=SPLIT, or --manifest=FILE")
    rows, path, root = manifest_rows(predictor, manual_dir=manual_dir, manifest=manifest,
                                     split=split)
    records = predictor.records(rows, root=root, source=path)
    start = 0
    for batch in predictor.batches(records):
        n = int(batch["mask"].sum())
        out = predictor.predict_batch(batch)
        part = rows[start:start + n]
        yield ([r["row"] for r in part], [r["split"] for r in part],
               {k: list(v[:n]) for k, v in out.items()})
        start += n


def write_png(path: str, array: np.ndarray) -> None:
    from mango_jax.data import core

    with open(path, "wb") as f:
        f.write(core.encode_png(array))


def predict(workdir, out, *, manual_dir=None, manifest=None, split=None,
            checkpoint="best") -> str:
    """Writes `out/predictions.csv` (and the PNGs); returns the CSV's path."""
    import mango_jax

    predictor = mango_jax.load(workdir, checkpoint)
    names = predictor.class_names or ()
    task = predictor.info.task
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "predictions.csv")
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        probs = task in ("multiclass", "multilabel")
        writer.writerow(["row", "split", "prediction"] + ([f"p_{c}" for c in names]
                                                          if probs else []))
        for rows, splits, decoded in decoded_batches(predictor, manual_dir=manual_dir,
                                                     manifest=manifest, split=split):
            for i, (row, s) in enumerate(zip(rows, splits, strict=True)):
                if task == "multiclass":
                    shown = decoded["classes"][i]
                elif task == "multilabel":
                    shown = "|".join(decoded["labels"][i])
                else:
                    shown = f"{row}.png"
                    if task == "segmentation":
                        mask = decoded["masks"][i]
                        image = mask.astype(np.uint8 if len(names) <= 256 else np.uint16)
                    else:
                        image = np.round((decoded["images"][i] + 1.0) * 127.5).astype(np.uint8)
                    write_png(os.path.join(out, shown), image)
                extra = ([f"{p:.6f}" for p in decoded["probabilities"][i]] if probs else [])
                writer.writerow([row, s, shown] + extra)
    return path


def define_flags() -> None:
    """This command's flags, defined only when it runs: its `--workdir` would clash with
    `experiments.main`'s in a process that imports both (tests)."""
    flags.DEFINE_string("workdir", None, "The training run.")
    flags.DEFINE_string("manual_dir", None, "Paired runs: the folder of manifest.csv (with "
                        "--split).")
    flags.DEFINE_string("manifest", None, "Paired runs: a manifest of examples to predict "
                        "(paths relative to its folder).")
    flags.DEFINE_string("split", None, "train, val or test: the manifest's rows of that split, "
                        "or (built-in datasets, alone) the prepared split.")
    flags.DEFINE_string("out", None, "Output folder.")
    flags.DEFINE_enum("checkpoint", "best", ["best", "latest"], "Which checkpoint of the run.")
    flags.mark_flags_as_required(["workdir", "out"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)
    f = flags.FLAGS
    try:
        path = predict(f.workdir, f.out, manual_dir=f.manual_dir, manifest=f.manifest,
                       split=f.split, checkpoint=f.checkpoint)
    except FileNotFoundError as err:  # the run, its checkpoint or an example the user named
        raise ConfigError(str(err)) from None
    print(f"Wrote {path}")


if __name__ == "__main__":
    define_flags()
    cli.run(main)
