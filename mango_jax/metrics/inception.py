"""Inception-v3 of FID (pytorch-fid's `FIDInceptionA/C/E_1/E_2` variant) in Flax NNX.

The network is the one behind the standard FID numbers: TensorFlow's 2015-12-05 Inception graph
as ported by pytorch-fid (`pt_inception-2015-12-05-6726825d.pth`). It differs from torchvision's
Inception-v3 in two places, both reproduced here: the 3x3 average pools inside the A, C and E
blocks do not count the zero padding, and the last E block (`Mixed_7c`) pools with a 3x3 *max*
pool. Images `[B, H, W, 3]` in [-1, 1] (clipped to it) are resized to 299 x 299 (bilinear,
`align_corners=False`, no anti-aliasing, as `F.interpolate` in pytorch-fid), run to the end of
`Mixed_7c` and averaged over space: `[B, 2048]` pool3 features. Layout is NHWC throughout, and
the convolutions run at `Precision.HIGHEST` (true float32, not TF32 on GPU nor bf16 passes on
TPU), so features and FID do not depend on the backend's default matmul precision.

No weights are downloaded, ever. The user supplies them as an `.npz` file in this format
(`format='mango_jax.inception_fid.v1'`):

- one array per tensor of the PyTorch state dict, under the PyTorch name, in the PyTorch layout,
  float32: for each of the 94 conv blocks `P` (e.g. `Conv2d_1a_3x3`, `Mixed_5b.branch1x1`,
  `Mixed_7c.branch3x3dbl_3b`):
    - `P.conv.weight`        `[out, in, kh, kw]` (no bias: the BatchNorm follows),
    - `P.bn.weight`, `P.bn.bias`, `P.bn.running_mean`, `P.bn.running_var` `[out]`
      (BatchNorm in inference mode, eps = 1e-3);
- `__format__`: a 0-d string array holding `mango_jax.inception_fid.v1`.

Nothing else (no `fc.*`, no `num_batches_tracked`): a missing, unexpected or mis-shaped key is
an error that names the key. `python -m mango_jax.metrics.convert_inception --src=... --dst=...`
writes this file from pytorch-fid's `.pth` where PyTorch is installed; `save_npz` writes it from
a model, and `load_npz` reads it (NumPy only, `allow_pickle=False`).

Typical use:

    features_fn = make_fid_features_fn('inception_fid.npz')   # or a built model
    feats = features_fn(images)                                # [B, 2048]
    evaluator = make_evaluator('translation', num_classes=None, fid_features_fn=features_fn)
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mango_jax.metrics.segmentation import resize_bilinear

FORMAT = "mango_jax.inception_fid.v1"
INPUT_SIZE = 299
FEATURE_DIM = 2048
BN_EPS = 1e-3


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


def _max_pool(x, window: int, stride: int, padding: int = 0):
    pad = ((0, 0), (padding, padding), (padding, padding), (0, 0))
    return jax.lax.reduce_window(
        x, -jnp.inf, jax.lax.max, (1, window, window, 1), (1, stride, stride, 1), pad
    )


def _avg_pool_exclude_pad(x):
    """3x3, stride 1, padding 1 average that divides by the number of real pixels."""
    pad = ((0, 0), (1, 1), (1, 1), (0, 0))
    dims, strides = (1, 3, 3, 1), (1, 1, 1, 1)
    total = jax.lax.reduce_window(x, 0.0, jax.lax.add, dims, strides, pad)
    ones = jnp.ones((1, *x.shape[1:3], 1), x.dtype)
    count = jax.lax.reduce_window(ones, 0.0, jax.lax.add, dims, strides, pad)
    return total / count


class BasicConv2d(nnx.Module):
    """Conv (no bias) -> BatchNorm (inference, eps 1e-3) -> ReLU, as torchvision's."""

    def __init__(self, cin: int, cout: int, kernel_size, *, stride=1, padding=0, rngs: nnx.Rngs):
        ph, pw = _pair(padding)
        self.conv = nnx.Conv(
            cin, cout, _pair(kernel_size), strides=_pair(stride),
            padding=[(ph, ph), (pw, pw)], use_bias=False, precision=jax.lax.Precision.HIGHEST,
            rngs=rngs,
        )
        self.bn = nnx.BatchNorm(cout, epsilon=BN_EPS, use_running_average=True, rngs=rngs)

    def __call__(self, x):
        return jax.nn.relu(self.bn(self.conv(x)))


