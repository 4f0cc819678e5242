"""Pretrained encoders from the files users download, read without PyTorch.

`load_pretrained(path)` returns a `ViTEncoder` (MAE, He et al. 2022) or a `TextEncoder` (CLIP's
text transformer, Radford et al. 2021) holding the checkpoint's weights and computing what the
reference implementation computes: the MAE encoder's tokens without the class token
(transformers' `ViTMAEModel(...).last_hidden_state[:, 1:]`, timm's `forward_features(x)[:, 1:]`),
or `CLIPTextModel(...).last_hidden_state`.

Files: `.safetensors` (through the `safetensors` package), a model folder as the hubs lay it out
(`model.safetensors` + `config.json`), or `.npz`. Naming schemes: the MAE release / timm
(`blocks.N.attn.qkv`), transformers' `ViTMAEModel` and `ViTMAEForPreTraining` (under `vit.`, the
decoder ignored), `CLIPTextModel` and `CLIPModel` (under `text_model.`, the vision tower and
projections ignored). Pickled PyTorch files are refused: we never unpickle.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from safetensors import SafetensorError, safe_open

from mango_jax.encoders.text import TextEncoder
from mango_jax.encoders.vit import ViTEncoder

# Head counts of the published widths (ViT-B, ViT-L, ViT-H/14: 16 heads of 80); any other
# width that is a multiple of 64 gets heads of 64, as ViTs and CLIP's text towers use.
KNOWN_HEADS = {768: 12, 1024: 16, 1280: 16}
# config.json's `hidden_act` -> mango_jax.nn.ACTIVATIONS.
HIDDEN_ACT = {"gelu": "gelu", "quick_gelu": "quick_gelu", "gelu_new": "gelu_tanh",
              "gelu_pytorch_tanh": "gelu_tanh"}
PICKLED = (".pth", ".pt", ".bin", ".ckpt", ".pkl")
# config.json's `model_type`s each kind reads (plain ViT shares ViTMAE's encoder names).
MODEL_TYPES = {"vit": ("vit_mae", "vit"), "text": ("clip", "clip_text_model")}

# Per scheme: canonical name -> the file's name. Canonical block names are `blocks.N.<part>`,
# with q/k/v separate (the MAE release stacks them in `attn.qkv`, read by `Checkpoint.take`).
_VIT_TIMM = {"patch": "patch_embed.proj", "cls_token": "cls_token", "position": "pos_embed",
             "norm": "norm", "norm1": "norm1", "norm2": "norm2", "out": "attn.proj",
             "fc1": "mlp.fc1", "fc2": "mlp.fc2", "block": "blocks.{}"}
_VIT_HF = {"patch": "embeddings.patch_embeddings.projection", "cls_token": "embeddings.cls_token",
           "position": "embeddings.position_embeddings", "norm": "layernorm",
           "norm1": "layernorm_before", "norm2": "layernorm_after",
           "query": "attention.attention.query", "key": "attention.attention.key",
           "value": "attention.attention.value", "out": "attention.output.dense",
           "fc1": "intermediate.dense", "fc2": "output.dense", "block": "encoder.layer.{}"}
_CLIP = {"embed": "embeddings.token_embedding", "position": "embeddings.position_embedding",
         "norm": "final_layer_norm", "norm1": "layer_norm1", "norm2": "layer_norm2",
         "query": "self_attn.q_proj", "key": "self_attn.k_proj", "value": "self_attn.v_proj",
         "out": "self_attn.out_proj", "fc1": "mlp.fc1", "fc2": "mlp.fc2",
         "block": "encoder.layers.{}"}
# A key that only this scheme has, after the prefix is removed.
_SCHEMES = (("patch_embed.proj.weight", "vit", _VIT_TIMM),
            ("embeddings.patch_embeddings.projection.weight", "vit", _VIT_HF),
            ("embeddings.token_embedding.weight", "text", _CLIP))


def convert_command(path: str) -> str:
    """The one-line command (run where PyTorch is installed) that rewrites a pickled state dict
    as safetensors. MAE's release nests the weights under 'model'."""
    out = str(Path(path).with_suffix(".safetensors"))
    return ("python -c \"import torch, safetensors.torch as st; "
            f"sd = torch.load('{path}', map_location='cpu'); sd = sd.get('model', sd); "
            f"st.save_file({{k: v.contiguous() for k, v in sd.items()}}, '{out}')\"")


