"""Checkpoints with orbax: model + optimiser + step + RNG state, and the grain iterator.
The config's `nn.Constant`s are not saved: the model built to restore into has them.

Saves are asynchronous; `close()` waits for the last one, so a process that exits through
it never leaves a partial checkpoint behind (orbax writes into a temporary folder and
renames it when complete). The newest `keep` checkpoints and the best one by `best_metric`
are preserved.

A checkpoint that cannot be read (a file overwritten or cut short) is named in one line (step,
path, what failed) and `restore` falls back to the newest readable one; `set_aside` then moves
the unreadable ones beside the others (`<step>.unreadable`), so that they are kept for
inspection, a new save of their step does not collide with them, and the keep-last-N policy
counts only readable checkpoints.

Multi-host: every process calls `save` and `restore`; orbax writes each array's shards from the
processes that hold them, and grain writes one iterator state per process
(`data/process_<i>-of-<n>.json`). A training iterator's state counts global batches and is the
same in every process, so a checkpoint also restores on a different number of processes.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os

import grain
import jax
import orbax.checkpoint as ocp
from flax import nnx
from jax.experimental import multihost_utils
from orbax.checkpoint.checkpoint_managers import preservation_policy as policy

from mango_jax.data.pipeline import TrainIterator
from mango_jax.nn import Constant
from mango_jax.nn.stacked import restack

# Orbax saves a replicated array "replica-parallel" by default: each replica writes a slice, and
# every slice is an eager op traced, lowered and compiled once per device and shape. For a model
# of small arrays on 8 devices that is about 140 programs and 5 s at a run's first save, to
# split writes of a few KiB. Arrays whose slice per replica would be under 1 MiB are written
# whole by one replica; large arrays on a pod are still split. (Orbax logs a warning for any
# override of its handler; this one is intended, so the absl logger is quiet meanwhile.)
MIN_REPLICA_SLICE_BYTES = 1 << 20


def _split_only_large_arrays() -> None:
    absl_logger = logging.getLogger("absl")
    level = absl_logger.level
    absl_logger.setLevel(logging.ERROR)
    try:
        ocp.type_handlers.register_type_handler(
            jax.Array, ocp.type_handlers.ArrayHandler(
                min_slice_bytes_for_replica_parallel=MIN_REPLICA_SLICE_BYTES), override=True)
    finally:
        absl_logger.setLevel(level)


_split_only_large_arrays()


def _is_key(x) -> bool:
    return hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _saved(state: nnx.State) -> dict:
    """The pure dict of what a checkpoint holds: all but the config's `Constant`s."""
    return nnx.to_pure_dict(state.filter(nnx.Not(Constant)))


def to_saveable(state: nnx.State) -> dict:
    """A pure dict of arrays; typed PRNG keys become their raw `uint32` data."""
    return jax.tree.map(lambda x: jax.random.key_data(x) if _is_key(x) else x, _saved(state))


def from_saveable(target: nnx.State, restored: dict) -> nnx.State:
    """Puts restored arrays into `target` (a state of the same structure), rewrapping keys;
    its `Constant`s stay as built."""
    target_dict = _saved(target)
    restored = jax.tree.map(
        lambda t, r: jax.random.wrap_key_data(r, impl=jax.random.key_impl(t)) if _is_key(t)
        else r, target_dict, restored)
    state = jax.tree.map(lambda x: x, target)
    nnx.replace_by_pure_dict(state, restored)
    return state


def _abstract(target: nnx.State) -> dict:
    """Shapes, dtypes and shardings to restore onto (the current device layout)."""
    def spec(x):
        x = jax.random.key_data(x) if _is_key(x) else x
        return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None))

    return jax.tree.map(spec, _saved(target))


class CheckpointError(RuntimeError):
    """A run has no checkpoint to evaluate, or none of its checkpoints can be read."""


@dataclasses.dataclass
class UnreadableCheckpoint:
    step: int
    path: str
    reason: str

    def __str__(self) -> str:
        return f"checkpoint step {self.step} at {self.path} cannot be read: {self.reason}"


def _summary(error: Exception) -> str:
    """The error's type and the first line of its message (TensorStore's run to pages)."""
    lines = str(error).strip().splitlines()
    text = lines[0].split(". See full TensorStore details")[0] if lines else ""
    return f"{type(error).__name__}: {text[:300]}" if text else type(error).__name__


