"""The multimodal model: encoders E → fusion (MANGO's G or a baseline) → task head.

`model(batch) -> ModelOutput`: the head runs on every stream the fusion returns and the
predictions are averaged (late fusion returns one stream per modality).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from mango_jax import encoders, fusion
from mango_jax.heads import ClassificationHead, DenseHead


def default_config() -> ml_collections.ConfigDict:
    """Model fields (README, "Model configuration").

    dim: token width D shared by encoders, fusion and head.
    tokens_per_modality: tokens each modality brings to the fusion; None keeps the encoders'
      natural counts (they must then be equal); a number resamples both to it.
    latent_model: True: E is a transformer encoder (ViT / text) or an MLP; False: only the
      tokenizer (patch/embedding/linear projection) — the Tables 6-7 ablation.
    encoder: `mango_jax.encoders.default_config()`.
    fusion: `mango_jax.fusion.default_config(name)`; 'mango' by default.
    head_dropout, decoder_width: classifier dropout; dense decoder channels.
    modality_dropout: q, the probability that a training example loses one of its modalities
      (each with q / 2): its scale-fixed tokens are replaced by zeros (latent filling) and its
      fusion aux losses are not counted, so the model learns to predict from either modality
      alone (`mango_jax.robustness` evaluates the missing-modality strategies).
    """
    config = ml_collections.ConfigDict()
    config.dim = 256
    config.tokens_per_modality = ml_collections.config_dict.placeholder(int)
    config.latent_model = True
    config.encoder = encoders.default_config()
    config.fusion = fusion.default_config("mango")
    config.head_dropout = 0.0
    config.decoder_width = 128
    config.modality_dropout = 0.0
    return config


class ModelOutput(NamedTuple):
    """`prediction` and the fusion's per-example `[B]` aux losses and metrics (FusionOutput)."""

    prediction: jax.Array
    aux_losses: dict[str, jax.Array]
    metrics: dict[str, jax.Array]


def fixed_scale(tokens: jax.Array, eps: float = 1e-12) -> jax.Array:
    """Standardise each token over its channels, with no learnable gain.

    The NLL of E's output could otherwise be lowered without limit by an encoder that shrinks
    its features; with every token at unit RMS, E cannot change the scale G sees. The tiny
    `eps` keeps this exact for any token RMS ≫ 1e-6, so the NLL's gradient gives E no
    incentive to shrink (a larger eps would reward tokens whose variance approaches it).
    """
    mean = jnp.mean(tokens, axis=-1, keepdims=True)
    var = jnp.var(tokens, axis=-1, keepdims=True)
    return (tokens - mean) * jax.lax.rsqrt(var + eps)


def token_counts(config, info, modalities) -> tuple[int, int]:
    """(M, K) the fusion sees: the encoders' natural counts unless a count is set."""
    if config.tokens_per_modality is not None:
        return config.tokens_per_modality, config.tokens_per_modality
    return tuple(encoders.natural_tokens(info.modality_kinds[m], info.modality_shapes[m],
                                         config.encoder) for m in modalities)


