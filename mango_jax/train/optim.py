"""optax optimiser: AdamW, warm-up then cosine or poly decay, gradient clipping."""

from __future__ import annotations

import ml_collections
import optax


def default_config() -> ml_collections.ConfigDict:
    """Optimiser fields.

    learning_rate: peak rate after warm-up. weight_decay: AdamW's decoupled decay.
    b1, b2, eps: Adam moments. warmup_steps: linear warm-up from 0.
    schedule: 'cosine' (to end_lr_factor·peak), 'poly' ((1 − t)^poly_power, TokenFusion's
      choice for segmentation) or 'constant'. grad_clip_norm: global-norm clipping (0 = off).
    grad_accum_steps: micro-batches per update (the global batch is split into this many).
    """
    config = ml_collections.ConfigDict()
    config.learning_rate = 1e-3
    config.weight_decay = 0.05
    config.b1 = 0.9
    config.b2 = 0.999
    config.eps = 1e-8
    config.warmup_steps = 100
    config.schedule = "cosine"
    config.end_lr_factor = 0.01
    config.poly_power = 0.9
    config.grad_clip_norm = 1.0
    config.grad_accum_steps = 1
    return config


def learning_rate_schedule(config, total_steps: int) -> optax.Schedule:
    peak, warmup = config.learning_rate, min(config.warmup_steps, max(total_steps - 1, 0))
    decay_steps = max(total_steps - warmup, 1)
    if config.schedule == "cosine":
        decay = optax.cosine_decay_schedule(peak, decay_steps, alpha=config.end_lr_factor)
    elif config.schedule == "poly":
        decay = optax.polynomial_schedule(peak, peak * config.end_lr_factor, config.poly_power,
                                          decay_steps)
    elif config.schedule == "constant":
        decay = optax.constant_schedule(peak)
    else:
        raise ValueError(f"optimizer.schedule={config.schedule!r}; expected 'cosine', 'poly' "
                         "or 'constant'")
    if warmup == 0:
        return decay
    return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), decay], [warmup])


def make_optimizer(config, total_steps: int) -> tuple[optax.GradientTransformation,
                                                       optax.Schedule]:
    schedule = learning_rate_schedule(config, total_steps)
    parts = [optax.clip_by_global_norm(config.grad_clip_norm)] if config.grad_clip_norm else []
    parts.append(optax.adamw(schedule, b1=config.b1, b2=config.b2, eps=config.eps,
                             weight_decay=config.weight_decay))
    return optax.chain(*parts), schedule
