"""Fusion modules: MANGO and the methods it is compared against, behind one interface.

A model is `encoders -> a [B, M, D], b [B, K, D] -> fusion -> task head per stream, logits
averaged`. Every fusion module is built by `build(config, dim=D, tokens=(M, K), rngs=...)` and
called as `module(a, b, deterministic=...) -> FusionOutput(streams, aux_losses, metrics)`.

`default_config(name)` gives each method's fields and defaults:
  unimodal        modality ('a' | 'b')
  concat          mode ('feature' | 'token'), mlp_ratio, dropout; mode='token' also num_layers,
                  num_heads
  late            -
  additive        -
  multiplicative  -
  bilinear        hidden_dim (None = D)
  tensor          hidden_dim (None = D)
  lrtf            rank
  mi_matrix       hidden_dim (None = D)
  gmu             -
  cross_attention transformer fields
  mbt             transformer fields, num_bottlenecks, fusion_layer
  tokenfusion     transformer fields, threshold, sparsity_weight
  geminifusion    transformer fields
  dynmm           transformer fields, level ('modality' | 'fusion'), gate_hidden, temperature,
                  cost_weight; fusion level: cost_budget, warmup_steps, anneal_steps,
                  final_temperature
  mango           the lead's `mango_jax.fusion.mango.default_config()`
Transformer fields: num_layers (experiment configs set it to MANGO's block count), num_heads,
mlp_ratio, dropout. The classes' docstrings define each method and field.
"""

from __future__ import annotations

import ml_collections
from flax import nnx

from mango_jax.fusion.base import FusionOutput
from mango_jax.fusion.basic import Concat, Late, Unimodal
from mango_jax.fusion.cross_attention import CrossAttentionFusion
from mango_jax.fusion.dynmm import DynMM
from mango_jax.fusion.geminifusion import GeminiFusion
from mango_jax.fusion.mbt import MBTFusion
from mango_jax.fusion.tokenfusion import TokenFusion
from mango_jax.fusion.vector import (
    GMU,
    Additive,
    Bilinear,
    LowRankTensorFusion,
    MIMatrix,
    Multiplicative,
    TensorFusion,
)

BASELINES: dict[str, type[nnx.Module]] = {
    "unimodal": Unimodal,
    "concat": Concat,
    "late": Late,
    "additive": Additive,
    "multiplicative": Multiplicative,
    "bilinear": Bilinear,
    "tensor": TensorFusion,
    "lrtf": LowRankTensorFusion,
    "mi_matrix": MIMatrix,
    "gmu": GMU,
    "cross_attention": CrossAttentionFusion,
    "mbt": MBTFusion,
    "tokenfusion": TokenFusion,
    "geminifusion": GeminiFusion,
    "dynmm": DynMM,
}
# 'mango' is imported lazily: its module imports this package.
NAMES: tuple[str, ...] = ("mango", *BASELINES)

__all__ = ["BASELINES", "NAMES", "FusionOutput", "build", "default_config"]


def _unknown(name: object) -> ValueError:
    return ValueError(f"unknown fusion method {name!r}; valid names: {', '.join(NAMES)}")


def default_config(name: str, *, dense: bool = False) -> ml_collections.ConfigDict:
    """The fields and defaults of method `name` (see the module docstring), with `name` set;
    `dense`: the defaults for a task head that decodes a token grid (the class's
    `DENSE_DEFAULTS` over its `DEFAULTS`)."""
    if name == "mango":
        from mango_jax.fusion.mango import default_config as mango_default_config

        return mango_default_config()
    if name not in BASELINES:
        raise _unknown(name)
    cls = BASELINES[name]
    return ml_collections.ConfigDict(
        {"name": name, **cls.DEFAULTS, **(cls.DENSE_DEFAULTS if dense else {})})


def build(
    config: ml_collections.ConfigDict,
    *,
    dim: int,
    tokens: tuple[int, int],
    rngs: nnx.Rngs,
) -> nnx.Module:
    """Builds the fusion module `config.name` for streams of width `dim` and `tokens = (M, K)`.

    For a baseline, fields missing from `config` take their defaults; a field the method does
    not have is an error (it is most likely a typo).
    """
    name = config.get("name")
    tokens = tuple(int(t) for t in tokens)
    if name == "mango":
        from mango_jax.fusion.mango import MangoFusion

        return MangoFusion(config, dim=dim, tokens=tokens, rngs=rngs)
    if name not in BASELINES:
        raise _unknown(name)
    full = default_config(name)
    unknown = sorted(set(config.keys()) - set(full.keys()))
    if unknown:
        raise ValueError(
            f"fusion method {name!r} has no field(s) {unknown}; its fields are "
            f"{sorted(k for k in full.keys() if k != 'name')}"
        )
    full.update(config)
    return BASELINES[name](full, dim=dim, tokens=tokens, rngs=rngs)
