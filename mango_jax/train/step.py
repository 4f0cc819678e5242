"""The jitted train and eval steps over `nnx.split` state.

`state = nnx.state((model, optimizer))`; each step merges it inside one plain `jax.jit`
(NNX's own `nnx.jit` walks the object graph in Python on every call). Two forms:
- 'jit': GSPMD over the mesh; the batch is sharded, XLA inserts the collectives.
- 'pmap': the per-device program of `jax.pmap`, written with `jax.shard_map`: each device
  computes gradients on its shard and an explicit `pmean` all-reduces them. Parameters are
  replicated; dropout uses the same RNG stream on every device.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import PartitionSpec as P

from mango_jax.train.losses import masked_mean, task_loss
from mango_jax.train.sharding import DATA_AXES


@dataclasses.dataclass(frozen=True)
class StepConfig:
    task: str
    ignore_index: int | None
    compute_dtype: str = "float32"
    grad_accum_steps: int = 1


def _cast_floats(tree, dtype):
    return jax.tree.map(
        lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)


def _cast_inputs(batch, dtype):
    return {k: (v.astype(dtype) if k not in ("label", "mask") and
                jnp.issubdtype(v.dtype, jnp.floating) else v) for k, v in batch.items()}


def _loss_terms(cfg: StepConfig, out, batch):
    """Total loss and the float32 logs of one forward pass's `ModelOutput`: the fusion's
    per-example aux losses and metrics averaged over the batch's real examples, as the task
    loss is."""
    task = task_loss(cfg.task, out.prediction, batch, ignore_index=cfg.ignore_index)
    example = batch["mask"].astype(jnp.float32)
    aux = {k: masked_mean(v, example) for k, v in out.aux_losses.items()}
    total = task + sum(aux.values(), jnp.float32(0.0))
    logs = {"loss": total, "task_loss": task,
            **{k: masked_mean(v, example) for k, v in out.metrics.items()},
            **{f"aux/{k}": v for k, v in aux.items()}}
    return total, logs


def _gradients(cfg: StepConfig, model, batch):
    """Gradients w.r.t. the float32 parameters, computing in `compute_dtype`; micro-batches
    are scanned and their gradients averaged when `grad_accum_steps > 1`."""
    graph, params, rest = nnx.split(model, nnx.Param, ...)
    dtype = jnp.dtype(cfg.compute_dtype)

    def loss_fn(params, rest, micro):
        inner = nnx.merge(graph, _cast_floats(params, dtype), rest, copy=True)
        micro = _cast_inputs(micro, dtype)
        total, logs = _loss_terms(cfg, inner(micro, deterministic=False), micro)
        return total, (logs, nnx.state(inner, nnx.Not(nnx.Param)))

    grad_fn = jax.grad(loss_fn, has_aux=True)
    k = cfg.grad_accum_steps
    if k == 1:
        grads, (logs, rest) = grad_fn(params, rest, batch)
    else:
        micro = jax.tree.map(lambda x: x.reshape(k, x.shape[0] // k, *x.shape[1:]), batch)

        def body(carry, mb):
            grads, rest = carry
            g, (logs, rest) = grad_fn(params, rest, mb)
            return (jax.tree.map(jnp.add, grads, g), rest), logs

        zeros = jax.tree.map(jnp.zeros_like, params)
        (grads, rest), logs = jax.lax.scan(body, (zeros, rest), micro)
        grads = jax.tree.map(lambda g: g / k, grads)
        logs = jax.tree.map(jnp.mean, logs)
    nnx.update(model, rest)
    return grads, logs


def _apply(model, optimizer, grads, logs, schedule):
    optimizer.update(model, grads)
    logs = dict(logs, grad_norm=optax.tree.norm(grads),
                learning_rate=schedule(optimizer.step[...] - 1))
    return logs


def make_train_step(graphdef, cfg: StepConfig, schedule, *, mesh, state_sharding,
                    parallelism: str = "jit"):
    """`step(state, batch) -> (state, logs)`, jitted, with the state buffers donated."""
    if parallelism == "jit":
        def step(state, batch):
            model, optimizer = nnx.merge(graphdef, state)
            grads, logs = _gradients(cfg, model, batch)
            logs = _apply(model, optimizer, grads, logs, schedule)
            return nnx.state((model, optimizer)), logs

        return jax.jit(step, in_shardings=(state_sharding, None),
                       out_shardings=(state_sharding, None), donate_argnums=0)
    if parallelism == "pmap":
        if mesh.shape["fsdp"] != 1:
            raise ValueError("parallelism='pmap' replicates parameters; set mesh.fsdp=1")

        def per_device(state, batch):
            model, optimizer = nnx.merge(graphdef, state)
            grads, logs = _gradients(cfg, model, batch)
            grads = jax.lax.pmean(grads, DATA_AXES)
            logs = jax.lax.pmean(logs, DATA_AXES)
            logs = _apply(model, optimizer, grads, logs, schedule)
            return nnx.state((model, optimizer)), logs

        sharded = jax.shard_map(per_device, mesh=mesh, in_specs=(P(), P(DATA_AXES)),
                                out_specs=(P(), P()))
        return jax.jit(sharded, donate_argnums=0)
    raise ValueError(f"parallelism={parallelism!r}; expected 'jit' or 'pmap'")


def resize_to_label_sizes(logits: jax.Array, label_hw: jax.Array, label_shape) -> jax.Array:
    """`[B, h, w, C]` logits resized to each example's own label size `label_hw [B, 2]`, placed
    top-left in the padded `[B, H, W, C]` label canvas (the padding is labelled 255, ignored).

    Segmentation is scored at full label resolution; one static output shape keeps it jitted.
    """
    out_hw = tuple(label_shape[1:3])

    def one(x, hw):
        scale = hw.astype(jnp.float32) / jnp.array(x.shape[:2], jnp.float32)
        return jax.image.scale_and_translate(
            x, (*out_hw, x.shape[-1]), (0, 1), scale, jnp.zeros(2), "linear", antialias=False)

    return jax.vmap(one)(logits.astype(jnp.float32), label_hw)


def make_eval_step(graphdef, cfg: StepConfig, evaluator, *, state_sharding):
    """`step(state, eval_state, batch) -> (eval_state, sums)`: adds one batch's statistics;
    `sums` holds each logged loss term times the batch's real examples, and their count."""

    def step(state, eval_state, batch):
        model, _ = nnx.merge(graphdef, state)
        batch = _cast_inputs(batch, jnp.dtype(cfg.compute_dtype))
        out = model(batch, deterministic=True)
        prediction = out.prediction.astype(jnp.float32)
        if "label_hw" in batch:
            prediction = resize_to_label_sizes(prediction, batch["label_hw"],
                                               batch["label"].shape)
        eval_state = evaluator.update(eval_state, prediction, batch)
        count = jnp.sum(batch["mask"].astype(jnp.float32))
        _, logs = _loss_terms(cfg, out._replace(prediction=prediction), batch)
        return eval_state, {**{k: v * count for k, v in logs.items()}, "count": count}

    return jax.jit(step, in_shardings=(state_sharding, None, None))
