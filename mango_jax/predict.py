"""A trained run as a predictor: `mango_jax.load(workdir)`.

    predictor = mango_jax.load("runs/my_pairs")            # the best checkpoint
    out = predictor.predict([{"photo": "img/0.png", "feat": "vec/0.npy"}], root="PATH")
    out["classes"], out["probabilities"]                    # names [B], [B, C]
    predictor.log_likelihood(examples)                      # [B] log p(F) in nats (flows)

A run's workdir holds what loading needs: `config.json`, `dataset.json` (the dataset's
`DatasetInfo`: task, kinds, shapes, class names and, for paired data, the normalisation
statistics and vocabulary; written by the training loop through `save_dataset_json`) and the
orbax checkpoints, of which only the model's parameters are read. Loading builds no optimiser
and no data iterator, needs neither the prepared dataset nor the device count of training,
and runs on the default device. Runs trained before `dataset.json` existed are read with the
prepared dataset's info instead.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from mango_jax import migrate
from mango_jax.data import paired
from mango_jax.data.core import DatasetInfo
from mango_jax.metrics import segmentation
from mango_jax.nn import freeze

DATASET_JSON = "dataset.json"
CHECKPOINTS = ("best", "latest")


def _plain(x):
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    return x


def info_to_dict(info: DatasetInfo) -> dict:
    return _plain(dataclasses.asdict(info))


def info_from_dict(d: dict) -> DatasetInfo:
    d = dict(d)
    for key in ("label_shape", "eval_label_shape"):
        d[key] = tuple(d[key])
    d["modality_shapes"] = {k: tuple(v) for k, v in d["modality_shapes"].items()}
    if d["class_names"] is not None:
        d["class_names"] = tuple(d["class_names"])
    return DatasetInfo(**d)


def save_dataset_json(workdir: str, info: DatasetInfo) -> None:
    """Writes the run's `dataset.json` (the training loop calls this on process 0)."""
    with open(os.path.join(workdir, DATASET_JSON), "w") as f:
        json.dump(info_to_dict(info), f)


def read_run(workdir: str) -> tuple[ml_collections.ConfigDict, DatasetInfo]:
    path = os.path.join(workdir, "config.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{workdir} is not a training run: no config.json (train with "
                                "python -m experiments.main --workdir=...)")
    config = migrate.read_config(path)  # any version, as the current code names its fields
    info_path = os.path.join(workdir, DATASET_JSON)
    if os.path.isfile(info_path):
        with open(info_path) as f:
            return config, info_from_dict(json.load(f))
    from mango_jax import data  # A run from before dataset.json: ask the prepared dataset.

    return config, data.dataset_info(config.data)


def checkpoint_step(workdir: str, config, which: str) -> int:
    """The step of the `latest` checkpoint, or of the `best` by the run's `best_metric` on its
    validation evaluations (metrics.jsonl); `best` is the latest when the run tracked none."""
    if which not in CHECKPOINTS:
        raise ValueError(f"checkpoint={which!r}; expected one of {CHECKPOINTS}")
    folder = os.path.join(workdir, "checkpoints")
    steps = sorted(int(d) for d in (os.listdir(folder) if os.path.isdir(folder) else ())
                   if d.isdigit() and os.path.isdir(os.path.join(folder, d, "state")))
    if not steps:
        raise FileNotFoundError(f"no checkpoint in {folder}; train first")
    metric = config.get("best_metric")
    if which == "latest" or not metric:
        return steps[-1]
    from mango_jax.train.writers import read_metrics

    scores = {r["step"]: r[metric] for r in read_metrics(workdir)
              if r["split"] == "val" and r["step"] in steps and metric in r
              and math.isfinite(r[metric])}
    if not scores:
        return steps[-1]
    sign = -1.0 if config.get("best_mode", "max") == "min" else 1.0
    return max(scores, key=lambda s: (sign * scores[s], s))


