"""The training job: build, resume, train with periodic eval and checkpoints, report.

Every process runs this; only process 0 prints and writes files (checkpoints are written by
all, through orbax). Each process reads its slice of every global batch (`data.make_iterator`)
and the global batch is assembled from the process-local parts, so the same code runs on one
CPU, a GPU box or a TPU pod slice, and the training data does not depend on the process count.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils

from mango_jax import data, migrate
from mango_jax.fusion.base import FusionModule
from mango_jax.metrics import make_evaluator
from mango_jax.metrics.inception import make_fid_features_fn
from mango_jax.model import MultimodalModel
from mango_jax.predict import save_dataset_json
from mango_jax.results import Results
from mango_jax.train import distributed, plots
from mango_jax.train.checkpoint import Checkpointer, CheckpointError
from mango_jax.train.optim import make_optimizer
from mango_jax.train.sharding import batch_sharding, global_batch, make_mesh, state_shardings
from mango_jax.train.step import StepConfig, make_eval_step, make_train_step
from mango_jax.train.writers import MetricWriter, Progress


class NonFiniteLossError(FloatingPointError):
    """Raised when a training step produced a NaN or Inf loss."""


def is_main_process() -> bool:
    return jax.process_index() == 0


def log(message: str) -> None:
    if is_main_process():
        print(message, flush=True)


def prepare_data(data_config) -> None:
    """Prepares the dataset where it can be (mfeat): process 0 first, then, once it is done,
    every other process, which finds it ready on a shared file system or prepares its own."""
    if is_main_process():
        data.ensure_prepared(data_config)
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices("mango_jax: data prepared")
        data.ensure_prepared(data_config)


_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


@contextlib.contextmanager
def compile_clock():
    """Yields a dict whose `compile_s` grows by the seconds XLA spends compiling programs
    (train, eval and every other jit; JAX's backend-compile events) while the context is open:
    how much of a short run's wall time is compilation."""
    clock = {"compile_s": 0.0}

    def listen(event: str, seconds: float, **_):
        if event == _COMPILE_EVENT:
            clock["compile_s"] += seconds

    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        yield clock
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)


def total_steps(config, info) -> int:
    if config.num_steps:
        return int(config.num_steps)
    return int(config.num_epochs * info.split_sizes["train"] // config.batch_size)


def per_process(global_size: int, what: str) -> int:
    processes, devices = jax.process_count(), jax.device_count()
    if global_size % devices:
        raise ValueError(f"{what}={global_size} must be divisible by the {devices} devices")
    return global_size // processes


def build_model(config, info):
    return MultimodalModel(config.model, info, config.data.modalities,
                           rngs=nnx.Rngs(params=config.seed, dropout=config.seed + 1))


def parameter_counts(model) -> dict[str, int]:
    def count(module):
        return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(module, nnx.Param)))

    parts = {"encoder_a": model.encoder_a, "encoder_b": model.encoder_b,
             "fusion": model.fusion, "heads": model.heads}
    counts = {name: count(module) for name, module in parts.items()}
    counts["total"] = sum(counts.values())
    return counts