class Checkpointer:
    """`save(step, state, data_iter, metrics)`, `restore(state, data_iter)`, `close()`."""

    def __init__(self, directory: str, *, keep: int = 2, best_metric: str | None = None,
                 best_mode: str = "max"):
        if best_mode not in ("max", "min"):
            raise ValueError(f"best_mode must be 'max' or 'min', got {best_mode!r}")
        policies = [policy.LatestN(n=keep)]
        if best_metric:
            policies.append(policy.BestN(
                get_metric_fn=lambda metrics: metrics[best_metric], reverse=best_mode == "min",
                n=1, keep_checkpoints_without_metrics=False))
        self.step_format = ocp.step.standard_name_format()
        options = ocp.CheckpointManagerOptions(
            preservation_policy=policy.AnyPreservationPolicy(policies),
            step_name_format=self.step_format, enable_async_checkpointing=True, create=True)
        self.best_metric = best_metric
        self.unreadable: list[UnreadableCheckpoint] = []  # of the last `restore`
        self.manager = ocp.CheckpointManager(os.path.abspath(directory), options=options,
                                             item_names=("state", "data"))

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state: nnx.State, data_iter, metrics: dict | None = None) -> None:
        if metrics is not None and self.best_metric not in metrics:
            metrics = None
        self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(to_saveable(state)),
            data=grain.checkpoint.CheckpointSave(data_iter)), metrics=metrics, force=True)

    def restore(self, state: nnx.State, data_iter=None, step: int | None = None):
        """`(step, state)` from checkpoint `step`, or by default from the newest checkpoint that
        can be read; None if there is none. With `data_iter`, the iterator is set to continue
        where the saved one stopped. Checkpoints that could not be read are in `unreadable`;
        CheckpointError when there are checkpoints and none can be read."""
        steps = sorted(self.manager.all_steps(), reverse=True) if step is None else [step]
        self.unreadable = []
        for s in steps:
            try:
                return s, self._restore(s, state, data_iter)
            except Exception as e:  # orbax and TensorStore raise many kinds for a broken file
                self.unreadable.append(UnreadableCheckpoint(s, str(self._path(s)), _summary(e)))
        if self.unreadable:
            raise CheckpointError(
                "no checkpoint can be read:\n" + "\n".join(map(str, self.unreadable)) +
                "\nIf every one fails, the config builds another model than the one saved "
                "(compare it with the run's config.json); else restore the files or move the "
                "folders away to start afresh.")
        return None

    def _path(self, step: int):
        return self.step_format.find_step(self.manager.directory, step).path

    def _restore(self, step: int, state: nnx.State, data_iter) -> nnx.State:
        items = {"state": ocp.args.StandardRestore(_abstract(state))}
        other_topology = None
        if data_iter is not None:
            other_topology = self._data_state_of_other_topology(step, data_iter)
            if other_topology is None:
                items["data"] = grain.checkpoint.CheckpointRestore(data_iter)
        try:
            restored = self.manager.restore(step, args=ocp.args.Composite(**items))["state"]
        except Exception as error:
            restored = self._restacked(step, state)
            if restored is None:
                raise error
            if "data" in items:
                self.manager.restore(step, args=ocp.args.Composite(data=items["data"]))
        if other_topology is not None:
            data_iter.set_state(other_topology)
        return from_saveable(state, restored)

    def _restacked(self, step: int, state: nnx.State) -> dict | None:
        """Checkpoint `step` as saved, put in the layout of `state` where the model now stores
        repeated layers stacked (`nn.stacked.restack`: runs saved before G's scanned blocks
        were stored stacked) and onto its devices; None when that is not the difference."""
        target = _abstract(state)
        try:
            saved = self.manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore()))["state"]
            restacked = restack(saved, target)
        except Exception:  # unreadable, or another layout: the caller reports the first error
            return None
        if jax.tree.structure(restacked) != jax.tree.structure(target) or any(
                r.shape != t.shape for r, t in zip(jax.tree.leaves(restacked),
                                                   jax.tree.leaves(target), strict=True)):
            return None
        return jax.tree.map(lambda r, t: jax.device_put(r, t.sharding).astype(t.dtype),
                            restacked, target)

    def set_aside(self) -> list[str]:
        """Renames the unreadable checkpoints of the last `restore` to `<step>.unreadable`
        (`-2`, ... when that exists; process 0, the others wait) and returns the new paths."""
        moved = []
        for bad in self.unreadable:
            target, n = f"{bad.path}.unreadable", 1
            while os.path.exists(target):  # one set aside before at this step
                n += 1
                target = f"{bad.path}.unreadable-{n}"
            if jax.process_index() == 0:
                os.replace(bad.path, target)
            moved.append(target)
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices("mango_jax: unreadable checkpoints set aside")
        self.manager.reload()
        return moved

    def _data_state_of_other_topology(self, step: int, data_iter) -> dict | None:
        """The saved iterator state when checkpoint `step` was written by another number of
        processes (any process's state: they are all equal); None when it matches this job."""
        folder = self.step_format.find_step(self.manager.directory, step).path / "data"
        index, count = jax.process_index(), jax.process_count()
        if (folder / f"process_{index}-of-{count}.json").exists():
            return None
        saved = sorted(folder.glob("process_*-of-*.json"))
        if not saved:
            raise FileNotFoundError(f"checkpoint {folder.parent} has no data iterator state")
        if not isinstance(data_iter, TrainIterator):
            raise ValueError(
                f"checkpoint {folder.parent} was written by {saved[0].stem.split('-of-')[1]} "
                f"process(es) and this job has {count}; only a training iterator "
                "(mango_jax.data.make_iterator(..., train=True)) resumes on another process "
                "count. Run with the original number of processes.")
        return json.loads(saved[0].read_text())

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
