"""Checkpoints hold what training changes, not the config's `nn.Constant`s: a run restores
into the model its config builds, whether it was saved with or without such arrays."""

from __future__ import annotations

import os

import grain
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from mango_jax.nn import Constant
from mango_jax.train.checkpoint import Checkpointer


class WithConstant(nnx.Module):
    def __init__(self, seed: int):
        self.perm = Constant(jnp.asarray(np.random.default_rng(seed).permutation(5), jnp.int32))
        self.weight = nnx.Param(jnp.full((3,), float(seed)))


class WithoutConstant(nnx.Module):  # the same module before `perm` became state
    def __init__(self, seed: int):
        self.weight = nnx.Param(jnp.full((3,), float(seed)))


def _iterator():
    return iter(grain.MapDataset.range(8).to_iter_dataset())


def _save(directory, module) -> None:
    checkpointer = Checkpointer(directory)
    checkpointer.save(1, nnx.state(module), _iterator())
    checkpointer.close()


def test_constants_are_not_saved_and_come_from_the_model_restored_into(tmp_path):
    directory = str(tmp_path / "checkpoints")
    _save(directory, WithConstant(seed=1))
    saved = ocp.PyTreeCheckpointer().metadata(os.path.join(directory, "1", "state"))
    assert set(saved.item_metadata.tree) == {"weight"}

    target = WithConstant(seed=2)  # what a config with another seed builds
    assert not np.array_equal(target.perm[...], WithConstant(seed=1).perm[...])
    step, state = Checkpointer(directory).restore(nnx.state(target))
    assert step == 1
    np.testing.assert_array_equal(state["weight"][...], np.full(3, 1.0))
    np.testing.assert_array_equal(state["perm"][...], target.perm[...])
    assert state["perm"][...].dtype == jnp.int32


def test_a_checkpoint_from_before_an_array_became_a_constant_restores(tmp_path):
    directory = str(tmp_path / "checkpoints")
    _save(directory, WithoutConstant(seed=3))
    target = WithConstant(seed=4)
    _, state = Checkpointer(directory).restore(nnx.state(target))
    np.testing.assert_array_equal(state["weight"][...], np.full(3, 3.0))
    np.testing.assert_array_equal(state["perm"][...], target.perm[...])
