"""Equivalence errors, load time and memory of pretrained encoders, and the paper's size.

    python -m experiments.pretrained_check

1. Equivalence on the test fixtures (`tests/encoders/make_reference_fixtures.py`): max |ours −
   reference| / max |reference| in float32 against transformers' ViTMAEModel / CLIPTextModel.
2. Random checkpoints of the real sizes in a temporary folder (deleted after): MAE ViT-B/16 as
   a bare MAE-release / timm `.safetensors` (no config.json: 12 heads from the width), CLIP
   ViT-B/16's text tower as a transformers `CLIPTextModel` folder. Each is loaded by
   `mango_jax.encoders.load_pretrained` in a fresh process, which reports the wall time and the
   peak resident memory above what it held before loading.
3. The parameter count of NYUDv2's paper configuration (`experiments/nyudv2.py`: two ViT-B/16
   encoders, D = 768, G of 12 blocks) beside Table 8's 72.9M.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from mango_jax import paper

PAPER_NYUDV2_PARAMS = paper.table8_cost("mango").params_m * 1e6  # Table 8, NYUDv2
FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "encoders" / "fixtures"
# (what, file or folder under FIXTURES, input, reference output) in references.npz
EQUIVALENCE = (
    ("ViTMAEModel folder", "vit_mae_model", "vit_images", "vit_out"),
    ("ViTMAEForPreTraining folder", "vit_mae_pretraining", "vit_images", "vit_pretraining_out"),
    ("MAE/timm .safetensors", "mae_timm.safetensors", "vit_images", "vit_out"),
    ("MAE/timm .npz", "mae_timm.npz", "vit_images", "vit_out"),
    ("ViTMAEModel at 48 x 80 (positions resampled)", "vit_mae_model", "vit_resampled_images",
     "vit_resampled_out"),
    ("MAE/timm at 48 x 80 (positions resampled)", "mae_timm.safetensors",
     "vit_resampled_images", "vit_resampled_out"),
    ("CLIPTextModel folder, 77 tokens", "clip_text_model", "clip_ids", "clip_out"),
    ("CLIPTextModel folder, first 10 tokens", "clip_text_model", "clip_ids[:, :10]",
     "clip_short_out"),
    ("CLIPModel folder (text tower)", "clip_model", "clip_ids", "clip_full_out"),
)


def equivalence_errors() -> None:
    import jax

    from mango_jax.encoders import load_pretrained

    if not FIXTURES.exists():
        print(f"(no fixtures at {FIXTURES}: equivalence errors skipped)")
        return
    refs = dict(np.load(FIXTURES / "references.npz"))
    refs["clip_ids[:, :10]"] = refs["clip_ids"][:, :10]
    print("equivalence to the reference implementations (max |diff| / max |reference|):")
    for what, name, inputs, reference in EQUIVALENCE:
        out = np.asarray(jax.jit(load_pretrained(FIXTURES / name).__call__)(refs[inputs]))
        error = np.max(np.abs(out - refs[reference])) / np.max(np.abs(refs[reference]))
        print(f"  {what}: {error:.1e}")


def write_vit_b16(path: Path, rng: np.random.Generator) -> int:
    """MAE ViT-B/16 under the MAE release's names: width 768, 12 blocks, MLP 3072."""
    d, h, p = 768, 3072, 16
    shapes = {"cls_token": (1, 1, d), "pos_embed": (1, 197, d),
              "patch_embed.proj.weight": (d, 3, p, p), "patch_embed.proj.bias": (d,),
              "norm.weight": (d,), "norm.bias": (d,)}
    for i in range(12):
        shapes.update({f"blocks.{i}.{k}": s for k, s in {
            "norm1.weight": (d,), "norm1.bias": (d,), "attn.qkv.weight": (3 * d, d),
            "attn.qkv.bias": (3 * d,), "attn.proj.weight": (d, d), "attn.proj.bias": (d,),
            "norm2.weight": (d,), "norm2.bias": (d,), "mlp.fc1.weight": (h, d),
            "mlp.fc1.bias": (h,), "mlp.fc2.weight": (d, h), "mlp.fc2.bias": (d,)}.items()})
    return _write(path, shapes, rng)


def write_clip_text_b(folder: Path, rng: np.random.Generator) -> int:
    """CLIP ViT-B/16's text tower as transformers saves a CLIPTextModel: width 512, 12 layers,
    8 heads, MLP 2048, 49,408 ids, 77 positions."""
    d, h = 512, 2048
    shapes = {"text_model.embeddings.token_embedding.weight": (49408, d),
              "text_model.embeddings.position_embedding.weight": (77, d),
              "text_model.final_layer_norm.weight": (d,), "text_model.final_layer_norm.bias": (d,)}
    for i in range(12):
        base = f"text_model.encoder.layers.{i}."
        for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
            shapes[f"{base}self_attn.{name}.weight"] = (d, d)
            shapes[f"{base}self_attn.{name}.bias"] = (d,)
        shapes.update({base + k: s for k, s in {
            "layer_norm1.weight": (d,), "layer_norm1.bias": (d,), "layer_norm2.weight": (d,),
            "layer_norm2.bias": (d,), "mlp.fc1.weight": (h, d), "mlp.fc1.bias": (h,),
            "mlp.fc2.weight": (d, h), "mlp.fc2.bias": (d,)}.items()})
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({
        "model_type": "clip_text_model", "architectures": ["CLIPTextModel"], "hidden_size": d,
        "intermediate_size": h, "num_attention_heads": 8, "num_hidden_layers": 12,
        "max_position_embeddings": 77, "vocab_size": 49408, "hidden_act": "quick_gelu",
        "layer_norm_eps": 1e-5, "bos_token_id": 49406, "eos_token_id": 49407,
        "pad_token_id": 1}))
    return _write(folder / "model.safetensors", shapes, rng)