def restore_params(workdir: str, step: int, params: nnx.State) -> nnx.State:
    """The model's `nnx.Param`s of checkpoint `step` (nothing else is read), on device 0."""
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    target = {"0": jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
                                nnx.to_pure_dict(params))}
    restore_args = jax.tree.map(lambda _: ocp.ArrayRestoreArgs(sharding=device), target)
    path = os.path.join(os.path.abspath(workdir), "checkpoints", str(step), "state")
    restored = ocp.PyTreeCheckpointer().restore(
        path, args=ocp.args.PyTreeRestore(item=target, restore_args=restore_args,
                                          partial_restore=True))
    params = jax.tree.map(lambda x: x, params)
    nnx.replace_by_pure_dict(params, restored["0"])
    return params


def inference_config(config):
    """The run's config without pretrained-weight files (the checkpoint overwrites them)."""
    config = config.copy_and_resolve_references()
    pretrained = config.model.encoder.get("pretrained")
    if pretrained is not None:
        with pretrained.unlocked():
            for key in list(pretrained.keys()):
                pretrained[key] = None
    return config


class Predictor:
    """The trained model of a run, its config and its dataset's `DatasetInfo`.

    Raw examples (`predict`, `features`, `log_likelihood`) are dicts `{modality: cell}` as a
    manifest gives them (a path relative to `root`, the text of a text column, or a loaded
    array); they are checked and normalised exactly as the training data was. Only runs on
    paired data take raw examples; `predict_batch` takes pipeline batches of any dataset.
    `model` is the trained model frozen for inference (`nn.freeze`: what depends on its
    parameters alone, such as LICA's mixing matrices, is computed once).
    """

    def __init__(self, config, info: DatasetInfo, model, step: int):
        self.config, self.info, self.model, self.step = config, info, freeze(model), step
        self.modalities = tuple(config.data.modalities)
        self.class_names = info.class_names
        meta = info.metadata.get("paired")
        self.transform = (paired.PairedTransform(meta, self.modalities,
                                                 config.data.get("max_text_len"))
                          if meta else None)
        self.batch_size = int(config.get("eval_batch_size", 64))
        self._index = None  # paired text: word -> id, built on first use
        graphdef, state = nnx.split(self.model)

        def forward(state, batch):
            model = nnx.merge(graphdef, state)
            out = model(batch, deterministic=True)
            return out.prediction.astype(jnp.float32)

        def features(state, batch):
            return nnx.merge(graphdef, state).features(batch, deterministic=True)

        def log_likelihood(state, batch):
            model = nnx.merge(graphdef, state)
            return model.fusion.log_likelihood(*model.features(batch, deterministic=True))

        self._state = state
        self._forward, self._features = jax.jit(forward), jax.jit(features)
        self._log_likelihood = jax.jit(log_likelihood)

    # Raw examples -> batches ------------------------------------------------------------------

    def records(self, examples, *, root: str | None = None, source: str = "examples"):
        """Checked stored-form records of raw examples (labels, when given, must be classes
        seen in training); each example may carry its manifest `row` for error messages."""
        if self.transform is None:
            raise ValueError(f"{self.info.name} is a built-in dataset: raw examples are for "
                             "runs on paired data; use predict_batch on its pipeline batches")
        root = os.path.abspath(root or ".")
        meta = self.info.metadata["paired"]
        if self._index is None:
            self._index = paired.vocab_index(meta) or {}
        return [paired.make_record(root, {"row": ex.get("row", i), **ex}, meta, at_path=source,
                                   index=self._index) for i, ex in enumerate(examples)]

    def batches(self, records):
        """Normalised batches of `batch_size` (the last padded, `mask` False on padding)."""
        for start in range(0, len(records), self.batch_size):
            part = [self.transform({m: r[m] for m in self.modalities}) for r in
                    records[start:start + self.batch_size]]
            n = len(part)
            part += [part[0]] * (self.batch_size - n)
            batch = {k: np.stack([p[k] for p in part]) for k in part[0]}
            batch["mask"] = np.arange(self.batch_size) < n
            yield batch

    def model_inputs(self, batch) -> dict:
        """The batch entries the model reads: each modality and its `<modality>_mask`."""
        keys = {*self.modalities, *(f"{m}_mask" for m in self.modalities)}
        return {k: v for k, v in batch.items() if k in keys}

    def _map(self, fn, examples, root):
        records = self.records(examples, root=root)
        outs = [(jax.device_get(fn(self._state, self.model_inputs(batch))), batch["mask"])
                for batch in self.batches(records)]
        return jax.tree.map(lambda *xs: np.concatenate([x[m] for x, (_, m) in
                                                        zip(xs, outs, strict=True)]),
                            *[o for o, _ in outs])

    # The API ---------------------------------------------------------------------------------

    def predict(self, examples, *, root: str | None = None) -> dict:
        """Predictions for raw examples; see `decode` for what is returned."""
        return self.decode(self._map(self._forward, examples, root))

    def predict_batch(self, batch) -> dict:
        """`decode`d predictions for a pipeline batch (padding rows included). Segmentation
        batches with `label_hw` (labels at their own sizes) give each mask at its label's size,
        resized as the eval step does."""
        prediction = self._forward(self._state, self.model_inputs(batch))
        if self.info.task == "segmentation" and "label_hw" in batch:
            from mango_jax.train.step import resize_to_label_sizes

            hw = np.asarray(batch["label_hw"])
            canvas = resize_to_label_sizes(prediction, jnp.asarray(hw), batch["label"].shape)
            masks = np.asarray(jnp.argmax(canvas, axis=-1), np.int32)
            return {"masks": [m[:h, :w] for m, (h, w) in zip(masks, hw, strict=True)]}
        return self.decode(np.asarray(jax.device_get(prediction)))

    def features(self, examples, *, root: str | None = None):
        """The scale-fixed latent tokens `(F_A [B, M, D], F_B [B, K, D])` G or a baseline sees."""
        return self._map(self._features, examples, root)

    def log_likelihood(self, examples, *, root: str | None = None) -> np.ndarray:
        """`[B]` log p(F) in nats under a flow fusion (MANGO: log N(G(F)) + log|det ∂G/∂F|)."""
        if not hasattr(self.model.fusion, "log_likelihood"):
            raise ValueError(f"fusion {self.config.model.fusion.name!r} is not a flow: it has "
                             "no likelihood")
        return self._map(self._log_likelihood, examples, root)

    def decode(self, prediction: np.ndarray) -> dict:
        """Model outputs -> {'probabilities' [B, C] and 'classes' (names, multi-class) or
        'labels' (lists of names with p > 0.5, multi-label); 'masks' [B, H, W] int32 at the
        label size (segmentation); 'images' [B, H, W, 3] in [-1, 1] (translation)}."""
        task = self.info.task
        if task == "multiclass":
            p = np.asarray(jax.nn.softmax(prediction, axis=-1))
            return {"probabilities": p,
                    "classes": [self.class_names[i] for i in np.argmax(p, axis=-1)]}
        if task == "multilabel":
            p = np.asarray(jax.nn.sigmoid(prediction))
            return {"probabilities": p, "labels": [[self.class_names[i] for i in np.flatnonzero(
                row > 0.5)] for row in p]}
        if task == "segmentation":
            return {"masks": np.asarray(segmentation.predict_labels(
                jnp.asarray(prediction), self.info.eval_label_shape[:2]))}
        return {"images": np.clip(prediction, -1.0, 1.0)}


def load(workdir: str, checkpoint: str = "best") -> Predictor:
    """The trained model of the run in `workdir` at its `best` or `latest` checkpoint."""
    from mango_jax.train.loop import build_model

    config, info = read_run(workdir)
    step = checkpoint_step(workdir, config, checkpoint)
    # Built for real (as the run built it: its `nn.Constant`s, such as LICA's permutations,
    # come from the config; `nnx.eval_shape` would also be slower at the paper's size); its
    # parameters then come from the checkpoint, and its dropout RNG streams stay fresh.
    with jax.default_device(jax.devices()[0]):
        graphdef, params, rest = nnx.split(build_model(inference_config(config), info),
                                           nnx.Param, ...)
        model = nnx.merge(graphdef, restore_params(workdir, step, params), rest)
    return Predictor(config, info, model, step)
