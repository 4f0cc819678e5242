"""The MANGO block: ICA layers on a configurable list of partitions, then affine coupling."""

from __future__ import annotations

import ml_collections
from flax import nnx

from mango_jax.flows.actnorm import ActNorm
from mango_jax.flows.base import InvertibleLayer, Sequential
from mango_jax.flows.coupling import AffineCoupling
from mango_jax.flows.ica import ICA, min_identity_for_depth
from mango_jax.flows.lica import LICA
from mango_jax.flows.partitions import PARTITIONS, partition

LAYER_KINDS = PARTITIONS + ("lica", "coupling", "actnorm")
ICA_KINDS = PARTITIONS + ("lica",)


def num_ica_layers(config: ml_collections.ConfigDict) -> int:
    return config.num_blocks * sum(kind in ICA_KINDS for kind in config.block_pattern)


def make_layer(kind: str, config, tokens: tuple[int, int], block: int, position: int, *,
               min_identity: float, rngs: nnx.Rngs, param_dtype) -> InvertibleLayer:
    """One layer of a MANGO block; `block` and `position` seed the fixed LICA permutations."""
    dim, heads = config.dim, config.num_heads
    if kind in PARTITIONS:
        idx1, idx2 = partition(kind, tokens, config.imca_split)
        return ICA(dim, heads, idx1, idx2, min_identity=min_identity, rngs=rngs,
                   param_dtype=param_dtype)
    if kind == "lica":
        return LICA(dim, heads, sum(tokens), min_identity=min_identity,
                    seed=config.seed * 1_000_003 + 1000 * block + position, rngs=rngs,
                    param_dtype=param_dtype)
    if kind == "coupling":
        return AffineCoupling(dim, config.coupling_hidden, parity=block,
                              max_log_scale=config.max_log_scale, rngs=rngs,
                              param_dtype=param_dtype)
    if kind == "actnorm":
        return ActNorm(dim, param_dtype=param_dtype)
    raise ValueError(f"unknown layer {kind!r} in flow.block_pattern; expected one of {LAYER_KINDS}")


def make_block(config, block: int, tokens: tuple[int, int], *, rngs: nnx.Rngs,
               param_dtype) -> Sequential:
    """`config.block_pattern`; default (paper): MMCA A→B, B→A, the four IMCA, two LICA, one
    coupling layer. Every ICA layer of G has the floor a_min that spends the mixing budget
    over all of them (`min_identity_for_depth`)."""
    min_identity = min_identity_for_depth(config.ica_mixing_budget, num_ica_layers(config))
    return Sequential([
        make_layer(kind, config, tokens, block, position, min_identity=min_identity, rngs=rngs,
                   param_dtype=param_dtype)
        for position, kind in enumerate(config.block_pattern)])