class MultimodalModel(nnx.Module):
    """`batch[modality_a], batch[modality_b]` -> prediction (logits or images).

    One head per fusion output stream (late fusion: one per modality), predictions averaged.
    `info` is the dataset's `mango_jax.data.DatasetInfo`; `modalities` the two batch keys.
    """

    def __init__(self, config: ml_collections.ConfigDict, info, modalities, *,
                 rngs: nnx.Rngs):
        self.modalities = tuple(modalities)
        self.task = info.task
        tokens = token_counts(config, info, self.modalities)
        enc = []
        for modality, count in zip(self.modalities, tokens, strict=True):
            enc.append(encoders.ModalityEncoder(
                info.modality_kinds[modality], tuple(info.modality_shapes[modality]),
                dim=config.dim, num_tokens=count, latent=config.latent_model,
                config=config.encoder, rngs=rngs, vocab_size=info.vocab_size,
                pretrained=config.encoder.pretrained.get(modality)))
        self.encoder_a, self.encoder_b = enc
        self.fusion = fusion.build(config.fusion, dim=config.dim, tokens=tokens, rngs=rngs)
        streams = self._fused_shapes(config, tokens)
        self.heads = nnx.List([self._head(config, info, shape[1], rngs) for shape in streams])
        # Runs trained before the field existed have none in their config.json.
        self.modality_dropout = float(config.get("modality_dropout", 0.0))
        if not 0.0 <= self.modality_dropout <= 1.0:
            raise ValueError(f"model.modality_dropout={self.modality_dropout} must lie in [0, 1]")
        if self.modality_dropout:
            self.modality_rng = rngs["dropout"].fork()

    def _head(self, config, info, fused_tokens: int, rngs: nnx.Rngs) -> nnx.Module:
        if info.task in ("multiclass", "multilabel"):
            return ClassificationHead(config.dim, info.num_classes, dropout=config.head_dropout,
                                      rngs=rngs)
        if info.task in ("segmentation", "translation"):
            image = next(m for m in self.modalities if info.modality_kinds[m] == "image")
            shape = info.modality_shapes[image]
            patch = config.encoder.patch_size
            out = info.num_classes if info.task == "segmentation" else 3
            return DenseHead(config.dim, fused_tokens, (shape[0] // patch, shape[1] // patch),
                             patch, out, width=config.decoder_width,
                             squash=info.task == "translation", rngs=rngs)
        raise ValueError(f"unknown task {info.task!r}")

    def _fused_shapes(self, config, tokens) -> list[tuple[int, ...]]:
        """Shapes of the fusion's output streams, found by tracing it (no compute)."""
        a = jax.ShapeDtypeStruct((1, tokens[0], config.dim), jnp.float32)
        b = jax.ShapeDtypeStruct((1, tokens[1], config.dim), jnp.float32)
        out = nnx.eval_shape(lambda f, a, b: f(a, b), self.fusion, a, b)
        return [stream.shape for stream in out.streams]

    def features(self, batch, *, deterministic: bool = True):
        """Scale-fixed latent tokens `F_A: [B, M, D]`, `F_B: [B, K, D]`.

        A token-id modality's padding mask travels as `batch[f"{modality}_mask"]` where the data
        pipeline writes one."""
        a, b = (encoder(batch[m], mask=batch.get(f"{m}_mask"), deterministic=deterministic)
                for encoder, m in zip((self.encoder_a, self.encoder_b), self.modalities,
                                      strict=True))
        return fixed_scale(a), fixed_scale(b)

    def data_init(self, batch) -> None:
        """The fusion's data-dependent initialisation (`FusionModule.data_init`) from `batch`'s
        scale-fixed features, jitted; nothing is computed when the fusion has none."""
        if not self.fusion.needs_data_init():
            return
        graphdef, state = nnx.split(self)

        def init(state, batch):
            model = nnx.merge(graphdef, state)
            model.fusion.data_init(*model.features(batch))
            return nnx.state(model)

        inputs = {m: batch[m] for m in self.modalities}
        nnx.update(self, jax.jit(init)(state, inputs))

    def from_features(self, a, b, *, deterministic: bool = True) -> ModelOutput:
        """Fusion and heads on given scale-fixed tokens `a [B, M, D]`, `b [B, K, D]` (e.g. a
        missing modality's latent filling or its flow imputation)."""
        fused = self.fusion(a, b, deterministic=deterministic)
        predictions = [head(s, deterministic=deterministic)
                       for head, s in zip(self.heads, fused.streams, strict=True)]
        prediction = sum(predictions[1:], predictions[0]) / len(predictions)
        return ModelOutput(prediction, dict(fused.aux_losses), dict(fused.metrics or {}))

    def _drop_modality(self, a, b):
        """Modality dropout (training only): `(a, b, kept [B])`, a dropped modality zeroed."""
        u = jax.random.uniform(self.modality_rng(), (a.shape[0],))
        q = self.modality_dropout
        drop_a, drop_b = u < q / 2, (u >= q / 2) & (u < q)
        a = jnp.where(drop_a[:, None, None], 0.0, a).astype(a.dtype)
        b = jnp.where(drop_b[:, None, None], 0.0, b).astype(b.dtype)
        return a, b, ~(drop_a | drop_b)

    def __call__(self, batch, *, deterministic: bool = True) -> ModelOutput:
        a, b = self.features(batch, deterministic=deterministic)
        if deterministic or not self.modality_dropout:
            return self.from_features(a, b, deterministic=deterministic)
        a, b, kept = self._drop_modality(a, b)
        out = self.from_features(a, b, deterministic=deterministic)
        kept = kept.astype(jnp.float32)
        return out._replace(aux_losses={k: v * kept for k, v in out.aux_losses.items()})
