"""What the benchmark measures: MANGO and reference fusions built from one config.

A `Spec` holds a model config (fusion 'mango'), the dataset's `DatasetInfo`, the run sizes and
the references; it comes from a built-in preset or from an experiment config file. A reference
(`Reference`) is MANGO's model with G replaced by another fusion of the same width, token count
and heads: 'transformer', a joint pre-LN transformer (`fusion.default_config('concat')`,
mode='token'), or any fusion method of the registry. Its depth is either G's block count
('equal') or the number of fusion layers that brings the whole model's parameter count closest
to MANGO's ('params', how Table 8 compares models of similar size). Inputs are synthetic, so no
prepared dataset is needed.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from mango_jax import data, fusion
from mango_jax import model as model_lib
from mango_jax.bench import xla
from mango_jax.data.core import DataNotFoundError, DatasetInfo
from mango_jax.flows import checks
from mango_jax.flows.base import with_scans_unrolled
from mango_jax.nn import freeze
from mango_jax.train import optim
from mango_jax.train.loop import parameter_counts
from mango_jax.train.sharding import DATA_AXES, batch_sharding, state_shardings
from mango_jax.train.step import StepConfig, make_train_step

PRESETS = ("paper_nyudv2", "small")
# Presets that are an experiment's config, `{name: its module}` (`get_config()` with no
# argument; `experiments.bench` imports it): the paper's NYUDv2 protocol with MAE's ViT-B/16.
CONFIG_PRESETS = {"paper_nyudv2_mae": "experiments.nyudv2"}
DEPTH_RULES = ("equal", "params")


@dataclasses.dataclass(frozen=True)
class Reference:
    """A fusion measured beside MANGO: `name` ('transformer' or a registry name) and its depth
    rule ('equal': one layer per flow block; 'params': the layer count whose model has the
    parameter count nearest MANGO's)."""

    name: str
    depth: str = "equal"

    def __post_init__(self):
        if self.depth not in DEPTH_RULES:
            raise ValueError(f"reference {self.name!r}: depth rule {self.depth!r}; expected one "
                             f"of {DEPTH_RULES}")
        if self.name != "transformer" and self.name not in BASELINES:
            raise ValueError(f"reference {self.name!r} is neither 'transformer' nor a fusion "
                             f"method; choose from {BASELINES}")

    @classmethod
    def parse(cls, text: str) -> Reference:
        """`name` or `name=equal|params` (the `--references` flag's items)."""
        name, _, depth = text.partition("=")
        return cls(name.strip(), depth.strip() or "equal")


# The fusion methods a reference can be (MANGO is what they are measured against).
BASELINES = tuple(name for name in fusion.NAMES if name != "mango")

# Table 8's comparison: the transformer at G's depth, GeminiFusion and TokenFusion at MANGO's
# parameter count; an experiment on Table 8's dataset (NYUDv2) takes it too. At another
# experiment's size the cross-attention fusion is the reference.
TABLE8_REFERENCES = (Reference("transformer"), Reference("geminifusion", "params"),
                     Reference("tokenfusion", "params"))
TABLE8_DATASET = "nyudv2"
EXPERIMENT_REFERENCES = (Reference("transformer"), Reference("cross_attention"))

PAPER_ENCODER_MAPPING = (
    "The paper's encoders are MAE's ViT (its ref. [14]) for RGB and for depth, at 256 x 256, "
    "with L = 12 blocks in G; it states neither the ViT's size nor G's width. MAE's smallest "
    "released encoder, ViT-B/16, has 86M parameters by itself, more than Table 8's 72.9M for "
    "the whole model, so the paper's encoders must be smaller. We use the closest ViT: patch 16 "
    "(16 x 16 = 256 tokens per modality, the token count of G's default config), ViT-S width "
    "D = 384 with 6 heads and MLP ratio 4, one encoder per modality, and depth 7, the depth at "
    "which the whole model's parameter count is nearest 72.9M. G has the same width (the model "
    "shares D), 8 heads, coupling hidden width 512. GFLOPs then follow from this choice; they "
    "were not fitted.")


@dataclasses.dataclass
class Spec:
    """A benchmark setting: the MANGO model config, its dataset and the run sizes."""

    name: str
    model: ml_collections.ConfigDict
    info: DatasetInfo
    modalities: tuple[str, str]
    optimizer: ml_collections.ConfigDict
    batch_size: int
    compute_dtype: str
    sweep_tokens: tuple[int, ...]
    sweep_blocks: int
    references: tuple[Reference, ...] = TABLE8_REFERENCES
    # Both modalities images of one grid (RGB-depth): references take their homogeneous
    # defaults (`fusion.default_config`), as the experiment configs' baselines do.
    homogeneous: bool = False
    notes: dict = dataclasses.field(default_factory=dict)


def segmentation_info(name: str, image_size: int, num_classes: int, *,
                      depth_channels: int = 1) -> DatasetInfo:
    """An RGB-D segmentation `DatasetInfo` (NYUDv2 / SUN RGB-D layout) without the data."""
    s = int(image_size)
    return DatasetInfo(
        name=name, task="segmentation", num_classes=num_classes,
        modality_shapes={"rgb": (s, s, 3), "depth": (s, s, depth_channels)},
        modality_kinds={"rgb": "image", "depth": "image"}, vocab_size=None,
        label_shape=(s, s), eval_label_shape=(s, s), label_dtype="int32", ignore_index=255,
        class_names=None, split_sizes={"train": 0})


def preset(name: str) -> Spec:
    """`paper_nyudv2`: the paper's NYUDv2 setting (`PAPER_ENCODER_MAPPING`); `small`: a toy
    version of it that runs in about a minute on a laptop CPU."""
    config = model_lib.default_config()
    flow = config.fusion.flow
    if name == "paper_nyudv2":
        info = segmentation_info("nyudv2", 256, 40)
        config.dim = 384
        config.encoder.update(patch_size=16, depth=7, num_heads=6, mlp_ratio=4.0)
        flow.update(num_blocks=12, num_heads=8, coupling_hidden=512)
        return Spec(name, config, info, ("rgb", "depth"), optim.default_config(), batch_size=2,
                    compute_dtype="float32", sweep_tokens=(64, 128, 256, 512, 1024),
                    sweep_blocks=2, homogeneous=True,
                    notes={"encoder_mapping": PAPER_ENCODER_MAPPING})
    if name == "small":
        info = segmentation_info("nyudv2", 64, 40)
        config.dim = 64
        config.decoder_width = 32
        config.encoder.update(patch_size=8, depth=1, num_heads=2)
        flow.update(num_blocks=2, num_heads=4, coupling_hidden=64)
        return Spec(name, config, info, ("rgb", "depth"), optim.default_config(), batch_size=2,
                    compute_dtype="float32", sweep_tokens=(16, 64, 256), sweep_blocks=1,
                    homogeneous=True)
    raise ValueError(f"unknown preset {name!r}; expected one of {PRESETS}")


def from_experiment(config: ml_collections.ConfigDict, name: str) -> Spec:
    """A Spec from an experiment config (`experiments/common.base_config` layout).

    The dataset's `DatasetInfo` comes from the prepared data when it exists; RGB-D
    segmentation datasets fall back to their known layout, so the bench runs without them.
    On NYUDv2 the references are Table 8's, elsewhere the transformer and cross-attention.
    """
    if config.model.fusion.name != "mango":
        raise ValueError(f"the bench compares MANGO with a transformer fusion; the config's "
                         f"fusion is {config.model.fusion.name!r}: pass a MANGO config")
    try:
        data.ensure_prepared(config.data)
        info = data.dataset_info(config.data)
    except DataNotFoundError:
        if config.data.name not in ("nyudv2", "sunrgbd"):
            raise
        spec = data.spec.get_spec(config.data.name)
        channels = 3 if config.data.get("depth_scale") == "tokenfusion" else 1
        info = segmentation_info(config.data.name, config.data.image_size, spec.num_classes,
                                 depth_channels=channels)
    flow = config.model.fusion.flow
    return Spec(name, config.model, info, tuple(config.data.modalities), config.optimizer,
                batch_size=int(config.batch_size), compute_dtype=config.compute_dtype,
                sweep_tokens=(64, 128, 256, 512, 1024), sweep_blocks=min(2, flow.num_blocks),
                references=(TABLE8_REFERENCES if config.data.name == TABLE8_DATASET
                            else EXPERIMENT_REFERENCES),
                homogeneous=bool(config.get("homogeneous_modalities", False)))


def reference_config(model_config: ml_collections.ConfigDict, name: str, num_layers: int, *,
                     dense: bool = False, homogeneous: bool = False) -> ml_collections.ConfigDict:
    """MANGO's model with G replaced by fusion `name` ('transformer': a joint pre-LN
    transformer over both modalities' tokens) with G's width and heads and `num_layers`
    layers; `dense`, `homogeneous`: the method's defaults for a dense head, for homogeneous
    modalities (`fusion.default_config`)."""
    config = model_config.copy_and_resolve_references()
    heads = config.fusion.flow.num_heads
    if name == "transformer":
        config.fusion = fusion.default_config("concat")
        config.fusion.update(mode="token")
    else:
        config.fusion = fusion.default_config(name, dense=dense, homogeneous=homogeneous)
    config.fusion.update(num_layers=int(num_layers), num_heads=heads)
    return config


def transformer_config(model_config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The baseline: a joint pre-LN transformer with G's width, depth (one layer per block)
    and heads."""
    return reference_config(model_config, "transformer", model_config.fusion.flow.num_blocks)


def model_parameter_counts(model_config, info: DatasetInfo, modalities) -> dict[str, int]:
    """`parameter_counts` of the model `model_config` builds. (It is built for real:
    `nnx.eval_shape` takes minutes at the paper's size, its tracing being quadratic in the
    number of random initialisations.)"""
    return parameter_counts(model_lib.MultimodalModel(model_config, info, tuple(modalities),
                                                      rngs=nnx.Rngs(0)))


def matched_depth(model_config, info: DatasetInfo, modalities, name: str, target: int, *,
                  dense: bool = False, homogeneous: bool = False,
                  max_layers: int = 256) -> tuple[int, int]:
    """`(layers, params)`: the layer count of reference `name` whose whole model has the
    parameter count nearest `target` (ties: fewer layers), and that count.

    A fusion's parameters grow by the same amount per layer, so the count is linear in the
    depth: two builds give the slope, and the two depths around the target are
    counted exactly.
    """

    counts: dict[int, int] = {}

    def count(layers: int) -> int:
        if layers not in counts:
            config = reference_config(model_config, name, layers, dense=dense,
                                      homogeneous=homogeneous)
            counts[layers] = model_parameter_counts(config, info, modalities)["total"]
        return counts[layers]

    one, two = count(1), count(2)
    if two <= one:
        raise ValueError(f"reference {name!r} has no parameters per layer; it cannot be matched "
                         f"to MANGO's parameter count: use its depth rule 'equal'")
    estimate = 1 + (target - one) / (two - one)
    candidates = sorted({min(max_layers, max(1, math.floor(estimate) + k)) for k in (0, 1)})
    counted = [(abs(count(n) - target), n) for n in candidates]
    _, layers = min(counted)
    return layers, count(layers)


def with_tokens(info: DatasetInfo, modalities, model_config, tokens: int):
    """`(info, model_config)` with `tokens` tokens per modality and no latent encoder.

    Image modalities are resized to an `h × w` patch grid with `h·w = tokens` (h the largest
    divisor ≤ √tokens), so dense heads still tile the grid; other modalities get
    `model.tokens_per_modality`. Encoders shrink to their tokenizers (`latent_model=False`), so
    the cost that changes with the token count is the fusion's.
    """
    config = model_config.copy_and_resolve_references()
    config.latent_model = False
    kinds = [info.modality_kinds[m] for m in modalities]
    if all(kind == "image" for kind in kinds):
        h = max(d for d in range(1, math.isqrt(tokens) + 1) if tokens % d == 0)
        size = (config.encoder.patch_size * h, config.encoder.patch_size * (tokens // h))
        shapes = dict(info.modality_shapes)
        for m in modalities:
            shapes[m] = (*size, *shapes[m][2:])
        dense = info.task in ("segmentation", "translation")
        label = (*size, *info.label_shape[2:]) if dense else info.label_shape
        info = dataclasses.replace(info, modality_shapes=shapes, label_shape=label,
                                   eval_label_shape=label)
    else:
        config.tokens_per_modality = tokens
    return info, config


def synthetic_batch(info: DatasetInfo, modalities, batch_size: int, seed: int = 0) -> dict:
    """A training batch of random inputs and labels with the dataset's shapes and dtypes."""
    rng = np.random.default_rng(seed)
    batch = {}
    for m in modalities:
        shape = (batch_size, *info.modality_shapes[m])
        if info.modality_kinds[m] == "tokens":
            batch[m] = rng.integers(1, info.vocab_size, shape, dtype=np.int32)
        else:
            batch[m] = rng.standard_normal(shape, dtype=np.float32)
    label_shape = (batch_size, *info.label_shape)
    if info.task in ("multiclass", "segmentation"):
        batch["label"] = rng.integers(0, info.num_classes, label_shape, dtype=np.int32)
    elif info.task == "multilabel":
        batch["label"] = (rng.random(label_shape) < 0.2).astype(np.float32)
    else:
        batch["label"] = rng.uniform(-1.0, 1.0, label_shape).astype(np.float32)
    batch["mask"] = np.ones((batch_size,), bool)
    return batch


def module_train_step(module, call, x):
    """`value_and_grad` of `sum(y²) + sum(logdet)` over a module's parameters and `x`, compiled,
    and a call that runs it to completion; `call(module, x)` returns `(y, logdet)`. The train
    step of one piece alone (`experiments/profile_block.py`, `experiments/flow_modes.py`)."""
    graph, params, rest = nnx.split(module, nnx.Param, ...)

    def loss(params, x):
        y, logdet = call(nnx.merge(graph, params, rest), x)
        return jnp.sum(y * y) + jnp.sum(logdet)

    program = xla.build(jax.jit(jax.value_and_grad(loss, argnums=(0, 1))), params, x)
    return program, lambda: jax.block_until_ready(program.compiled(params, x))


def one_device_mesh() -> jax.sharding.Mesh:
    """The training mesh on the first device alone: the bench measures one chip (and a batch
    of 1 need not divide over several)."""
    return jax.sharding.Mesh(np.array(jax.devices()[:1]).reshape(1, 1), DATA_AXES,
                             axis_types=(jax.sharding.AxisType.Auto,) * 2)


def _counted(make, graphdef, *state):
    """`make(graphdef)` with G's scans unrolled, for `xla.build(counted=...)`; None if none."""
    unrolled = with_scans_unrolled(graphdef, *state)
    return None if unrolled is None else make(unrolled)


class Subject:
    """One model with its optimiser state, ready to compile and time.

    The train step is the project's (`mango_jax.train.step.make_train_step`: split/merge in one
    `jax.jit`, state donated), so the bench measures what training runs.
    """

    def __init__(self, model_config, info: DatasetInfo, modalities, optimizer_config, *,
                 compute_dtype: str, seed: int = 0):
        self.info, self.modalities = info, tuple(modalities)
        model = model_lib.MultimodalModel(model_config, info, self.modalities,
                                          rngs=nnx.Rngs(params=seed, dropout=seed + 1))
        self.params = parameter_counts(model)
        self.tokens = model_lib.token_counts(model_config, info, self.modalities)
        self.dim = int(model_config.dim)
        self.has_flow = hasattr(model.fusion, "flow")
        tx, schedule = optim.make_optimizer(optimizer_config, total_steps=10_000)
        self.graphdef, state = nnx.split((model, nnx.Optimizer(model, tx, wrt=nnx.Param)))
        self.mesh = one_device_mesh()
        sharding = state_shardings(self.mesh, state)
        self.state = jax.device_put(state, sharding)
        step_config = StepConfig(task=info.task, ignore_index=info.ignore_index,
                                 compute_dtype=compute_dtype)
        self.compute_dtype = jnp.dtype(compute_dtype)
        self.train_step, self.counted_train_step = (
            None if graphdef is None else make_train_step(graphdef, step_config, schedule,
                                                          mesh=self.mesh, state_sharding=sharding)
            for graphdef in (self.graphdef, with_scans_unrolled(self.graphdef, state)))

    def batch(self, batch_size: int, seed: int = 0) -> dict:
        host = synthetic_batch(self.info, self.modalities, batch_size, seed)
        return jax.device_put(host, batch_sharding(self.mesh))

    def train_program(self, batch) -> xla.Program:
        return xla.build(self.train_step, self.state, batch, counted=self.counted_train_step)

    def predictor(self, program: xla.Program, batch):
        """A zero-argument call that runs the forward program of `forward_program`."""
        return lambda: program.compiled(self.inference_state, batch)

    def stepper(self, program: xla.Program, batch):
        """A zero-argument call that runs one train step and keeps the new state."""

        def step():
            self.state, logs = program.compiled(self.state, batch)
            return self.state, logs

        return step

    def forward_program(self, batch) -> xla.Program:
        """The model's inference forward pass in the compute dtype, for its FLOPs and
        latency: the trained model frozen for inference (`nn.freeze`), as `mango_jax.predict`
        serves it, its state kept as `inference_state`."""
        model, _ = nnx.merge(self.graphdef, self.state)
        graphdef, self.inference_state = nnx.split(freeze(model))
        dtype = self.compute_dtype

        def forward(graphdef):
            def run(state, batch):
                model = checks.cast_floats(nnx.merge(graphdef, state), dtype)
                inputs = {k: v.astype(dtype) if k not in ("label", "mask") and
                          jnp.issubdtype(v.dtype, jnp.floating) else v for k, v in batch.items()}
                return model(inputs, deterministic=True).prediction

            return jax.jit(run)

        return xla.build(forward(graphdef), self.inference_state, batch,
                         counted=_counted(forward, graphdef, self.inference_state))

    def flow_programs(self, batch_size: int, seed: int = 0):
        """`(forward, inverse, params, x)`: G and G⁻¹ jitted over G's parameters in the compute
        dtype, and unit-variance tokens `x: [B, M + K, D]` (the scale `fixed_scale` gives)."""
        if not self.has_flow:
            raise ValueError("this subject has no flow (its fusion is not MANGO)")
        model, _ = nnx.merge(self.graphdef, self.state)
        graphdef, params = nnx.split(checks.cast_floats(model.fusion.flow, self.compute_dtype))
        shape = (batch_size, sum(self.tokens), self.dim)
        x = jax.random.normal(jax.random.key(seed), shape, self.compute_dtype)

        def forward(graphdef):
            return jax.jit(lambda p, x: nnx.merge(graphdef, p)(x))

        def inverse(graphdef):
            return jax.jit(lambda p, z: nnx.merge(graphdef, p).inverse(z))

        return (*(xla.build(make(graphdef), params, x, counted=_counted(make, graphdef, params))
                  for make in (forward, inverse)), params, x)
