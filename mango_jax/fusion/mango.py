"""MANGO as a fusion module: the bijective network G over both modalities' latent tokens.

`Z = G([F_A, F_B])`; the task head reads Z and the negative log-likelihood of F under the
flow, `−log N(Z; 0, I) − log|det ∂G/∂F|` in bits per dimension, is added to the loss with
weight `nll_weight` (λ; the paper leaves the weighting open).

Shrinking features cannot lower this NLL: the model feeds G scale-fixed tokens (each token
standardised without a learnable gain, `mango_jax.model.fixed_scale`), and every layer of G
has a bounded log-det (ICA: A_ii ∈ [a_min, 1]; coupling: |s| ≤ c; LICA: the W terms cancel),
so the NLL has a finite lower bound whatever the encoder does.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mango_jax import flows
from mango_jax.errors import ConfigError
from mango_jax.flows.glow import initialize_actnorms
from mango_jax.flows.impute import conditional_mode
from mango_jax.flows.mango import ICA_KINDS
from mango_jax.fusion.base import FusionModule, FusionOutput, output, register


@register
class MangoFusion(FusionModule):
    """`a: [B, M, D]`, `b: [B, K, D]` -> one stream `Z: [B, M + K, D]`, aux `nll` (weighted)
    and metric `nll_bpd`, both per example.

    Config: `nll_weight` (λ) and `flow`, G's fields (`mango_jax.flows.default_config()`); the
    model sets `flow.dim` and `flow.tokens_per_modality` from its encoders.
    """

    NAME = "mango"
    DEFAULTS = {"nll_weight": 0.01, "flow": flows.default_config()}

    @classmethod
    def resolve(cls, config, *, dim, tokens):
        """G's layer, depth and block pattern must be buildable; `flow.dim` and
        `flow.tokens_per_modality` are set from the encoders."""
        super().resolve(config, dim=dim, tokens=tokens)
        flow = config.flow
        if flow.layer not in flows.LAYERS:
            raise ConfigError(f"model.fusion.flow.layer={flow.layer!r}; valid: "
                              f"{', '.join(flows.LAYERS)}")
        if flow.num_blocks < 1:
            raise ConfigError(f"model.fusion.flow.num_blocks={flow.num_blocks}: G needs at "
                              "least one block")
        if flow.layer == "mango":
            unknown = [k for k in flow.block_pattern if k not in flows.mango.LAYER_KINDS]
            if unknown:
                raise ConfigError(f"model.fusion.flow.block_pattern has unknown layers "
                                  f"{unknown}; valid: {', '.join(flows.mango.LAYER_KINDS)}")
            pairs = any(kind.startswith("mmca") for kind in flow.block_pattern)
            if pairs and tokens[0] != tokens[1]:
                raise ConfigError(f"MANGO's cross-modal layers pair the two modalities token "
                                  f"by token, but they give {tokens[0]} and {tokens[1]} tokens; "
                                  "set model.tokens_per_modality to resample both to one count")
        flow.dim = dim
        flow.tokens_per_modality = tuple(tokens)

    def setup(self, config, *, rngs):
        flow_config = config.flow.copy_and_resolve_references()
        flow_config.dim = self.dim
        flow_config.tokens_per_modality = self.tokens
        self.nll_weight = float(config.nll_weight)
        self.flow_layer = flow_config.layer
        self.num_blocks = int(flow_config.num_blocks)
        self.block_pattern = tuple(flow_config.block_pattern)
        self.flow = flows.build(flow_config, rngs=rngs)
        self.has_actnorm = any(isinstance(node, flows.ActNorm)
                               for _, node in nnx.iter_graph(self.flow))

    def __call__(self, a, b, *, deterministic: bool = True) -> FusionOutput:
        del deterministic
        self.check(a, b)
        z, logdet = self.flow(jnp.concatenate([a, b], axis=1))
        nll = flows.nll_bits_per_dim(z, logdet).astype(jnp.float32)
        return output(z, aux_losses={"nll": self.nll_weight * nll}, metrics={"nll_bpd": nll})

    def log_likelihood(self, a, b) -> jax.Array:
        """`[B]` log p(F) in nats of the features F = [a, b] under G and its Gaussian prior."""
        return flows.log_likelihood(*self.flow(jnp.concatenate([a, b], axis=1)))

    def impute(self, features, missing, *, steps: int, step_size: float,
               project=None) -> jax.Array:
        """`F = [a, b]: [B, M + K, D]` with its `missing` tokens (`[B, M + K]` bool, e.g.
        `mango_jax.flows.impute.missing_mask`) set to `argmax log p(F)` given the others, by
        gradient ascent from their values in `features`
        (`mango_jax.flows.impute.conditional_mode`); pass `project=fixed_scale` to keep them
        scale-fixed."""
        return conditional_mode(lambda x: flows.log_likelihood(*self.flow(x)), features,
                                missing, steps=steps, step_size=step_size, project=project)

    def needs_data_init(self) -> bool:
        return self.has_actnorm

    def data_init(self, a, b) -> None:
        """Glow's data-dependent ActNorm initialisation (section 3.1) on G's input `[F_A, F_B]`:
        every ActNorm of G (Glow, Flow++ and AttnFlow blocks, or 'actnorm' in a MANGO block)
        leaves the batch with zero mean and unit variance per channel."""
        initialize_actnorms(self.flow, jnp.concatenate([a, b], axis=1))

    @property
    def ica_kinds(self) -> tuple[str, ...]:
        """The ICA / LICA layer kinds of a block of G, in block order (none unless G is built
        of MANGO blocks: the baselines' blocks have no ICA partitions)."""
        if self.flow_layer != "mango":
            return ()
        return tuple(kind for kind in self.block_pattern if kind in ICA_KINDS)

    def describe(self) -> dict[str, Any]:
        """G's layer kind (Table 4), depth (Tables 6-7) and partition families (Table 5:
        'mmca', 'imca', 'lica'; None for a baseline layer, which has no partitions)."""
        families = sorted({kind.split("_")[0] for kind in self.ica_kinds})
        return {"flow_layer": self.flow_layer, "num_blocks": self.num_blocks,
                "partitions": families if self.flow_layer == "mango" else None}

    def attention_maps(self, model, batch) -> dict[str, np.ndarray]:
        """The first block's ICA matrix of each partition kind for example 0, head 0: `[n, n]`
        (paper Figure 7); LICA's map is the attention over its mixed tokens. Jitted: the
        un-jitted walk over a paper-size block is slow."""
        graph, state = nnx.split(model)

        def maps_of(state, batch):
            model = nnx.merge(graph, state)
            a, b = model.features(batch)
            x = jnp.concatenate([a, b], axis=1)[:1]
            maps = {}
            block = model.fusion.flow.children()[0].children()
            for kind, layer in zip(model.fusion.block_pattern, block, strict=True):
                attn = None
                if isinstance(layer, flows.ICA):
                    attn = layer.attention(x[:, np.asarray(layer.idx1)])
                elif isinstance(layer, flows.LICA):
                    mixed = layer.mix.apply(x)
                    attn = layer.ica.attention(mixed[:, np.asarray(layer.ica.idx1)])
                if attn is not None and kind not in maps:
                    maps[kind] = attn[0, 0]
                x = layer(x)[0]
            return maps

        batch = {k: v for k, v in batch.items() if k in model.modalities}
        maps = jax.jit(maps_of)(state, batch)
        return {kind: np.asarray(maps[kind]) for kind in dict.fromkeys(self.ica_kinds)}

    def diagnostics(self, model, batch, workdir: str, results: dict) -> dict[str, Any]:
        """`attention.png`: the first block's ICA attention maps, where G has ICA layers."""
        del results
        if not self.ica_kinds:
            return {}
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        maps = self.attention_maps(model, batch)
        fig, axes = plt.subplots(1, len(maps), figsize=(3 * len(maps), 3.2), squeeze=False)
        for ax, (kind, attn) in zip(axes[0], maps.items(), strict=True):
            image = ax.imshow(attn, cmap="viridis")
            ax.set_title(kind)
            ax.set_xticks([])
            ax.set_yticks([])
            fig.colorbar(image, ax=ax, fraction=0.046)
        fig.suptitle("ICA attention, first block, head 0")
        fig.tight_layout()
        fig.savefig(os.path.join(workdir, "attention.png"), dpi=110)
        plt.close(fig)
        return {"attention_maps": "attention.png", "attention_kinds": list(maps)}
