"""Table 4 flow layers side by side: parameters, forward and inverse time, reconstruction error.

    python -m experiments.flow_table           # paper size: L = 12, D = 256, 8 heads,
                                               # 256 tokens per modality, batch 2, float32
    python -m experiments.flow_table --small   # L = 2, D = 64, 4 heads, 32 tokens per modality
    python -m experiments.flow_table --kinds=mango,flowpp --nologdet

Every G is built by `mango_jax.flows.build` with only `config.layer` changed. Times are the
median of 5 jitted runs after a warm-up (`experiments.flow_check.paper_size`). Flows with
ActNorm get Glow's data-dependent initialisation from the input batch first, as training does.
The log-det table compares one perturbed block at B = 2, 6 tokens per modality, D = 12, 2 heads
with the float64 brute force (`experiments.flow_check.logdet_errors`).
"""

from __future__ import annotations

import math

import jax
from absl import app, flags
from flax import nnx

from experiments import cli
from experiments.flow_check import logdet_errors, paper_size
from mango_jax import flows
from mango_jax.flows import checks
from mango_jax.flows.actnorm import ActNorm
from mango_jax.flows.glow import initialize_actnorms

SMALL = flags.DEFINE_bool("small", False, "Quick run at L = 2, D = 64, 4 heads, 32 tokens per "
                          "modality instead of the paper's size.")
KINDS = flags.DEFINE_list("kinds", list(flows.LAYERS), "Layer kinds (config.layer) to compare.")
LOGDET = flags.DEFINE_bool("logdet", True, "Also compare log-dets with the float64 brute force.")

SMALL_SIZE = {"num_blocks": 2, "dim": 64, "num_heads": 4, "tokens_per_modality": (32, 32),
              "coupling_hidden": 128}


def num_params(flow) -> int:
    return sum(math.prod(p.shape) for p in jax.tree.leaves(nnx.state(flow, nnx.Param)))


def row(kind: str) -> dict:
    config = flows.default_config()
    config.layer = kind
    if SMALL.value:
        config.update(SMALL_SIZE)
    tokens = sum(flows.token_counts(config))
    x = jax.random.normal(jax.random.key(0), (2, tokens, config.dim))
    flow = flows.build(config, rngs=nnx.Rngs(0))
    if any(isinstance(node, ActNorm) for _, node in nnx.iter_graph(flow)):
        initialize_actnorms(flow, x)
    init = paper_size(flow, x)
    perturbed = paper_size(checks.perturb(flow, jax.random.key(3)), x)
    return {"params": num_params(flow), "forward_s": init["forward_s"],
            "inverse_s": init["inverse_s"], "error_init": init["relative_error"],
            "error_perturbed": perturbed["relative_error"],
            "inverse_s_perturbed": perturbed["inverse_s"],
            "norm_ratio": init["norm_ratio_y_over_x"]}


def main(argv):
    del argv
    unknown = set(KINDS.value) - set(flows.LAYERS)
    if unknown:
        raise app.UsageError(f"--kinds: unknown {sorted(unknown)}; choose from {flows.LAYERS}")
    size = ("L=2, D=64, 4 heads, 32+32 tokens" if SMALL.value
            else "L=12, D=256, 8 heads, 256+256 tokens")
    print(f"G at {size}, batch 2, float32, {jax.devices()[0].platform}; times: median of 5 "
          "jitted runs")
    print(f"{'layer':>9} {'params':>8} {'forward':>9} {'inverse':>9} {'inv/fwd':>7} "
          f"{'inv(pert)':>9} {'|G(x)|/|x|':>10} {'rec. err init':>13} {'rec. err pert':>13}")
    for kind in KINDS.value:
        r = row(kind)
        print(f"{kind:>9} {r['params'] / 1e6:7.1f}M {r['forward_s']:8.3f}s {r['inverse_s']:8.3f}s "
              f"{r['inverse_s'] / r['forward_s']:7.2f} {r['inverse_s_perturbed']:8.3f}s "
              f"{r['norm_ratio']:10.3f} {r['error_init']:13.1e} {r['error_perturbed']:13.1e}",
              flush=True)
    if LOGDET.value:
        print("log-det of one perturbed block vs float64 brute force (relative, or absolute "
              "below 1):")
        for kind in KINDS.value:
            r = logdet_errors(kind)["block"]
            print(f"{kind:>9}: float64 {r['float64_error']:.1e}   float32 "
                  f"{r['float32_error']:.1e}", flush=True)


if __name__ == "__main__":
    cli.run(main)