class FIDInceptionA(nnx.Module):
    def __init__(self, cin: int, pool_features: int, *, rngs: nnx.Rngs):
        self.branch1x1 = BasicConv2d(cin, 64, 1, rngs=rngs)
        self.branch5x5_1 = BasicConv2d(cin, 48, 1, rngs=rngs)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2, rngs=rngs)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1, rngs=rngs)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1, rngs=rngs)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1, rngs=rngs)
        self.branch_pool = BasicConv2d(cin, pool_features, 1, rngs=rngs)

    def __call__(self, x):
        b1 = self.branch1x1(x)
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = self.branch_pool(_avg_pool_exclude_pad(x))
        return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nnx.Module):
    def __init__(self, cin: int, *, rngs: nnx.Rngs):
        self.branch3x3 = BasicConv2d(cin, 384, 3, stride=2, rngs=rngs)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1, rngs=rngs)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1, rngs=rngs)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2, rngs=rngs)

    def __call__(self, x):
        b3 = self.branch3x3(x)
        bd = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return jnp.concatenate([b3, bd, _max_pool(x, 3, 2)], axis=-1)


class FIDInceptionC(nnx.Module):
    def __init__(self, cin: int, channels_7x7: int, *, rngs: nnx.Rngs):
        c7 = channels_7x7
        self.branch1x1 = BasicConv2d(cin, 192, 1, rngs=rngs)
        self.branch7x7_1 = BasicConv2d(cin, c7, 1, rngs=rngs)
        self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3), rngs=rngs)
        self.branch7x7_3 = BasicConv2d(c7, 192, (7, 1), padding=(3, 0), rngs=rngs)
        self.branch7x7dbl_1 = BasicConv2d(cin, c7, 1, rngs=rngs)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0), rngs=rngs)
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3), rngs=rngs)
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0), rngs=rngs)
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, (1, 7), padding=(0, 3), rngs=rngs)
        self.branch_pool = BasicConv2d(cin, 192, 1, rngs=rngs)

    def __call__(self, x):
        b1 = self.branch1x1(x)
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = self.branch7x7dbl_1(x)
        for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4,
                      self.branch7x7dbl_5):
            bd = layer(bd)
        bp = self.branch_pool(_avg_pool_exclude_pad(x))
        return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nnx.Module):
    def __init__(self, cin: int, *, rngs: nnx.Rngs):
        self.branch3x3_1 = BasicConv2d(cin, 192, 1, rngs=rngs)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2, rngs=rngs)
        self.branch7x7x3_1 = BasicConv2d(cin, 192, 1, rngs=rngs)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3), rngs=rngs)
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0), rngs=rngs)
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2, rngs=rngs)

    def __call__(self, x):
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_1(x)
        for layer in (self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4):
            b7 = layer(b7)
        return jnp.concatenate([b3, b7, _max_pool(x, 3, 2)], axis=-1)


class FIDInceptionE(nnx.Module):
    """`FIDInceptionE_1` (average pool without padding) or, with `max_pool`, `_2`."""

    def __init__(self, cin: int, *, max_pool: bool, rngs: nnx.Rngs):
        self.max_pool = max_pool
        self.branch1x1 = BasicConv2d(cin, 320, 1, rngs=rngs)
        self.branch3x3_1 = BasicConv2d(cin, 384, 1, rngs=rngs)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1), rngs=rngs)
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0), rngs=rngs)
        self.branch3x3dbl_1 = BasicConv2d(cin, 448, 1, rngs=rngs)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1, rngs=rngs)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1), rngs=rngs)
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0), rngs=rngs)
        self.branch_pool = BasicConv2d(cin, 192, 1, rngs=rngs)

    def __call__(self, x):
        b1 = self.branch1x1(x)
        b3 = self.branch3x3_1(x)
        b3 = jnp.concatenate([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], axis=-1)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = jnp.concatenate([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], axis=-1)
        pooled = _max_pool(x, 3, 1, 1) if self.max_pool else _avg_pool_exclude_pad(x)
        bp = self.branch_pool(pooled)
        return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class FIDInceptionV3(nnx.Module):
    """Images `[B, H, W, 3]` in [-1, 1] -> pool3 features `[B, 2048]` (float32).

    `build(seed)` gives random weights quickly, `load_npz(path)` the real ones. Attribute names
    follow torchvision / pytorch-fid, so the weight file's keys are the PyTorch names.
    """

    def __init__(self, *, rngs: nnx.Rngs, resize_input: bool = True):
        self.resize_input = resize_input
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2, rngs=rngs)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3, rngs=rngs)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1, rngs=rngs)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1, rngs=rngs)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3, rngs=rngs)
        self.Mixed_5b = FIDInceptionA(192, 32, rngs=rngs)
        self.Mixed_5c = FIDInceptionA(256, 64, rngs=rngs)
        self.Mixed_5d = FIDInceptionA(288, 64, rngs=rngs)
        self.Mixed_6a = InceptionB(288, rngs=rngs)
        self.Mixed_6b = FIDInceptionC(768, 128, rngs=rngs)
        self.Mixed_6c = FIDInceptionC(768, 160, rngs=rngs)
        self.Mixed_6d = FIDInceptionC(768, 160, rngs=rngs)
        self.Mixed_6e = FIDInceptionC(768, 192, rngs=rngs)
        self.Mixed_7a = InceptionD(768, rngs=rngs)
        self.Mixed_7b = FIDInceptionE(1280, max_pool=False, rngs=rngs)
        self.Mixed_7c = FIDInceptionE(2048, max_pool=True, rngs=rngs)

    def __call__(self, images: jax.Array) -> jax.Array:
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"expected images [B, H, W, 3], got {images.shape}")
        x = jnp.clip(images.astype(jnp.float32), -1.0, 1.0)
        if self.resize_input:
            x = resize_bilinear(x, (INPUT_SIZE, INPUT_SIZE))
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = _max_pool(x, 3, 2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = _max_pool(x, 3, 2)
        for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b,
                      self.Mixed_6c, self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b,
                      self.Mixed_7c):
            x = block(x)
        return jnp.mean(x, axis=(1, 2))


