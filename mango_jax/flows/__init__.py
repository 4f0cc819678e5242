"""Invertible flow layers and the bijective network G of MANGO.

`build(config, rngs=...)` returns G for `config.layer` ('mango', or a flow baseline of the
ablation). Every layer keeps the contract of `mango_jax.flows.base`.

A layer kind is one module of this package that defines
`make_block(config, index, tokens, *, rngs, param_dtype) -> Sequential` (block `index` of G for
`tokens = (M, K)`) and, if it has fields of its own, `DEFAULTS` (its sub-config
`flow.<kind>.*`). Every module of the package is imported here, so a new kind is a new file.
"""

from __future__ import annotations

import importlib
import pkgutil

import jax.numpy as jnp
import ml_collections
from flax import nnx

from mango_jax.flows.actnorm import ActNorm
from mango_jax.flows.base import InvertibleLayer, Sequential
from mango_jax.flows.coupling import AffineCoupling
from mango_jax.flows.ica import ICA
from mango_jax.flows.lica import LICA
from mango_jax.flows.prior import gaussian_log_prob, log_likelihood, nll_bits_per_dim

__all__ = [
    "ActNorm", "AffineCoupling", "ICA", "InvertibleLayer", "LICA", "Sequential", "build",
    "default_config", "gaussian_log_prob", "log_likelihood", "nll_bits_per_dim", "token_counts",
    "LAYERS",
]

DEFAULT_BLOCK_PATTERN = ("mmca_ab", "mmca_ba", "imca_1", "imca_2", "imca_3", "imca_4",
                         "lica", "lica", "coupling")

# Layer kind -> its module (see the module docstring).
KINDS = {info.name: module for info in pkgutil.iter_modules(__path__)
         if hasattr(module := importlib.import_module(f"{__name__}.{info.name}"), "make_block")}
LAYERS = tuple(KINDS)


def default_config() -> ml_collections.ConfigDict:
    """G at the paper's size. Fields (README, "Flow configuration"):

    layer: 'mango' | 'realnvp' | 'glow' | 'flowpp' | 'attnflow' (Table 4 ablation).
    num_blocks: L, the number of blocks (paper 12; ablations 6, 8, 16).
    dim: token width D. num_heads: attention heads (D must be divisible).
    tokens_per_modality: (M, K), tokens of modality A and B; MMCA needs M = K, IMCA even counts.
    block_pattern: layer kinds of one block, in order ('mmca_ab', 'mmca_ba', 'imca_1'..'imca_4',
      'lica', 'coupling', 'actnorm').
    imca_split: 'contiguous' halves (paper) or 'interleave' (even/odd, the authors' release).
    ica_mixing_budget: total attention mass Σ(1 − a_min) over all ICA layers of G; bounds the
      whole flow's conditioning independently of depth (mango_jax.flows.ica).
    coupling_hidden: hidden width of coupling conditioners. max_log_scale: bound c of the
      coupling log-scale (each layer scales by at most e^c).
    remat: rematerialise each block in the backward pass. seed: LICA permutations.
    scan: store G's repeated blocks (or pairs of blocks) stacked and run them as one
      `jax.lax.scan` (default): XLA compiles one block instead of L and the optimiser updates
      one array per layer instead of L (same values; False stores and runs them one by one).
    param_dtype: 'float32' (or 'float64' under x64).
    <kind>: the fields of a layer kind that has its own, declared by its module (`DEFAULTS`),
      e.g. `glow.kernel_size`, `flowpp.num_components`.
    """
    config = ml_collections.ConfigDict()
    config.layer = "mango"
    config.num_blocks = 12
    config.dim = 256
    config.num_heads = 8
    config.tokens_per_modality = (256, 256)
    config.block_pattern = DEFAULT_BLOCK_PATTERN
    config.imca_split = "contiguous"
    config.ica_mixing_budget = 4.8
    config.coupling_hidden = 512
    config.max_log_scale = 2.0
    config.remat = False
    config.scan = True
    config.seed = 0
    config.param_dtype = "float32"
    for kind, module in KINDS.items():
        if hasattr(module, "DEFAULTS"):
            config[kind] = ml_collections.ConfigDict(module.DEFAULTS)
    return config


def token_counts(config) -> tuple[int, int]:
    tokens = config.tokens_per_modality
    if isinstance(tokens, int):
        return tokens, tokens
    m, k = tokens
    return int(m), int(k)


def build(config: ml_collections.ConfigDict, *, rngs: nnx.Rngs) -> Sequential:
    """G: `config.num_blocks` blocks of `config.layer`, as one `Sequential` of blocks."""
    if config.layer not in KINDS:
        raise ValueError(f"flow.layer={config.layer!r}; expected one of {LAYERS}")
    tokens = token_counts(config)
    param_dtype = jnp.dtype(config.param_dtype)
    make_block = KINDS[config.layer].make_block
    return Sequential([make_block(config, i, tokens, rngs=rngs, param_dtype=param_dtype)
                       for i in range(config.num_blocks)], remat=config.remat,
                      scan=config.scan)
