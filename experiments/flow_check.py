"""Issue figures for the flow core: reconstruction, log-det accuracy and inverse cost of G.

    python -m experiments.flow_check                       # paper size, init + perturbed
    python -m experiments.flow_check --workdir=runs/mfeat  # also the G of a trained model

Paper size: L = 12, D = 256, 8 heads, 256 tokens per modality, batch 2, float32.
"""

from __future__ import annotations

import json
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags
from flax import nnx

from experiments import cli
from mango_jax import flows
from mango_jax.flows import checks

FLAGS = flags.DEFINE_string("workdir", None, "Also check the flow of the model trained here "
                            "(on its own test features, at its own size).")
LAYER = flags.DEFINE_string("layer", "mango", "Flow layer kind (config.layer).")
OUT = flags.DEFINE_string("out", None, "Write the figures as JSON to this file.")
SMALL_KINDS = ("mmca_ab", "mmca_ba", "imca_1", "imca_2", "imca_3", "imca_4", "lica", "coupling")


def _median_time(fn, *args, repeats=5):
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def paper_size(flow, x):
    graph, state = nnx.split(flow)
    fwd = jax.jit(lambda s, x: nnx.merge(graph, s)(x))
    inv = jax.jit(lambda s, y: nnx.merge(graph, s).inverse(y))
    y, _ = fwd(state, x)
    x_rec, _ = inv(state, y)
    return {
        "relative_error": float(jnp.linalg.norm(x_rec - x) / jnp.linalg.norm(x)),
        "norm_ratio_y_over_x": float(jnp.linalg.norm(y) / jnp.linalg.norm(x)),
        "forward_s": _median_time(fwd, state, x),
        "inverse_s": _median_time(inv, state, y),
    }


def logdet_errors(layer_kind: str):
    """Max |ours − float64 brute force| per layer kind and for a whole block, perturbed."""
    rows = {}
    x = jax.random.normal(jax.random.key(1), (2, 12, 12))
    kinds = SMALL_KINDS if layer_kind == "mango" else ("block",)
    for kind in kinds + (("block",) if layer_kind == "mango" else ()):
        config = flows.default_config()
        config.update(layer=layer_kind, num_blocks=1, dim=12, num_heads=2,
                      tokens_per_modality=(6, 6), coupling_hidden=16)
        if kind != "block":
            config.block_pattern = (kind,)
        layer = checks.perturb(flows.build(config, rngs=nnx.Rngs(0)), jax.random.key(2))
        with jax.enable_x64(True):
            ref = checks.brute_force_logdet(layer, x)
            ours64 = np.asarray(checks.cast_floats(layer, jnp.float64)(
                jnp.asarray(np.asarray(x, np.float64)))[1])
        ours32 = np.asarray(layer(x)[1])
        scale = np.maximum(np.abs(ref), 1.0)
        rows[kind] = {"float64_error": float(np.max(np.abs(ours64 - ref) / scale)),
                      "float32_error": float(np.max(np.abs(ours32 - ref) / scale))}
    return rows


def main(argv):
    del argv
    config = flows.default_config()
    config.layer = LAYER.value
    x = jax.random.normal(jax.random.key(0), (2, 512, 256))
    flow = flows.build(config, rngs=nnx.Rngs(0))
    figures = {"init": paper_size(flow, x),
               "perturbed": paper_size(checks.perturb(flow, jax.random.key(3)), x)}
    if FLAGS.value:
        import mango_jax
        from mango_jax import data

        trained = mango_jax.load(FLAGS.value, "latest")
        model = trained.model
        batch = next(iter(data.make_iterator(trained.config.data, "test", batch_size=2,
                                             train=False, seed=0, shard_by_process=False)))
        features = jnp.concatenate(model.features(batch), axis=1)
        figures["trained"] = paper_size(model.fusion.flow, features)
    figures["logdet_vs_float64_brute_force"] = logdet_errors(LAYER.value)
    for name in ("init", "perturbed", "trained"):
        if name in figures:
            row = figures[name]
            print(f"{name:>9}: rel. reconstruction error {row['relative_error']:.2e}  "
                  f"|G(x)|/|x| {row['norm_ratio_y_over_x']:.3f}  forward {row['forward_s']:.3f} s"
                  f"  inverse {row['inverse_s']:.3f} s  ratio "
                  f"{row['inverse_s'] / row['forward_s']:.2f}")
    print("log-det error vs float64 brute force (relative, or absolute below 1):")
    for kind, row in figures["logdet_vs_float64_brute_force"].items():
        print(f"  {kind:>9}: float64 {row['float64_error']:.1e}   "
              f"float32 {row['float32_error']:.1e}")
    if OUT.value:
        with open(OUT.value, "w") as f:
            json.dump(figures, f, indent=2)


if __name__ == "__main__":
    cli.run(main)
