r"""Converts pytorch-fid's Inception weights to mango_jax's `.npz` format.

    python -m mango_jax.metrics.convert_inception \
        --src=pt_inception-2015-12-05-6726825d.pth --dst=inception_fid.npz

The `.pth` file is the one pytorch-fid downloads (its `FID_WEIGHTS_URL`); get it wherever you
have network access and PyTorch. This command needs PyTorch only to unpickle that file: `torch`
is imported here, lazily, and is never a dependency of mango_jax. The classifier (`fc.*`) and the
BatchNorm step counters (`*.num_batches_tracked`) are dropped; every other tensor is kept under
its PyTorch name and layout (see `mango_jax.metrics.inception` for the format), and the result
is checked key by key before it is written.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from absl import app, flags

from mango_jax.metrics import inception

DROPPED_PREFIXES = ("fc.", "AuxLogits.")
DROPPED_SUFFIXES = (".num_batches_tracked",)


def import_torch():
    """Imports PyTorch or explains, in one error, why and how to get it."""
    try:
        import torch  # noqa: PLC0415 - deliberately lazy: torch is no dependency of mango_jax
    except ImportError as e:
        raise ImportError(
            "convert_inception needs PyTorch to read the .pth file, and PyTorch is not "
            "installed (mango_jax itself never depends on it). Run this converter once where "
            "both mango_jax and torch are installed (e.g. `pip install torch` in a separate "
            "virtual environment) and copy the .npz it writes to this machine."
        ) from e
    return torch


def convert_state_dict(state_dict: Mapping[str, object]) -> dict[str, np.ndarray]:
    """PyTorch state dict (tensors or arrays) -> checked `{name: float32 array}`."""
    out = {}
    for key, value in state_dict.items():
        if key.startswith(DROPPED_PREFIXES) or key.endswith(DROPPED_SUFFIXES):
            continue
        if hasattr(value, "detach"):  # a torch.Tensor
            value = value.detach().cpu().numpy()
        out[key] = np.asarray(value, np.float32)
    inception.check_state_dict(out, "converted state dict")
    return out


def load_pth(path: str) -> dict[str, np.ndarray]:
    torch = import_torch()
    state_dict = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state_dict, Mapping):
        raise ValueError(f"{path} holds a {type(state_dict).__name__}, not a state dict")
    if "state_dict" in state_dict and isinstance(state_dict["state_dict"], Mapping):
        state_dict = state_dict["state_dict"]
    return convert_state_dict(state_dict)


def convert(src: str, dst: str) -> dict[str, np.ndarray]:
    tensors = load_pth(src)
    inception.save_npz(tensors, dst)
    return tensors


def define_flags(flag_values=flags.FLAGS) -> None:
    flags.DEFINE_string("src", None, "pytorch-fid's pt_inception-2015-12-05-*.pth.",
                        flag_values=flag_values)
    flags.DEFINE_string("dst", "inception_fid.npz", "Output .npz file.",
                        flag_values=flag_values)
    flags.mark_flag_as_required("src", flag_values=flag_values)


def main(argv, flag_values=flags.FLAGS) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    tensors = convert(flag_values.src, flag_values.dst)
    n = sum(int(np.prod(v.shape)) for v in tensors.values())
    print(f"wrote {flag_values.dst}: {len(tensors)} tensors, {n:,} numbers")


if __name__ == "__main__":
    define_flags()
    app.run(main)