class Checkpoint:
    """A checkpoint's tensors (read lazily), its `config.json` and its naming scheme."""

    def __init__(self, path: str | Path):
        path = Path(path)
        self.config: dict = {}
        if path.is_dir():
            folder = path
            path = folder / "model.safetensors"
            if not path.exists():
                pickled = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLED)
                hint = (f"; convert it: {convert_command(str(folder / pickled[0]))}" if pickled
                        else "")
                raise FileNotFoundError(f"{folder} has no model.safetensors{hint}")
        if path.suffix in PICKLED:
            raise ValueError(f"{path} is a pickled PyTorch file, which we do not unpickle; "
                             f"convert it to safetensors first: {convert_command(str(path))}")
        if not path.exists():
            raise FileNotFoundError(f"no checkpoint at {path}")
        config = path.parent / "config.json"
        if path.name == "model.safetensors" and config.exists():
            self.config = json.loads(config.read_text())
        self.path = str(path)
        if path.suffix not in (".safetensors", ".npz"):
            raise ValueError(f"{path}: unknown checkpoint format {path.suffix!r}; expected "
                             ".safetensors, a model folder with model.safetensors, or .npz")
        try:
            if path.suffix == ".safetensors":
                self._file = safe_open(self.path, "numpy")
                names = list(self._file.keys())
                self._shape = lambda k: tuple(self._file.get_slice(k).get_shape())
                self._read = self._file.get_tensor
            else:
                self._file = np.load(self.path, allow_pickle=False)
                names = list(self._file.files)
                self._shape = lambda k: self._file[k].shape
                self._read = lambda k: self._file[k]
        except (SafetensorError, OSError, ValueError, EOFError) as e:
            raise ValueError(f"{path} cannot be read as {path.suffix[1:]} (truncated or "
                             f"corrupt?): {e}") from e
        for prefix in ("text_model.", "vit."):
            if any(n.startswith(prefix) for n in names):
                self.prefix = prefix
                names = [n for n in names if n.startswith(prefix)]
                break
        else:
            self.prefix = ""
        self.names = {n[len(self.prefix):] for n in names}
        for marker, kind, scheme in _SCHEMES:
            if marker in self.names:
                self.kind, self.scheme = kind, scheme
                break
        else:
            raise ValueError(
                f"{self.path} is neither an MAE / ViT (MAE release, timm or transformers "
                f"ViTMAE names) nor a CLIP text checkpoint: it has none of "
                f"{[m for m, _, _ in _SCHEMES]} (its keys begin {sorted(names)[:4]})")
        model_type = self.config.get("model_type")
        if model_type is not None and model_type not in MODEL_TYPES[self.kind]:
            raise ValueError(f"{self.path}: config.json names model_type {model_type!r}, not one "
                             f"of {MODEL_TYPES[self.kind]} that its {self.kind} tensors need")
        blocks = re.compile(re.escape(scheme["block"]).replace(r"\{\}", r"(\d+)") + r"\.")
        self.depth = len({m.group(1) for n in self.names if (m := blocks.match(n))})

    def key(self, name: str, block: int | None = None) -> str:
        """The file's key of canonical `name` (`patch.weight`, `query.bias` in a block)."""
        part, _, leaf = name.partition(".")
        key = self.scheme[part] + (f".{leaf}" if leaf else "")
        if block is not None:
            key = f"{self.scheme['block'].format(block)}.{key}"
        return self.prefix + key

    def take(self, name: str, shape: tuple[int, ...], block: int | None = None) -> np.ndarray:
        """Tensor `name` checked against the `shape` the architecture expects."""
        if self.scheme is _VIT_TIMM and name.split(".")[0] in ("query", "key", "value"):
            part, leaf = name.split(".")
            stacked = self.take(f"qkv.{leaf}", (3 * shape[0], *shape[1:]), block)
            return np.split(stacked, 3)[("query", "key", "value").index(part)]
        if name.startswith("qkv."):
            key = f"{self.prefix}blocks.{block}.attn.{name}"
        else:
            key = self.key(name, block)
        plain = key[len(self.prefix):]
        if plain not in self.names:
            raise KeyError(f"{self.path} has no tensor {key!r} (expected shape {shape}); is it a "
                           "complete checkpoint of this architecture?")
        found = tuple(self._shape(key))
        if found != tuple(shape):
            raise ValueError(f"{self.path}: {key!r} has shape {found}, expected {shape} for "
                             "the architecture the other tensors describe")
        return np.asarray(self._read(key), np.float32)

    def shape(self, name: str, block: int | None = None) -> tuple[int, ...]:
        key = self.key(name, block)
        if key[len(self.prefix):] not in self.names:
            raise KeyError(f"{self.path} has no tensor {key!r}")
        return tuple(self._shape(key))

    def text_config(self) -> dict:
        """The text tower's fields: a full CLIPModel's config.json nests them in text_config."""
        return self.config.get("text_config", self.config) if self.kind == "text" else \
            self.config


