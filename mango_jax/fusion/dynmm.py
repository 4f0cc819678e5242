"""DynMM (Xue & Marculescu, "Dynamic Multimodal Fusion", CVPR 2023 Workshops).

A gate reads both modalities and picks, per example, a forward path of data-dependent cost.
Under `jit` every path is computed (shapes are static), so the compute a deployment would save
is analytic: XLA's FLOP count of each path weighted by the share of examples the gate sends
there. `describe()` writes the path FLOPs, `diagnostics()` the shares and the saving per split.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from mango_jax.fusion.base import FusionModule, FusionOutput, mean_pool, output, register, select
from mango_jax.fusion.transformer import TRANSFORMER_DEFAULTS, transformer_stack

LEVELS = ("modality", "fusion")


class TrainingProgress(nnx.Variable):
    """Training forward passes seen so far (not a parameter: the optimiser leaves it alone, the
    train step carries it and checkpoints save it, so a resumed run keeps its schedule)."""


def gate_weights(logits: jax.Array, temperature: jax.Array | float, *, hard: bool) -> jax.Array:
    """`softmax(logits / τ)` over the last axis; with `hard`, the one-hot of its argmax in the
    forward pass and the softmax's gradient in the backward pass (straight-through)."""
    soft = jax.nn.softmax(logits / temperature, axis=-1)
    if not hard:
        return soft
    one_hot = jax.nn.one_hot(jnp.argmax(soft, axis=-1), soft.shape[-1], dtype=soft.dtype)
    return one_hot + (soft - jax.lax.stop_gradient(soft))


class Gate(nnx.Module):
    """The gating network: `[mean_i a_i; mean_j b_j]` (`[B, 2D]`) -> GELU MLP -> path logits."""

    def __init__(self, dim: int, hidden: int, paths: int, *, rngs: nnx.Rngs):
        self.fc1 = nnx.Linear(2 * dim, hidden, rngs=rngs)
        self.fc2 = nnx.Linear(hidden, paths, rngs=rngs)

    def __call__(self, a: jax.Array, b: jax.Array) -> jax.Array:
        z = jnp.concatenate([mean_pool(a), mean_pool(b)], axis=-1)
        return self.fc2(jax.nn.gelu(self.fc1(z))).astype(jnp.float32)


class FusionStack(nnx.Module):
    """L pre-LN transformer layers over modality a; in a fused layer a's tokens also attend to
    b's. b has a self-attention stack of its own, layer l of which runs only when layer l of a
    is fused, so a path that fuses k layers pays for k layers of b (DynMM's fusion cell: the
    RGB branch takes the depth branch's features of the same stage, or skips them).

    Layer l: `b' = Block^b_l(b)`; `h = LN(a)`; attention over `h` (unfused) or over `[h; LN_c(b')]`
    (fused); `a <- a + attention`, `a <- a + MLP(LN(a))`. The unfused and fused attention share
    their weights, so the paths differ only by whether b is let in. Without b (`with_b=False`)
    the stack is a plain unimodal transformer.
    """

    def __init__(self, config: ml_collections.ConfigDict, dim: int, *, rngs: nnx.Rngs,
                 with_b: bool = True):
        self.layers = transformer_stack(config, dim, rngs=rngs, cross=with_b)
        self.blocks_b = transformer_stack(config, dim, rngs=rngs) if with_b else nnx.List([])

    def __len__(self) -> int:
        return len(self.layers)

    def layer(self, index: int, a: jax.Array, b: jax.Array | None = None,
              fused: jax.Array | None = None, *, deterministic: bool = True) -> jax.Array:
        """Layer `index` of a: within a (`b` None), over `[a; b]` (`fused` None), or both mixed
        per example by `fused [B]` (1: fused); `b [B, K, D]` is b's state after its layer."""
        block = self.layers[index]
        h = block.norm1(a)
        if b is None:
            attended = block.attention(h, deterministic=deterministic)
        else:
            keys = jnp.concatenate([h, block.norm_context(b)], axis=1)
            attended = block.attention(h, keys, deterministic=deterministic)
            if fused is not None:
                own = block.attention(h, deterministic=deterministic)
                w = fused.astype(a.dtype)
                attended = select(jnp.stack([w, 1 - w], axis=-1), attended, own)
        a = a + attended
        return a + block.feed_forward(a, deterministic=deterministic)

    def path(self, a: jax.Array, b: jax.Array | None, k: int, *,
             deterministic: bool = True) -> list[jax.Array]:
        """Path k, static: b enters layers 0..k-1 only, and only b's first k layers run.
        Returns a's state after every layer (the last one is the output)."""
        if not 0 <= k <= len(self):
            raise ValueError(f"path k={k} must lie in [0, {len(self)}]")
        states = []
        for index in range(len(self)):
            if index < k:
                b = self.blocks_b[index](b, deterministic=deterministic)
                a = self.layer(index, a, b, deterministic=deterministic)
            else:
                a = self.layer(index, a, deterministic=deterministic)
            states.append(a)
        return states

    def mixture(self, a: jax.Array, b: jax.Array, fused: jax.Array, *,
                deterministic: bool = True) -> jax.Array:
        """Every path at once: layer l fused with weight `fused[:, l]` (`[B, L]`). With the
        weights `fused[:, l] = P(k > l)` of a one-hot path choice this is exactly path k."""
        for index in range(len(self)):
            b = self.blocks_b[index](b, deterministic=deterministic)
            a = self.layer(index, a, b, fused[:, index], deterministic=deterministic)
        return a


