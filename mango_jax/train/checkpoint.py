"""Checkpoints with orbax: model + optimiser + step + RNG state, and the grain iterator.

Saves are asynchronous; `close()` waits for the last one, so a process that exits through
it never leaves a partial checkpoint behind (orbax writes into a temporary folder and
renames it when complete). The newest `keep` checkpoints and the best one by `best_metric`
are preserved.

Multi-host: every process calls `save` and `restore`; orbax writes each array's shards from the
processes that hold them, and grain writes one iterator state per process
(`data/process_<i>-of-<n>.json`). A training iterator's state counts global batches and is the
same in every process, so a checkpoint also restores on a different number of processes.
"""

from __future__ import annotations

import json
import os

import grain
import jax
import orbax.checkpoint as ocp
from flax import nnx
from orbax.checkpoint.checkpoint_managers import preservation_policy as policy

from mango_jax.data.pipeline import TrainIterator


def _is_key(x) -> bool:
    return hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def to_saveable(state: nnx.State) -> dict:
    """A pure dict of arrays; typed PRNG keys become their raw `uint32` data."""
    return jax.tree.map(lambda x: jax.random.key_data(x) if _is_key(x) else x,
                        nnx.to_pure_dict(state))


def from_saveable(target: nnx.State, restored: dict) -> nnx.State:
    """Puts restored arrays into `target` (a state of the same structure), rewrapping keys."""
    target_dict = nnx.to_pure_dict(target)
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

    return jax.tree.map(spec, nnx.to_pure_dict(target))


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
        """`(step, state)` from checkpoint `step` (default: the latest), or None if none.
        With `data_iter`, the iterator is set to continue where the saved one stopped."""
        step = self.manager.latest_step() if step is None else step
        if step is None:
            return None
        items = {"state": ocp.args.StandardRestore(_abstract(state))}
        other_topology = None
        if data_iter is not None:
            other_topology = self._data_state_of_other_topology(step, data_iter)
            if other_topology is None:
                items["data"] = grain.checkpoint.CheckpointRestore(data_iter)
        restored = self.manager.restore(step, args=ocp.args.Composite(**items))
        if other_topology is not None:
            data_iter.set_state(other_topology)
        return step, from_saveable(state, restored["state"])

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