class Trainer:
    """Owns the model state, the steps and the data iterators of one run."""

    def __init__(self, config, workdir: str):
        self.config, self.workdir = config, workdir
        prepare_data(config.data)
        os.makedirs(workdir, exist_ok=True)
        if is_main_process():
            with open(os.path.join(workdir, "config.json"), "w") as f:
                f.write(migrate.config_json(config))
        self.info = data.dataset_info(config.data)
        if is_main_process():  # What mango_jax.load needs besides config.json.
            save_dataset_json(workdir, self.info)
        self.steps = total_steps(config, self.info)
        self.mesh = make_mesh(config.mesh.fsdp)
        self.batch_sharding = batch_sharding(self.mesh)
        if config.batch_size % (config.optimizer.grad_accum_steps * jax.device_count()):
            raise ValueError(f"batch_size={config.batch_size} must be divisible by "
                             "grad_accum_steps × devices")
        self.checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"),
                                         keep=config.keep_checkpoints,
                                         best_metric=config.best_metric,
                                         best_mode=config.best_mode)
        self.train_iter = data.make_iterator(
            config.data, "train", batch_size=per_process(config.batch_size, "batch_size"),
            train=True, seed=config.data.seed)
        model = build_model(config, self.info)
        self.param_counts = parameter_counts(model)
        # A fresh run initialises data-dependent parameters (Glow's ActNorm) from its first
        # global batch, which step 1 then trains on; a resumed run skips this and restores.
        self.first_batch = None
        if self.checkpointer.latest_step() is None:
            self.first_batch = global_batch(next(self.train_iter), self.batch_sharding)
            model.data_init(self.first_batch)
        tx, schedule = make_optimizer(config.optimizer, self.steps, model, pretrained=[
            m for m, path in config.model.encoder.pretrained.items() if path])
        optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
        self.graphdef, state = nnx.split((model, optimizer))
        self.state_sharding = state_shardings(self.mesh, state)
        self.state = distributed.place(state, self.state_sharding)
        step_config = StepConfig(task=self.info.task, ignore_index=self.info.ignore_index,
                                 compute_dtype=config.compute_dtype,
                                 grad_accum_steps=config.optimizer.grad_accum_steps)
        self.train_step = make_train_step(self.graphdef, step_config, schedule, mesh=self.mesh,
                                          state_sharding=self.state_sharding,
                                          parallelism=config.parallelism)
        features = (make_fid_features_fn(config.inception_weights)
                    if config.get("inception_weights") else None)
        self.evaluator = make_evaluator(self.info.task, num_classes=self.info.num_classes,
                                        ignore_index=self.info.ignore_index,
                                        fid_features_fn=features)
        self.eval_step = make_eval_step(self.graphdef, step_config, self.evaluator,
                                        state_sharding=self.state_sharding)
        self.writer = MetricWriter(workdir, active=is_main_process())
        self.step = 0

    @property
    def model(self):
        return nnx.merge(self.graphdef, self.state)[0]

    def resume(self, *, set_aside_unreadable: bool = True) -> bool:
        """Restores the newest readable checkpoint; False if there is none. Unreadable newer
        ones are reported and, unless `set_aside_unreadable` is False (evaluation only), moved
        aside, so that training on does not collide with them."""
        restored = self.checkpointer.restore(self.state, self.train_iter)
        if restored is None:
            return False
        self.step, state = restored
        self.state = jax.device_put(state, self.state_sharding)
        unreadable = self.checkpointer.unreadable
        for bad in unreadable:
            log(f"warning: {bad}")
        if unreadable:
            where = ""
            if set_aside_unreadable:
                where = "; kept as " + ", ".join(self.checkpointer.set_aside())
            log(f"warning: using checkpoint step {self.step} instead, the newest that can be "
                f"read{where}")
        return True

    def evaluate(self, split: str) -> dict[str, float]:
        it = data.make_iterator(self.config.data, split, train=False, seed=0,
                                batch_size=per_process(self.config.eval_batch_size,
                                                       "eval_batch_size"))
        eval_state, sums = self.evaluator.init(), None
        for batch in it:
            eval_state, batch_sums = self.eval_step(self.state, eval_state,
                                                    global_batch(batch, self.batch_sharding))
            sums = batch_sums if sums is None else jax.tree.map(jnp.add, sums, batch_sums)
        if hasattr(it, "close"):
            it.close()
        sums = jax.device_get(sums)
        count = max(float(sums.pop("count")), 1.0)
        metrics = {k: float(v) / count for k, v in sums.items()}
        metrics.update(self.evaluator.finalize(eval_state))
        return metrics

    def run_until(self, stop_step: int) -> None:
        """Trains from the current step to `stop_step`, logging, evaluating and saving on the
        config's schedule. A run stopped here and resumed later continues bit for bit."""
        config = self.config
        progress = Progress(self.steps, config.batch_size, self.step, active=is_main_process())
        pending: list[tuple[int, dict]] = []
        last_eval: dict[str, float] | None = None
        while self.step < stop_step:
            batch, self.first_batch = self.first_batch, None
            if batch is None:
                batch = global_batch(next(self.train_iter), self.batch_sharding)
            self.state, logs = self.train_step(self.state, batch)
            self.step += 1
            pending.append((self.step, logs))
            step, last = self.step, self.step in (stop_step, self.steps)
            if step % config.log_every == 0 or last:
                host = self.check_finite(pending)
                pending = []
                mean = {k: float(np.mean([float(h[k]) for _, h in host])) for k in host[-1][1]}
                self.writer.write(step, "train", mean)
                progress.update(step, mean)
            evaluated = bool(config.eval_every) and (step % config.eval_every == 0 or last)
            if evaluated:
                last_eval = self.evaluate("val")
                self.writer.write(step, "val", last_eval)
                log(f"  step {step} val: " + "  ".join(
                    f"{k} {v:.4f}" for k, v in sorted(last_eval.items())))
            if step % config.checkpoint_every == 0 or last:
                self.check_finite(pending)
                self.checkpointer.save(step, self.state, self.train_iter,
                                       last_eval if evaluated else None)

    def close(self) -> None:
        """Waits for the last checkpoint save and closes the writers."""
        self.checkpointer.close()
        self.writer.close()

    def check_finite(self, pending: list[tuple[int, dict]]) -> list[tuple[int, dict]]:
        """Host copies of pending step logs; the first non-finite loss stops the run."""
        host = [(step, jax.device_get(logs)) for step, logs in pending]
        for step, logs in host:
            if not math.isfinite(float(logs["loss"])):
                last = self.checkpointer.latest_step()
                kept = (f"The last good checkpoint (step {last}) is intact in {self.workdir}."
                        if last is not None else "No checkpoint had been written yet.")
                raise NonFiniteLossError(
                    f"non-finite loss {float(logs['loss'])} at step {step}; training stopped. "
                    f"{kept} Lower optimizer.learning_rate, raise warmup_steps, or use float32 "
                    "compute.")
        return host