def _write(path: Path, shapes: dict, rng: np.random.Generator) -> int:
    import safetensors.numpy

    tensors = {k: (0.02 * rng.standard_normal(s, dtype=np.float32)) for k, s in shapes.items()}
    safetensors.numpy.save_file(tensors, path)
    return sum(v.size for v in tensors.values())


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def measure(path: str) -> None:
    """In a fresh process: load once, print JSON with seconds and peak RSS above the start."""
    import jax

    from mango_jax.encoders import load_pretrained

    jax.numpy.zeros(1).block_until_ready()  # the backend is up before the clock starts
    before = _rss_bytes()
    start = time.perf_counter()
    encoder = load_pretrained(path)
    jax.block_until_ready(jax.tree.leaves(encoder))
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux
    from flax import nnx

    params = sum(x.size for x in jax.tree.leaves(nnx.state(encoder, nnx.Param)))
    heads = encoder.blocks[0].attention.num_heads
    print(json.dumps({"seconds": seconds, "peak_rss_delta_bytes": peak - before,
                      "params": params, "heads": heads, "width": encoder.width}))


def load_report(name: str, path: Path, stored: int) -> dict:
    proc = subprocess.run([sys.executable, "-m", "experiments.pretrained_check",
                           f"--measure={path}"], capture_output=True, text=True, check=False)
    if proc.returncode:
        raise RuntimeError(f"measuring {path} failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    size = sum(f.stat().st_size for f in (path.rglob("*") if path.is_dir() else [path]))
    print(f"{name}: {stored / 1e6:.1f}M stored parameters ({size / 1e6:.0f} MB on disk), "
          f"loaded as {result['params'] / 1e6:.1f}M, width {result['width']}, "
          f"{result['heads']} heads; load {result['seconds']:.2f} s, peak RSS "
          f"+{result['peak_rss_delta_bytes'] / 1e6:.0f} MB")
    return result


def paper_nyudv2_counts() -> dict[str, int]:
    """Parameters of experiments/nyudv2.py's paper configuration, by shape alone."""
    from flax import nnx

    from experiments import nyudv2
    from mango_jax.data import DatasetInfo
    from mango_jax.model import MultimodalModel
    from mango_jax.train.loop import parameter_counts

    config = nyudv2.get_config()
    size = config.data.image_size
    info = DatasetInfo(name="nyudv2", task="segmentation", num_classes=40,
                       modality_shapes={"rgb": (size, size, 3), "depth": (size, size, 1)},
                       modality_kinds={"rgb": "image", "depth": "image"}, vocab_size=None,
                       label_shape=(size, size), eval_label_shape=(size, size),
                       label_dtype="int32", ignore_index=255, class_names=None,
                       split_sizes={"train": 795})
    model = nnx.eval_shape(lambda: MultimodalModel(config.model, info, ("rgb", "depth"),
                                                   rngs=nnx.Rngs(0)))
    return parameter_counts(model)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        measure(args.measure)
        return
    equivalence_errors()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        vit = Path(tmp) / "mae_vit_base_patch16.safetensors"
        vit_result = load_report("MAE ViT-B/16 (MAE-release names, bare .safetensors)", vit,
                                 write_vit_b16(vit, rng))
        vit.unlink()
        clip = Path(tmp) / "clip-vit-base-patch16-text"
        load_report("CLIP ViT-B/16 text tower (CLIPTextModel folder)", clip,
                    write_clip_text_b(clip, rng))
    counts = paper_nyudv2_counts()
    print("NYUDv2 paper setting (experiments/nyudv2.py: 2 x ViT-B/16, D = 768, G of 12 "
          "blocks): " + ", ".join(f"{k} {v / 1e6:.1f}M" for k, v in counts.items()))
    extra = counts["encoder_a"] - vit_result["params"]
    print(f"  the config's RGB encoder less the loaded ViT-B/16: {extra:,} parameters "
          f"({extra / vit_result['width']:.0f} position rows: a random-init table on the input's "
          "patch grid, where a checkpoint keeps its 14 x 14 and resamples)")
    print(f"  total {counts['total'] / 1e6:.1f}M against Table 8's "
          f"{PAPER_NYUDV2_PARAMS / 1e6:.1f}M ({counts['total'] / PAPER_NYUDV2_PARAMS:.1f}x)")


if __name__ == "__main__":
    main()
