"""The contract between a fusion module and the model around it."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from mango_jax.errors import ConfigError


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class FusionOutput:
    """What every fusion module returns (a frozen dataclass registered as a pytree).

    streams: one or more `[B, T, D']` token streams (T >= 1); the model applies its task head to
      each and averages the logits. A method that yields one pooled vector returns `[B, 1, D']`.
    aux_losses: per-example `[B]` float32 terms, already weighted, that the training step
      adds to the loss.
    metrics: per-example `[B]` float32 values to log only (e.g. MANGO's NLL in bits/dim, the
      fraction of tokens TokenFusion substituted); never added to the loss.
    Per example, because a module never sees the batch mask: the step averages each term over
    the real examples (`batch["mask"]`), so padded rows of an eval batch count for nothing.
    """

    streams: tuple[jax.Array, ...]
    aux_losses: dict[str, jax.Array] = dataclasses.field(default_factory=dict)
    metrics: dict[str, jax.Array] = dataclasses.field(default_factory=dict)


class FusionModule(nnx.Module):
    """The base of every fusion method: `module(a, b, deterministic=...) -> FusionOutput`.

    A method is one subclass with a `NAME`, registered with `@register`, built as
    `cls(config, dim=D, tokens=(M, K), rngs=...)`: this constructor checks and keeps the sizes
    every method needs and then calls the method's `setup` for its own fields and layers.
    What is special about a method stays with it: the training loop calls these hooks and
    knows no method by name.
    """

    # The registry name (`config.name`).
    NAME: ClassVar[str] = ""
    # The method's config fields and their defaults (besides `name`).
    DEFAULTS: ClassVar[dict[str, Any]] = {}
    # Fields whose default differs when the task head decodes a token grid (segmentation,
    # translation), e.g. DynMM's fusion-level decision.
    DENSE_DEFAULTS: ClassVar[dict[str, Any]] = {}
    # Fields whose default differs when the two modalities are homogeneous (RGB-depth: images of
    # one grid), e.g. TokenFusion's and GeminiFusion's weight sharing.
    HOMOGENEOUS_DEFAULTS: ClassVar[dict[str, Any]] = {}
    # Whether the streams keep a modality's tokens, so that a dense head can decode them
    # (False for the methods that pool each modality to one vector).
    KEEPS_TOKENS: ClassVar[bool] = True
    # Position-aligned methods pair token i of a with token i of b, so they need M == K.
    ALIGNED: ClassVar[bool] = False

    def __init__(self, config: ml_collections.ConfigDict, *, dim: int, tokens: tuple[int, int],
                 rngs: nnx.Rngs):
        if self.ALIGNED:
            require_equal_tokens(self.NAME, tokens)
        self.dim = dim
        self.tokens = tuple(int(t) for t in tokens)
        self.setup(config, rngs=rngs)

    @classmethod
    def resolve(cls, config: ml_collections.ConfigDict, *, dim: int,
                tokens: tuple[int, int]) -> None:
        """Checks the method's fields of `config` against the model's width and token counts
        and fills in those it derives from them, before the run's config is printed and saved
        (so that `config.json` is the model that ran). Raises ConfigError."""
        del dim, tokens
        if "num_layers" in config and config.num_layers < 1:
            raise ConfigError(f"model.fusion.num_layers={config.num_layers}: {cls.NAME} needs "
                              "at least one layer")

    def setup(self, config: ml_collections.ConfigDict, *, rngs: nnx.Rngs) -> None:
        """Checks the method's own fields of `config` and builds its layers (`self.dim`,
        `self.tokens` are set)."""
        del config, rngs

    def check(self, a: jax.Array, b: jax.Array) -> None:
        """`check_inputs` for this method's width and alignment."""
        check_inputs(self.NAME, a, b, self.dim, equal_tokens=self.ALIGNED)

    def describe(self) -> dict[str, Any]:
        """JSON-serialisable facts about the built module (e.g. MANGO's partition kinds),
        written into `results.json` beside the run's metadata."""
        return {}

    def needs_data_init(self) -> bool:
        """Whether `data_init` does anything (otherwise the model skips computing features)."""
        return type(self).data_init is not FusionModule.data_init

    def data_init(self, a: jax.Array, b: jax.Array) -> None:
        """Data-dependent initialisation (e.g. Glow's ActNorm) from the features `a`, `b` of the
        first global training batch, as the module receives them. The training loop calls it
        (through `MultimodalModel.data_init`, under jit) once, before the optimiser is built,
        and not when it resumes from a checkpoint. It may only assign parameters."""
        del a, b

    def diagnostics(self, model, batch, workdir: str, results: dict) -> dict[str, Any]:
        """Called once on process 0 after the final evaluation, with a host copy of the trained
        `model`, a small validation `batch` and `results` ({split: metrics}). It may write
        figures into `workdir`; what it returns (JSON-serialisable) goes into `results.json`."""
        del model, batch, workdir, results
        return {}