def train(config, workdir: str) -> Trainer:
    """Trains to `total_steps`, resuming from the latest checkpoint in `workdir`."""
    trainer = Trainer(config, workdir)
    if trainer.resume():
        log(f"Resumed from step {trainer.step} in {workdir}")
    log("Parameters: " + ", ".join(f"{k} {v:,}" for k, v in trainer.param_counts.items()))
    try:
        trainer.run_until(trainer.steps)
    finally:
        trainer.close()
    return trainer


def evaluate_and_report(trainer: Trainer, workdir: str, *, train_time: float | None,
                        clock: dict | None = None, start: float | None = None) -> Results:
    """Evaluates every split, writes results.json (`mango_jax.results.Results`) and the plots
    (process 0). What is particular to the fusion method is what its `describe()` and
    `diagnostics()` return (FusionModule). `wall_time_s` (from `start`, a
    `time.perf_counter()`) and `compile_s` (`compile_clock`'s) cover the run up to writing
    results.json."""
    config = trainer.config
    eval_start = time.perf_counter()
    splits = {split: trainer.evaluate(split) for split in config.eval_splits}
    eval_time = time.perf_counter() - eval_start
    writer = MetricWriter(workdir, active=is_main_process())
    for split, metrics in splits.items():
        writer.write(trainer.step, f"final_{split}", metrics)
    writer.close()
    fusion = trainer.model.fusion
    results = Results(
        experiment=config.experiment, fusion=config.model.fusion.name, splits=splits,
        fusion_details=fusion.describe(), latent_model=bool(config.model.latent_model),
        sources=list(config.data.modalities),
        target=config.data.get("target") or trainer.info.task, variant=config.get("variant"),
        params=trainer.param_counts["total"], steps=trainer.step, train_time_s=train_time,
        eval_time_s=eval_time, devices=devices(),
        config=json.loads(migrate.config_json(config)))
    if type(fusion).diagnostics is not FusionModule.diagnostics:
        # Process 0 runs the hook alone, so it computes on a host copy of parameters that may be
        # split over every process's devices (gathering them is a collective: all processes
        # call it).
        graphdef, model_state = nnx.split(trainer.model)
        model = nnx.merge(graphdef, distributed.host_copy(model_state))
        if is_main_process():
            batch = next(iter(data.make_iterator(config.data, "val", batch_size=2, train=False,
                                                 seed=0, shard_by_process=False)))
            results.diagnostics = model.fusion.diagnostics(model, batch, workdir, splits)
    if start is not None:
        results.wall_time_s = time.perf_counter() - start
    if clock is not None:
        results.compile_s = clock["compile_s"]
    if is_main_process():
        results.save(os.path.join(workdir, "results.json"))
        plots.plot_curves(workdir, sorted(trainer.evaluator.finalize(trainer.evaluator.init())))
    return results


def devices() -> dict:
    """The devices a run used, for its results."""
    device = jax.devices()[0]
    return {"platform": device.platform, "kind": device.device_kind,
            "count": jax.device_count(), "processes": jax.process_count()}


def run(config, workdir: str, mode: str = "train_and_eval") -> Results | None:
    if mode not in ("train", "eval", "train_and_eval"):
        raise ValueError(f"mode={mode!r}; expected train, eval or train_and_eval")
    start = time.perf_counter()
    with compile_clock() as clock:
        if mode == "eval":
            trainer = Trainer(config, workdir)
            if not trainer.resume(set_aside_unreadable=False):
                raise CheckpointError(f"no checkpoint in {workdir}/checkpoints to evaluate; "
                                      "train first (--mode=train_and_eval)")
            trainer.close()
            results = evaluate_and_report(trainer, workdir, train_time=None, clock=clock,
                                          start=start)
        else:
            trainer = train(config, workdir)
            results = None if mode == "train" else evaluate_and_report(
                trainer, workdir, train_time=time.perf_counter() - start, clock=clock,
                start=start)
    log(f"Wall time {time.perf_counter() - start:.1f} s, of which XLA compilation "
        f"{clock['compile_s']:.1f} s")
    return results