def _heads(ckpt: Checkpoint, config: dict, width: int, num_heads: int | None) -> int:
    stored = config.get("num_attention_heads")
    if stored is not None and num_heads is not None and stored != num_heads:
        raise ValueError(f"num_heads={num_heads} contradicts {ckpt.path}'s config.json "
                         f"(num_attention_heads={stored}); drop the argument")
    heads = stored or num_heads or KNOWN_HEADS.get(width) or (
        width // 64 if width % 64 == 0 else None)
    if heads is None:
        raise ValueError(f"{ckpt.path} has width {width}, of no known architecture, and no "
                         "config.json naming its heads; pass load_pretrained(..., num_heads=H)")
    if width % heads:
        raise ValueError(f"{ckpt.path}: {heads} heads do not divide the width {width}")
    return heads


def _act(ckpt: Checkpoint, config: dict, default: str) -> str:
    name = config.get("hidden_act", default)
    if name not in HIDDEN_ACT:
        raise ValueError(f"{ckpt.path}: config.json's hidden_act {name!r} is not supported; "
                         f"known: {sorted(HIDDEN_ACT)}")
    return HIDDEN_ACT[name]


def _skeleton(build):
    """`build()`'s module with its parameters not yet allocated, the checkpoint filling them
    (no random init of weights about to be replaced), and its other state (dropout RNG streams)
    computed. `_filled` checks that every parameter was."""
    module = nnx.eval_shape(build)
    nnx.update(module, jax.jit(lambda: nnx.state(build(), nnx.Not(nnx.Param)))())
    return module


def _filled(module, ckpt: Checkpoint):
    empty = [jax.tree_util.keystr(path) for path, leaf in
             jax.tree_util.tree_leaves_with_path(nnx.state(module))
             if isinstance(leaf, jax.ShapeDtypeStruct)]
    if empty:
        raise RuntimeError(f"loading {ckpt.path} left {empty} unset; a loader bug, please report")
    return module


def _assign(variable: nnx.Variable, value: np.ndarray) -> None:
    variable.set_value(jnp.asarray(value, variable.dtype))


def _load_blocks(ckpt: Checkpoint, blocks, width: int, hidden: int) -> None:
    d, h = width, hidden
    for i, block in enumerate(blocks):
        def linear(module, name, fan_in, fan_out, i=i):
            _assign(module.kernel, ckpt.take(f"{name}.weight", (fan_out, fan_in), i).T)
            _assign(module.bias, ckpt.take(f"{name}.bias", (fan_out,), i))

        def norm(module, name, i=i):
            _assign(module.scale, ckpt.take(f"{name}.weight", (d,), i))
            _assign(module.bias, ckpt.take(f"{name}.bias", (d,), i))

        norm(block.norm1, "norm1")
        norm(block.norm2, "norm2")
        for name in ("query", "key", "value", "out"):
            linear(getattr(block.attention, name), name, d, d)
        linear(block.mlp.fc1, "fc1", d, h)
        linear(block.mlp.fc2, "fc2", h, d)


def _final_norm(ckpt: Checkpoint, module, width: int) -> None:
    _assign(module.scale, ckpt.take("norm.weight", (width,)))
    _assign(module.bias, ckpt.take("norm.bias", (width,)))


def _vit(ckpt: Checkpoint, num_heads: int | None, latent: bool) -> ViTEncoder:
    config = ckpt.config
    width, channels, patch, patch_w = ckpt.shape("patch.weight")
    if patch != patch_w:
        raise ValueError(f"{ckpt.path}: non-square patches {patch}×{patch_w} are not supported")
    rows = ckpt.shape("position")[-2] - 1
    if "image_size" in config:
        size = config["image_size"]
        size = (size, size) if isinstance(size, int) else tuple(size)
        grid = (size[0] // patch, size[1] // patch)
    else:
        side = int(round(rows ** 0.5))
        grid = (side, side)
    if grid[0] * grid[1] != rows:
        raise ValueError(f"{ckpt.path}: {ckpt.key('position')!r} holds {rows} patch rows, "
                         f"not the {grid[0]}×{grid[1]} grid its image size gives")
    depth = ckpt.depth if latent else 0
    hidden = ckpt.shape("fc1.weight", 0)[0] if depth else width
    shape = dict(dim=width, patch_size=patch, depth=depth,
                 num_heads=_heads(ckpt, config, width, num_heads) if depth else 1,
                 mlp_ratio=hidden / width, dropout=0.0, grid=grid,
                 act=_act(ckpt, config, "gelu"), eps=config.get("layer_norm_eps", 1e-6))

    def build():
        return ViTEncoder(channels, rngs=nnx.Rngs(0), **shape)

    # Without the latent model only the patch embedding is loaded; the rest starts fresh.
    encoder = _skeleton(build) if latent else build()
    kernel = ckpt.take("patch.weight", (width, channels, patch, patch))
    _assign(encoder.patch.kernel, np.transpose(kernel, (2, 3, 1, 0)))
    _assign(encoder.patch.bias, ckpt.take("patch.bias", (width,)))
    if not latent:
        return encoder
    _assign(encoder.cls_token, ckpt.take("cls_token", (1, 1, width)).reshape(1, width))
    _assign(encoder.position, ckpt.take("position", (1, rows + 1, width))[0])
    _load_blocks(ckpt, encoder.blocks, width, hidden)
    _final_norm(ckpt, encoder.norm, width)
    return _filled(encoder, ckpt)


def _text(ckpt: Checkpoint, num_heads: int | None, latent: bool) -> TextEncoder:
    config = ckpt.text_config()
    vocab, width = ckpt.shape("embed.weight")
    context = ckpt.shape("position.weight")[0]
    depth = ckpt.depth if latent else 0
    hidden = ckpt.shape("fc1.weight", 0)[0] if depth else width
    # CLIP's end token is its last id; transformers' legacy configs name it 2 and find it as
    # the largest id instead, which is the same token.
    eos = config.get("eos_token_id", vocab - 1)
    eos = vocab - 1 if eos == 2 or eos is None else eos
    shape = dict(dim=width, depth=depth,
                 num_heads=_heads(ckpt, config, width, num_heads) if depth else 1,
                 mlp_ratio=hidden / width, dropout=0.0, causal=True,
                 act=_act(ckpt, config, "quick_gelu"), eps=config.get("layer_norm_eps", 1e-5),
                 eos_token_id=int(eos))

    def build():
        return TextEncoder(vocab, context, rngs=nnx.Rngs(0), **shape)

    encoder = _skeleton(build) if latent else build()
    _assign(encoder.embed.embedding, ckpt.take("embed.weight", (vocab, width)))
    if not latent:
        return encoder
    _assign(encoder.position, ckpt.take("position.weight", (context, width)))
    _load_blocks(ckpt, encoder.blocks, width, hidden)
    _final_norm(ckpt, encoder.norm, width)
    return _filled(encoder, ckpt)


def load_pretrained(path: str | Path, *, num_heads: int | None = None,
                    latent: bool = True) -> ViTEncoder | TextEncoder:
    """The encoder stored at `path` (a file or a model folder), its weights loaded.

    Images `[B, H, W, C]` (normalised as the checkpoint expects) -> `[B, N, D]` patch tokens;
    token ids `[B, T]`, T <= `context_length` -> `[B, T, D]`. The architecture comes from
    `config.json` where there is one, else from the tensor shapes plus the head count of known
    widths (`KNOWN_HEADS`, else heads of 64); `num_heads` names it for any other width.
    `latent=False` (the Tables 6-7 ablation) loads only the patch / token embedding.
    """
    ckpt = Checkpoint(path)
    build = _vit if ckpt.kind == "vit" else _text
    return build(ckpt, num_heads, latent)
