"""optax optimiser: AdamW, warm-up then cosine or poly decay, gradient clipping, and the
fine-tuning controls of pretrained encoders (freezing, layer-wise rate decay, MAE's weight-decay
exclusions) as per-parameter groups of `optax.multi_transform`."""

from __future__ import annotations

import jax
import ml_collections
import optax

from mango_jax.nn.stacked import stack_depth

SCOPES = ("none", "pretrained", "encoders", "all")
ENCODERS = ("encoder_a", "encoder_b")  # MultimodalModel's encoders of modalities[0], [1]
EMBEDDING = ("patch", "embed", "cls_token", "position")  # an encoder's layer 0
NO_DECAY_NAMES = ("position", "cls_token")  # with every 1-D parameter (biases, norms)
TRAINABLE_IN_FROZEN = ("project", "resample")  # new layers, not in the checkpoint


def default_config() -> ml_collections.ConfigDict:
    """Optimiser fields.

    learning_rate: peak rate after warm-up. weight_decay: AdamW's decoupled decay.
    b1, b2, eps: Adam moments. warmup_steps: linear warm-up from 0.
    schedule: 'cosine' (to end_lr_factor·peak), 'poly' ((1 − t)^poly_power, TokenFusion's
      choice for segmentation) or 'constant'. grad_clip_norm: global-norm clipping (0 = off).
    grad_accum_steps: micro-batches per update (the global batch is split into this many).
    freeze: 'none' (default), 'pretrained' (encoders loaded from `model.encoder.pretrained`) or
      'encoders' (both): those encoders keep their weights (and their gradients stay out of
      the clipping norm); their width projection `project` and token resampler `resample`
      (new layers) still train.
    layer_decay: MAE's / BEiT's layer-wise rate decay in both encoders: the rate of layer l is
      scaled by layer_decay^(L + 1 − l), with the embeddings (patch / token embedding, class
      token, position embedding) l = 0, `blocks[i]` l = i + 1, and what follows the last block
      (final norm, projection, resampler) as everything outside the encoders at scale 1.
      1.0 (default) = off; MAE fine-tunes ViT-B with 0.65, BEiT with 0.65-0.9.
    decay_exclusions: where MAE's fine-tuning weight-decay exclusions apply (no decay on 1-D
      parameters, i.e. biases and norm scales / offsets, nor on the position embedding and
      class token): 'pretrained' (default: the encoders loaded from a checkpoint, fine-tuned as
      their authors fine-tune them, while a model trained from scratch keeps plain AdamW bit
      for bit), 'encoders', 'all' (the whole model, as MAE's recipe does) or 'none'.
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
    config.freeze = "none"
    config.layer_decay = 1.0
    config.decay_exclusions = "pretrained"
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


def _names(path) -> tuple:
    """A parameter's key path as plain names and indices (the Variable's 'value' dropped)."""
    names = tuple(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k))) for k in path)
    return names[:-1] if names and names[-1] == "value" else names


def _layer(names: tuple, depth: int) -> int:
    """MAE's layer id inside an encoder: embeddings 0, blocks[i] i + 1, the rest depth + 1."""
    if "blocks" in names:
        return int(names[names.index("blocks") + 1]) + 1
    if any(n in EMBEDDING for n in names):
        return 0
    return depth + 1


def parameter_groups(config, params, pretrained_roots=()) -> dict[tuple, tuple]:
    """{key path names: (rate scale, weight decay on, frozen)} for every parameter."""
    for field in ("freeze", "decay_exclusions"):
        allowed = SCOPES if field == "decay_exclusions" else SCOPES[:3]
        if config[field] not in allowed:
            raise ValueError(f"optimizer.{field}={config[field]!r}; expected one of {allowed}")
    if not 0.0 < config.layer_decay <= 1.0:
        raise ValueError(f"optimizer.layer_decay={config.layer_decay}; expected 0 < decay <= 1 "
                         "(1 = off)")
    leaves = [(_names(p), leaf) for p, leaf in jax.tree_util.tree_flatten_with_path(params)[0]]
    depth = {root: len({n[n.index("blocks") + 1] for n, _ in leaves
                        if n[0] == root and "blocks" in n}) for root in ENCODERS}

    def in_scope(scope, root):
        return (scope == "all" or (scope == "encoders" and root in ENCODERS)
                or (scope == "pretrained" and root in pretrained_roots))

    groups = {}
    for names, leaf in leaves:
        root = names[0]
        scale = (config.layer_decay ** (depth[root] + 1 - _layer(names, depth[root]))
                 if root in ENCODERS else 1.0)
        excluded = (leaf.ndim - stack_depth(names) <= 1  # per repeat, for stacked ones
                    or any(n in NO_DECAY_NAMES for n in names))
        decay = not (excluded and in_scope(config.decay_exclusions, root))
        frozen = (in_scope(config.freeze, root)
                  and not any(n in TRAINABLE_IN_FROZEN for n in names))
        groups[names] = (float(scale), decay, frozen)
    return groups


def make_optimizer(config, total_steps: int, model=None, *, pretrained=()) -> tuple[
        optax.GradientTransformation, optax.Schedule]:
    """AdamW over `model`'s `nnx.Param`s; `pretrained`: the modalities whose encoders were
    loaded from a checkpoint (the scope 'pretrained' of `freeze` and `decay_exclusions`)."""
    schedule = learning_rate_schedule(config, total_steps)
    adamw = dict(b1=config.b1, b2=config.b2, eps=config.eps)
    plain = optax.adamw(schedule, weight_decay=config.weight_decay, **adamw)
    groups = {}
    if model is not None:
        from flax import nnx

        roots = tuple(root for root, modality in zip(ENCODERS, model.modalities, strict=True)
                      if modality in pretrained)
        groups = parameter_groups(config, nnx.state(model, nnx.Param), roots)
    elif (config.freeze, config.layer_decay, config.decay_exclusions) != ("none", 1.0,
                                                                             "pretrained"):
        raise ValueError("optimizer.freeze / layer_decay / decay_exclusions need the model")
    clip = [optax.clip_by_global_norm(config.grad_clip_norm)] if config.grad_clip_norm else []
    if all(g == (1.0, True, False) for g in groups.values()):
        return optax.chain(*clip, plain), schedule

    def label(group):
        scale, decay, frozen = group
        return "frozen" if frozen else f"lr*{scale!r}" + ("" if decay else ",no_decay")

    def labels(params):
        return jax.tree_util.tree_map_with_path(lambda p, _: label(groups[_names(p)]), params)

    transforms = {"frozen": optax.set_to_zero()}
    for scale, decay, frozen in set(groups.values()):
        if not frozen:
            transforms[label((scale, decay, False))] = optax.adamw(
                lambda count, s=scale: schedule(count) * s,
                weight_decay=config.weight_decay if decay else 0.0, **adamw)
    # Frozen gradients are zeroed before clipping, so they do not shrink the others.
    zero_frozen = [optax.multi_transform(
        {k: optax.set_to_zero() if k == "frozen" else optax.identity() for k in transforms},
        labels)] if any(g[2] for g in groups.values()) else []
    return optax.chain(*zero_frozen, *clip, optax.multi_transform(transforms, labels)), schedule