REGISTRY: dict[str, type[FusionModule]] = {}


def register(cls: type[FusionModule]) -> type[FusionModule]:
    """Class decorator: enters a fusion method into the registry under its `NAME`."""
    if not cls.NAME or cls.NAME in REGISTRY:
        raise ValueError(f"{cls.__name__}: NAME {cls.NAME!r} is empty or already registered")
    REGISTRY[cls.NAME] = cls
    return cls


def output(
    *streams: jax.Array,
    aux_losses: dict[str, jax.Array] | None = None,
    metrics: dict[str, jax.Array] | None = None,
) -> FusionOutput:
    """A FusionOutput with the per-example terms cast to float32 and checked to be `[B]`."""
    batch = streams[0].shape[0]

    def as_f32(terms):
        out = {}
        for name, value in (terms or {}).items():
            if jnp.shape(value) != (batch,):
                raise ValueError(
                    f"fusion output {name!r} has shape {jnp.shape(value)}; aux losses and "
                    f"metrics are per example, shape ({batch},): reduce every axis but the "
                    "batch axis (the training step takes the mean over real examples)")
            out[name] = jnp.asarray(value, jnp.float32)
        return out

    return FusionOutput(tuple(streams), as_f32(aux_losses), as_f32(metrics))


def require_equal_tokens(method: str, tokens: tuple[int, int]) -> None:
    """Position-aligned methods pair token i of one modality with token i of the other."""
    m, k = tokens
    if m != k:
        raise ValueError(
            f"'{method}' pairs each token with the token at the same position in the other "
            f"modality, so it needs equal token counts, got M={m} and K={k}. Make both encoders "
            "emit the same number of tokens (e.g. the same patch grid), or choose a method that "
            "accepts unequal counts ('cross_attention', 'mbt', 'concat' with mode='token')."
        )


def check_inputs(
    method: str, a: jax.Array, b: jax.Array, dim: int, *, equal_tokens: bool = False
) -> None:
    """Shapes are static under jit, so a malformed call fails here, before tracing the math.

    Token counts may differ from those the module was built for (e.g. evaluation at a larger
    resolution); only the position-aligned methods need `M == K` at every call.
    """
    if a.ndim != 3 or b.ndim != 3:
        raise ValueError(f"expected a [B, M, D] and b [B, K, D], got {a.shape} and {b.shape}")
    if a.shape[2] != dim or b.shape[2] != dim:
        raise ValueError(
            f"'{method}' was built for token width dim={dim}, got a {a.shape} and b {b.shape}; "
            "rebuild it with the encoders' output width."
        )
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"batch sizes differ: a {a.shape} vs b {b.shape}")
    if equal_tokens:
        require_equal_tokens(method, (a.shape[1], b.shape[1]))


def mean_pool(x: jax.Array) -> jax.Array:
    """`[B, T, D] -> [B, D]`: the pooled modality vector (vector fusion, DynMM's gate)."""
    return jnp.mean(x, axis=1)


def select(weights: jax.Array, *candidates: jax.Array) -> jax.Array:
    """`Σ_p weights[..., p] · candidates[p]`: token selection between candidate streams.

    `weights`: `[B, P]` per example or `[B, N, P]` per token, for `P` candidates `[B, N, D]`.
    With one-hot weights this picks one candidate per example or token (TokenFusion's
    substitution, DynMM's hard path choice); soft weights mix them (DynMM in training).
    """
    total = None
    for index, candidate in enumerate(candidates):
        w = weights[..., index].astype(candidate.dtype)
        term = w.reshape(w.shape + (1,) * (candidate.ndim - w.ndim)) * candidate
        total = term if total is None else total + term
    return total
