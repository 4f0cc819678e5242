r"""Where the train step's compile time goes: MANGO with G unrolled and scanned, the transformer
fusion beside it, and the optimiser's update alone for each.

    python -m experiments.compile_profile                                 # paper_nyudv2
    python -m experiments.compile_profile --config=experiments/mfeat.py   # any MANGO config

For each model this lowers and compiles the project's train step (`make_train_step`, as
`experiments.bench` does) and, apart from it, the optimiser's update of the same parameters
(the setting's optax chain, gradients as an input, state donated), and prints the seconds of
each with the parameter count and the number of parameter arrays. The update runs a few
fused operations per array, so its compile time follows the number of arrays, not their size.
With `flow.scan` (the default) G stores its repeated blocks stacked and runs them as one
`lax.scan`: XLA compiles one block's body instead of L, and the update has one array per
layer and position in a block instead of one per block; the unrolled row (`flow.scan=False`)
shows what that saves. Run on an idle machine: every figure is a wall time.
"""

from __future__ import annotations

import gc
import os

import jax
import optax
from absl import app, flags
from flax import nnx
from ml_collections import config_flags

from experiments import cli
from mango_jax.bench import report, subjects, xla
from mango_jax.bench.timing import load_average
from mango_jax.train import optim

_CONFIG = config_flags.DEFINE_config_file("config", None, "MANGO experiment config file[:args]; "
                                          "default: --preset.", lock_config=False)
_PRESET = flags.DEFINE_enum("preset", "paper_nyudv2", list(subjects.PRESETS), "Setting.")
_BLOCKS = flags.DEFINE_integer("num_blocks", None, "G's block count and the transformer's "
                               "depth (default: the setting's).")


def optimizer_program(spec: subjects.Spec, model) -> xla.Program:
    """The optimiser's update of `model`'s parameters, compiled on its own."""
    params = nnx.state(model, nnx.Param)
    tx, _ = optim.make_optimizer(spec.optimizer, total_steps=10_000)

    def update(params, opt_state, grads):
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    return xla.build(jax.jit(update, donate_argnums=(0, 1)), params, tx.init(params), params)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if _CONFIG.value is not None:
        path = flags.FLAGS["config"].config_filename.split(":")[0]
        spec = subjects.from_experiment(_CONFIG.value, os.path.splitext(os.path.basename(path))[0])
    else:
        spec = subjects.preset(_PRESET.value)
    if _BLOCKS.value:
        spec.model.fusion.flow.num_blocks = _BLOCKS.value
    unrolled, scanned = (spec.model.copy_and_resolve_references() for _ in range(2))
    unrolled.fusion.flow.scan, scanned.fusion.flow.scan = False, True
    configs = {"mango": unrolled, "mango (scan)": scanned,
               "transformer": subjects.transformer_config(spec.model)}
    print(f"compile profile of {spec.name} (L={spec.model.fusion.flow.num_blocks}, remat "
          f"{spec.model.fusion.flow.remat}, batch {spec.batch_size}) on "
          f"{jax.devices()[0].device_kind}; load {load_average()}", flush=True)
    rows = []
    for name, config in configs.items():
        sub = subjects.Subject(config, spec.info, spec.modalities, spec.optimizer,
                               compute_dtype=spec.compute_dtype)
        step = sub.train_program(sub.batch(spec.batch_size))
        model, _ = nnx.merge(sub.graphdef, sub.state)
        update = optimizer_program(spec, model)
        arrays = len(jax.tree.leaves(nnx.state(model, nnx.Param)))
        rows.append([name, sub.params["total"] / 1e6, arrays, step.lower_s, step.compile_s,
                     update.lower_s, update.compile_s])
        print(f"  {name}: step compiled in {step.compile_s:.1f} s, the update alone in "
              f"{update.compile_s:.1f} s", flush=True)
        del sub, step, model, update
        gc.collect()
    print(report.table(["", "params M", "arrays", "step lower s", "step compile s",
                        "update lower s", "update compile s"], rows))
    print(f"load average: {load_average()}")


if __name__ == "__main__":
    cli.run(main)
