"""Checkpoints hold what training changes, not the config's `nn.Constant`s: a run restores
into the model its config builds, whether it was saved with or without such arrays, and with
its repeated blocks stored one by one or stacked."""

from __future__ import annotations

import os

import chex
import grain
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from flax import nnx

from mango_jax import flows
from mango_jax.flows import checks
from mango_jax.nn import Constant
from mango_jax.train.checkpoint import Checkpointer
from tests.flows.flowtest import inputs, small_config


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


def test_a_run_saved_before_scanned_blocks_were_stored_stacked_restores(tmp_path):
    """A `flow.scan` run saved its blocks one by one, as the unrolled flow holds them; the
    model its config builds now stores them stacked. Parameters and Adam's moments restore into
    the stacked layout, block by block."""
    # An odd width: the couplings' halves differ, so G stacks pairs and runs a fifth block after.
    config = small_config(num_blocks=5, block_pattern=("mmca_ab", "lica", "coupling"),
                          scan=False, dim=11, num_heads=1)
    saved = checks.perturb(flows.build(config, rngs=nnx.Rngs(0)), jax.random.key(1))
    optimizer = nnx.Optimizer(saved, optax.adam(0.1), wrt=nnx.Param)
    grads = nnx.grad(lambda flow: jnp.sum(flow(inputs(shape=(2, 12, 11)))[0] ** 2))(saved)
    optimizer.update(saved, grads)
    directory = str(tmp_path / "checkpoints")
    _save(directory, nnx.Dict(model=saved, optimizer=optimizer))

    config.scan = True
    model = flows.build(config, rngs=nnx.Rngs(2))
    target = nnx.Dict(model=model, optimizer=nnx.Optimizer(model, optax.adam(0.1),
                                                          wrt=nnx.Param))
    graphdef, state = nnx.split(target)
    _, restored = Checkpointer(directory).restore(state)
    restored = nnx.merge(graphdef, restored)
    for got, want in zip(restored.model.children(), saved.layers, strict=True):
        chex.assert_trees_all_equal(nnx.state(got), nnx.state(want))
    period, count = len(restored.model.stacked), len(restored.model.children())
    mu, saved_mu = restored.optimizer.opt_state[0].mu, optimizer.opt_state[0].mu
    remainder_checked = False
    for block in range(count):
        want = saved_mu["layers"][block]["layers"][2]["conditioner"]["out"]["bias"][...]
        if block < period * restored.model.repeats:
            got = mu["stacked"][block % period]["layers"][2]["conditioner"]["out"]["bias"][...]
            got = got[block // period]
        else:
            got = mu["layers"][block - period * restored.model.repeats]["layers"][2][
                "conditioner"]["out"]["bias"][...]
            remainder_checked = True
        np.testing.assert_array_equal(got, want)
        assert np.any(want != 0)
    assert remainder_checked  # the last block runs after the stacked pairs


class Replicated(nnx.Module):
    def __init__(self, seed: int):
        small, large = jax.random.split(jax.random.key(seed))
        self.small = nnx.Param(jax.random.normal(small, (512, 1024)))  # 256 KiB per replica
        self.large = nnx.Param(jax.random.normal(large, (2048, 1024)))  # 1 MiB per replica


def test_replicated_arrays_are_split_among_replicas_only_when_large(tmp_path, caplog):
    """A save traces and compiles one slice program per device for each array it splits among
    replicas (orbax's replica-parallel write): worth it for large arrays only."""
    assert jax.device_count() == 8
    sharding = jax.NamedSharding(jax.make_mesh((8,), ("data",)), jax.P())
    state = jax.device_put(nnx.state(Replicated(seed=0)), sharding)
    with jax.log_compiles(True), caplog.at_level("WARNING"):
        checkpointer = Checkpointer(str(tmp_path / "checkpoints"))
        checkpointer.save(1, state, _iterator())
        checkpointer.close()
    sliced = [r.getMessage() for r in caplog.records if "Compiling jit(slice)" in r.getMessage()]
    assert sliced and all("float32[2048,1024]" in m for m in sliced), sliced

    target = nnx.state(Replicated(seed=1))  # other values, which the restore must replace
    step, restored = Checkpointer(str(tmp_path / "checkpoints")).restore(target)
    assert step == 1
    for name in ("small", "large"):
        np.testing.assert_array_equal(restored[name][...], state[name][...])
