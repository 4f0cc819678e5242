"""Checkpoints with orbax: model + optimiser + step + RNG state, and the grain iterator.

Saves are asynchronous; `close()` waits for the last one, so a process that exits through
it never leaves a partial checkpoint behind (orbax writes into a temporary folder and
renames it when complete). The newest `keep` checkpoints and the best one by `best_metric`
are preserved.
"""

from __future__ import annotations

import os

import grain
import jax
import orbax.checkpoint as ocp
from flax import nnx
from orbax.checkpoint.checkpoint_managers import preservation_policy as policy


def _is_key(x) -> bool:
    return hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def to_saveable(state: nnx.State) -> dict:
    """A pure dict of arrays; typed PRNG keys become their raw `uint32` data."""
    return jax.tree.map(lambda x: jax.random.key_data(x) if _is_key(x) else x,
                        state.to_pure_dict())


def from_saveable(target: nnx.State, restored: dict) -> nnx.State:
    """Puts restored arrays into `target` (a state of the same structure), rewrapping keys."""
    target_dict = target.to_pure_dict()
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

    return jax.tree.map(spec, target.to_pure_dict())


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
        options = ocp.CheckpointManagerOptions(
            preservation_policy=policy.AnyPreservationPolicy(policies),
            enable_async_checkpointing=True, create=True)
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
        if data_iter is not None:
            items["data"] = grain.checkpoint.CheckpointRestore(data_iter)
        restored = self.manager.restore(step, args=ocp.args.Composite(**items))
        return step, from_saveable(state, restored["state"])

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
