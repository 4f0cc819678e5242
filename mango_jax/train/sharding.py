"""Device mesh and shardings: a data axis, and an optional fsdp axis for parameters."""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXES = ("data", "fsdp")


def make_mesh(fsdp: int = 1) -> jax.sharding.Mesh:
    """All devices as a `(data, fsdp)` mesh; batches are split over both axes."""
    count = jax.device_count()
    if fsdp < 1 or count % fsdp:
        raise ValueError(f"mesh.fsdp={fsdp} must divide the {count} devices")
    return jax.make_mesh((count // fsdp, fsdp), DATA_AXES,
                         axis_types=(jax.sharding.AxisType.Auto,) * 2)


def batch_sharding(mesh) -> NamedSharding:
    """Leading (batch) axis split over every device."""
    return NamedSharding(mesh, P(DATA_AXES))


def replicated(mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def state_shardings(mesh, abstract_state, *, min_size: int = 2 ** 14):
    """Parameters and optimiser moments: replicated, or with fsdp > 1 split along their
    largest axis divisible by the fsdp size (small arrays stay replicated)."""
    fsdp = mesh.shape["fsdp"]

    def spec(x):
        shape = getattr(x, "shape", ())
        if fsdp == 1 or int(np.prod(shape)) < min_size:
            return replicated(mesh)
        for axis in np.argsort(shape)[::-1]:
            if shape[axis] % fsdp == 0:
                parts = [None] * len(shape)
                parts[axis] = "fsdp"
                return NamedSharding(mesh, P(*parts))
        return replicated(mesh)

    return jax.tree.map(spec, abstract_state)


def global_batch(local_batch, sharding: NamedSharding):
    """One global array per entry from this process's part of the batch (multi-host ready)."""
    return jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), local_batch)