@register
class DynMM(FusionModule):
    """Dynamic multimodal fusion: a gate picks, per example, how much fusion to compute.

    level='modality' (the paper's modality-level decision; vector and token tasks): two experts
      of different cost, a unimodal transformer over modality a alone (`a`, cheap) and a fusion
      transformer in which a attends to a and b at every layer and b has its own layers (`ab`,
      a FusionStack with all layers fused); each has `num_layers` layers and its own weights.
      The gate's weights `g = softmax(logits / τ)` mix the experts' token streams in training;
      at inference `g` is the hard one-hot choice, straight-through (the forward value is the
      chosen expert alone, the gradient is the softmax's). The experts are mixed before the
      task head, not after it as in the paper (the model's head follows the fusion); with a
      hard choice the two are the same. The resource-aware loss, per example: `λ · g_ab`, so its
      mean is λ times the share of examples sent to the fusion expert (the expensive one).
      Experts and gate train together from scratch (the paper pre-trains the experts, then
      fine-tunes with the gate); the fusion level's warm-up plays the pre-training's part.
    level='fusion' (the paper's fusion-level decision; dense tasks): one FusionStack of L =
      `num_layers` layers; path k (k = 0..L) lets b into the first k layers and the rest attend
      within a only. One global gate (one decision for the whole stack, per example) picks k.
      Training follows the paper's two stages inside one run: for the first `warmup_steps`
      training passes each example takes a uniformly random path (so that every path is
      trained before the gate has a say), then the gate's hard straight-through choice at a
      temperature annealed geometrically from `temperature` to `final_temperature` over
      `anneal_steps` passes. Soft weights g over paths enter layer l as `P(k > l) = Σ_{k>l} g_k`
      (the mixing of the official code), exact for a one-hot g. The resource-aware loss, per
      example: `λ · max(0, Σ_k g_k c_k − budget)` with the cost `c_k = k / L`: each fused layer
      adds one layer of b and b's keys, so path k's FLOPs grow about linearly in k and c_k is
      close to its extra FLOPs over path 0 as a fraction of path L's (`describe()` has XLA's).
      Every example's expected cost is held under the budget; below it the task loss decides.
      Training passes are counted in the module (`TrainingProgress`; one per micro-batch under
      gradient accumulation).

    Config: `level` ('modality' | 'fusion'; 'fusion' by default where the task head is dense,
    `default_config(name, dense=True)`; both levels keep a's tokens, so either runs anywhere);
    `num_layers`, `num_heads`, `mlp_ratio`, `dropout` (each expert's or the stack's layers);
    `gate_hidden` (the gate MLP's width, None = D); `temperature` (τ; at the fusion level, τ
    until the warm-up ends); `cost_weight` (λ of the resource-aware loss; 0.1, the official
    code's MM-IMDB setting); fusion level only: `cost_budget` (in units of c_k),
    `warmup_steps`, `anneal_steps`, `final_temperature`.
    Streams: one, a's tokens `[B, M, D]` (so dense heads can decode it). Aux loss `dynmm_cost`;
    metrics `dynmm/share_<path>` (one-hot of the hard choice: their eval means are the shares;
    paths 'a' and 'ab', or '0'..'L'), `dynmm/cost` (c of the choice), and at the fusion level
    `dynmm/temperature`.
    """

    NAME = "dynmm"
    DEFAULTS = {
        **TRANSFORMER_DEFAULTS,
        "level": "modality",
        "gate_hidden": None,
        "temperature": 1.0,
        "cost_weight": 0.1,
        "cost_budget": 0.5,
        "warmup_steps": 500,
        "anneal_steps": 2000,
        "final_temperature": 0.1,
    }
    DENSE_DEFAULTS = {"level": "fusion"}

    def setup(self, config, *, rngs):
        if config.level not in LEVELS:
            raise ValueError(f"dynmm: level must be one of {LEVELS}, got {config.level!r}")
        if config.num_layers < 1:
            raise ValueError(f"dynmm: num_layers must be >= 1, got {config.num_layers}")
        if not config.temperature > 0 or not config.final_temperature > 0:
            raise ValueError("dynmm: temperature and final_temperature must be > 0, got "
                             f"{config.temperature} and {config.final_temperature}")
        if config.warmup_steps < 0 or config.anneal_steps < 0:
            raise ValueError("dynmm: warmup_steps and anneal_steps must be >= 0")
        self.level = config.level
        dim = self.dim
        self.temperature = float(config.temperature)
        self.final_temperature = float(config.final_temperature)
        self.cost_weight = float(config.cost_weight)
        self.cost_budget = float(config.cost_budget)
        self.warmup_steps = int(config.warmup_steps)
        self.anneal_steps = int(config.anneal_steps)
        hidden = config.gate_hidden or dim
        if self.level == "modality":
            self.expert_a = FusionStack(config, dim, rngs=rngs, with_b=False)
            self.expert_ab = FusionStack(config, dim, rngs=rngs)
            self.gate = Gate(dim, hidden, 2, rngs=rngs)
        else:
            self.stack = FusionStack(config, dim, rngs=rngs)
            self.gate = Gate(dim, hidden, config.num_layers + 1, rngs=rngs)
            self.progress = TrainingProgress(jnp.zeros((), jnp.int32))
            self.path_rngs = rngs["dropout"].fork()

    @property
    def path_names(self) -> tuple[str, ...]:
        if self.level == "modality":
            return ("a", "ab")
        return tuple(str(k) for k in range(len(self.stack) + 1))

    @property
    def path_costs(self) -> np.ndarray:
        """c per path: 0 for the cheapest, 1 for the full fusion."""
        return np.linspace(0.0, 1.0, len(self.path_names), dtype=np.float32)

    def fusion_temperature(self, step: jax.Array) -> jax.Array:
        """τ after `step` training passes: `temperature` until the warm-up ends, then geometric
        to `final_temperature` over `anneal_steps`, then constant."""
        t = jnp.clip((step - self.warmup_steps) / max(self.anneal_steps, 1), 0.0, 1.0)
        ratio = self.final_temperature / self.temperature
        return jnp.float32(self.temperature) * jnp.float32(ratio) ** t

    def __call__(self, a: jax.Array, b: jax.Array, *, deterministic: bool = True) -> FusionOutput:
        """`a [B, M, D]`, `b [B, K, D]` -> one stream `[B, M, D]`, the cost loss, the shares."""
        self.check(a, b)
        logits = self.gate(a, b)
        metrics = {}
        if self.level == "modality":
            g = gate_weights(logits, self.temperature, hard=deterministic)
            expert_a = self.expert_a.path(a, None, 0, deterministic=deterministic)[-1]
            expert_ab = self.expert_ab.path(a, b, len(self.expert_ab),
                                            deterministic=deterministic)[-1]
            z = select(g, expert_a, expert_ab)
            cost = self.cost_weight * g[:, 1]
        else:
            step = self.progress[...]
            tau = self.fusion_temperature(step)
            g = gate_weights(logits, tau, hard=True)
            if not deterministic:
                paths = len(self.path_names)
                random = jax.random.randint(self.path_rngs(), (a.shape[0],), 0, paths)
                g = jnp.where(step < self.warmup_steps, jax.nn.one_hot(random, paths), g)
                self.progress[...] = step + 1
            # Layer l is fused on every path k > l.
            fused = jnp.cumsum(g[:, ::-1], axis=-1)[:, ::-1][:, 1:]
            z = self.stack.mixture(a, b, fused, deterministic=deterministic)
            expected = g @ jnp.asarray(self.path_costs)
            cost = self.cost_weight * jnp.maximum(expected - self.cost_budget, 0.0)
            metrics["dynmm/temperature"] = jnp.broadcast_to(tau, (a.shape[0],))
        choice = jax.nn.one_hot(jnp.argmax(g, axis=-1), g.shape[-1])
        metrics.update({f"dynmm/share_{name}": choice[:, i]
                        for i, name in enumerate(self.path_names)})
        metrics["dynmm/cost"] = choice @ jnp.asarray(self.path_costs)
        return output(z, aux_losses={"dynmm_cost": cost}, metrics=metrics)

    # Analytic compute: XLA's FLOPs of each path for one example of the built token counts.

    def _flops(self, fn) -> float:
        graphdef, state = nnx.split(self)
        abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state)
        m, k = self.tokens
        a = jax.ShapeDtypeStruct((1, m, self.dim), jnp.float32)
        b = jax.ShapeDtypeStruct((1, k, self.dim), jnp.float32)
        compiled = jax.jit(lambda s, a, b: fn(nnx.merge(graphdef, s), a, b)).lower(
            abstract, a, b).compile()
        cost = compiled.cost_analysis()
        if isinstance(cost, list | tuple):
            cost = cost[0]
        return float(cost["flops"])

    def path_flops(self) -> dict[str, float]:
        """XLA's FLOPs of each path alone (gate excluded), per example."""
        if self.level == "modality":
            return {
                "a": self._flops(lambda m, a, b: m.expert_a.path(a, None, 0)[-1]),
                "ab": self._flops(lambda m, a, b: m.expert_ab.path(a, b, len(m.expert_ab))[-1]),
            }
        return {name: self._flops(lambda m, a, b, k=k: m.stack.path(a, b, k)[-1])
                for k, name in enumerate(self.path_names)}

    def gate_flops(self) -> float:
        return self._flops(lambda m, a, b: m.gate(a, b))

    def describe(self) -> dict[str, Any]:
        return {"level": self.level, "paths": list(self.path_names),
                "path_flops": self.path_flops(), "gate_flops": self.gate_flops()}

    def diagnostics(self, model, batch, workdir: str, results: dict) -> dict[str, Any]:
        """Per split: the shares of the paths, the FLOPs per example they imply (gate included)
        and the compute saved against the static full fusion (path 'ab' or 'L', no gate)."""
        del model, batch, workdir
        flops, gate = self.path_flops(), self.gate_flops()
        return {split: compute_saved(flops, gate, {
                    name: metrics[f"dynmm/share_{name}"] for name in flops})
                for split, metrics in results.items()
                if f"dynmm/share_{self.path_names[0]}" in metrics}


def compute_saved(path_flops: dict[str, float], gate_flops: float,
                  shares: dict[str, float]) -> dict[str, Any]:
    """`flops_per_example = gate + Σ_p share_p · F_p`; `compute_saved = 1 − that / F_full`,
    F_full the most expensive path (the static network that always fuses everything)."""
    dynamic = gate_flops + sum(shares[p] * path_flops[p] for p in path_flops)
    full = max(path_flops.values())
    return {"shares": {p: float(s) for p, s in shares.items()},
            "flops_per_example": float(dynamic), "compute_saved": float(1.0 - dynamic / full)}