# ---------------------------------------------------------------------------------------------
# The .npz weight format.

# (PyTorch suffix, NNX path suffix) of each tensor of a conv block.
_TENSORS = (
    ("conv.weight", ("conv", "kernel")),
    ("bn.weight", ("bn", "scale")),
    ("bn.bias", ("bn", "bias")),
    ("bn.running_mean", ("bn", "mean")),
    ("bn.running_var", ("bn", "var")),
)


@functools.lru_cache(maxsize=1)
def _abstract():
    """`(graphdef, pure dict of ShapeDtypeStruct)` of the model, without computing anything."""
    graphdef, state = nnx.split(nnx.eval_shape(lambda: FIDInceptionV3(rngs=nnx.Rngs(0))))
    return graphdef, nnx.to_pure_dict(state)


def _blocks(params, prefix=()):
    """Yields `(dotted PyTorch name, block dict)` of every conv block of a params dict."""
    for key, value in params.items():
        if isinstance(value, Mapping):
            if "conv" in value and "bn" in value:
                yield ".".join(prefix + (str(key),)), value
            else:
                yield from _blocks(value, prefix + (str(key),))


def conv_block_names() -> list[str]:
    """Dotted PyTorch names of the 94 conv blocks, e.g. `Mixed_5b.branch1x1`."""
    return [name for name, _ in _blocks(_abstract()[1])]


def expected_shapes() -> dict[str, tuple[int, ...]]:
    """Every key of the `.npz` format (but `__format__`) with its PyTorch-layout shape."""
    shapes = {}
    for name, block in _blocks(_abstract()[1]):
        kh, kw, cin, cout = block["conv"]["kernel"].shape
        shapes[f"{name}.conv.weight"] = (cout, cin, kh, kw)
        for suffix in ("bn.weight", "bn.bias", "bn.running_mean", "bn.running_var"):
            shapes[f"{name}.{suffix}"] = (cout,)
    return shapes


def state_dict(model_or_params) -> dict[str, np.ndarray]:
    """Weights as `{PyTorch name: float32 array in PyTorch layout}` (from a model or params)."""
    params = model_or_params
    if isinstance(params, nnx.Module):
        params = nnx.to_pure_dict(nnx.state(params))
    out = {}
    for name, block in _blocks(params):
        for torch_suffix, (module, attr) in _TENSORS:
            value = np.asarray(block[module][attr], np.float32)
            if torch_suffix == "conv.weight":
                value = value.transpose(3, 2, 0, 1)  # HWIO -> OIHW
            out[f"{name}.{torch_suffix}"] = value
    return out


def check_state_dict(tensors: Mapping[str, np.ndarray], source: str = "weights") -> None:
    """Raises a `ValueError` naming the first missing, unexpected or mis-shaped key."""
    shapes = expected_shapes()
    for key, shape in shapes.items():
        if key not in tensors:
            raise ValueError(
                f"{source}: missing key '{key}' (expected shape {shape}; the format is "
                f"documented in mango_jax.metrics.inception)"
            )
        got = tuple(np.shape(tensors[key]))
        if got != shape:
            raise ValueError(f"{source}: key '{key}' has shape {got}, expected {shape}")
    for key in tensors:
        if key != "__format__" and key not in shapes:
            raise ValueError(
                f"{source}: unexpected key '{key}' (not a tensor of the FID Inception-v3; the "
                f"format is documented in mango_jax.metrics.inception)"
            )


def params_from_state_dict(tensors: Mapping[str, np.ndarray], source: str = "weights"):
    """`{PyTorch name: array}` -> the model's pure params dict (NHWC / HWIO), after checks."""
    check_state_dict(tensors, source)
    _, abstract = _abstract()

    def fill(node, prefix):
        if "conv" in node and "bn" in node:
            out = {"conv": {}, "bn": {}}
            for torch_suffix, (module, attr) in _TENSORS:
                value = np.asarray(tensors[f"{prefix}.{torch_suffix}"], np.float32)
                if torch_suffix == "conv.weight":
                    value = value.transpose(2, 3, 1, 0)  # OIHW -> HWIO
                out[module][attr] = jnp.asarray(value)
            return out
        return {k: fill(v, f"{prefix}.{k}" if prefix else str(k)) for k, v in node.items()}

    return fill(abstract, "")


def random_state_dict(seed: int = 0) -> dict[str, np.ndarray]:
    """Random weights in the `.npz` layout, drawn with NumPy (for tests and smoke runs).

    Conv weights are He-normal, BatchNorm scales, shifts and running statistics are random too,
    so the activations keep their scale through the 94 blocks and every tensor matters.
    """
    rng = np.random.default_rng(seed)
    out = {}
    for key, shape in expected_shapes().items():
        if key.endswith("conv.weight"):
            fan_in = int(np.prod(shape[1:]))
            value = rng.standard_normal(shape, np.float32) * np.sqrt(2.0 / fan_in)
        elif key.endswith(("bn.weight", "bn.running_var")):
            value = rng.uniform(0.5, 1.5, shape)
        else:
            value = rng.normal(0.0, 0.1, shape)
        out[key] = value.astype(np.float32)
    return out


def build(seed: int = 0) -> FIDInceptionV3:
    """The model with random weights from `random_state_dict(seed)` (about a second on CPU).

    `FIDInceptionV3(rngs=nnx.Rngs(seed))` works too but initialises eagerly, 94 convolutions
    one by one, which takes tens of seconds on a CPU.
    """
    return from_state_dict(random_state_dict(seed), f"random_state_dict({seed})")


def from_state_dict(tensors: Mapping[str, np.ndarray], source: str = "weights"):
    """Builds the model from `{PyTorch name: array}` (checked; nothing random is computed)."""
    graphdef, _ = _abstract()
    return nnx.merge(graphdef, params_from_state_dict(tensors, source))


def save_npz(model_or_tensors, path: str | os.PathLike) -> None:
    """Writes a model, its params or a `{PyTorch name: array}` dict in the `.npz` format."""
    tensors = model_or_tensors
    if isinstance(tensors, nnx.Module) or any(isinstance(v, Mapping) for v in tensors.values()):
        tensors = state_dict(tensors)
    tensors = {k: np.asarray(v, np.float32) for k, v in tensors.items()}
    check_state_dict(tensors, str(path))
    with open(path, "wb") as f:  # a file object keeps NumPy from appending '.npz'
        np.savez(f, __format__=np.array(FORMAT), **tensors)


def read_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Reads and checks a weight file; returns `{PyTorch name: array}`."""
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"Inception weights not found at {path}. Convert pytorch-fid's "
            f"pt_inception-2015-12-05-6726825d.pth with `python -m "
            f"mango_jax.metrics.convert_inception --src=... --dst={path}`; nothing is downloaded."
        )
    with np.load(path, allow_pickle=False) as data:
        tensors = {k: data[k] for k in data.files}
    fmt = tensors.get("__format__")
    if fmt is None or str(fmt) != FORMAT:
        raise ValueError(f"{path}: key '__format__' is {fmt!r}, expected '{FORMAT}'")
    check_state_dict(tensors, str(path))
    return tensors


def load_npz(path: str | os.PathLike) -> FIDInceptionV3:
    """Builds an `FIDInceptionV3` holding the weights of an `.npz` file."""
    return from_state_dict(read_npz(path), str(path))


class FeatureFn:
    """A feature extractor in functional form: `apply(params, images) -> [B, D]`.

    Calling it, `fn(images)`, uses its own `params` under `jax.jit`. The evaluator stores
    `params` in its state and calls `apply` (see `mango_jax.metrics.evaluator`), so the weights
    enter a jitted step as arguments instead of being baked into it as constants.
    """

    def __init__(self, model: nnx.Module, feature_dim: int = FEATURE_DIM):
        self.feature_dim = feature_dim
        graphdef, state = nnx.split(model)
        self.graphdef = graphdef
        self.params = nnx.to_pure_dict(state)
        self._jitted = jax.jit(self.apply)

    def apply(self, params, images: jax.Array) -> jax.Array:
        return nnx.merge(self.graphdef, params)(images)

    def __call__(self, images: jax.Array) -> jax.Array:
        return self._jitted(self.params, images)


def make_fid_features_fn(weights: str | os.PathLike | FIDInceptionV3) -> FeatureFn:
    """FID features `[B, 2048]` of images in [-1, 1], from a weight file or a built model."""
    model = weights if isinstance(weights, FIDInceptionV3) else load_npz(weights)
    return FeatureFn(model)
