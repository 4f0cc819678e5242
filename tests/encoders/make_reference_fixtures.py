"""Writes tests/encoders/fixtures/: small random MAE and CLIP checkpoints as users have them,
with inputs and the reference implementations' outputs. Needs PyTorch (CPU) and transformers;
the tests read only the written files.

    python tests/encoders/make_reference_fixtures.py

Every tensor is moved off its initial value (noise on every parameter, random position
embeddings and class token), so a tensor the loader drops or misplaces shows in the outputs.
The resampled-grid reference is transformers' `interpolate_pos_encoding=True`: PyTorch's
bicubic (a = -0.75, align_corners=False, no antialiasing), as MAE's own
`interpolate_pos_embed`; timm resamples with antialiasing on by default, which differs.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import safetensors.numpy
import torch
import transformers as tf

OUT = Path(__file__).parent / "fixtures"
WIDTH, HEADS, LAYERS, HIDDEN = 128, 2, 2, 192


def perturb(model: torch.nn.Module, generator: torch.Generator) -> None:
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=generator))


def patch_order_noise(batch: int, patches: int) -> torch.Tensor:
    """ViTMAE shuffles patches by this noise even at mask_ratio 0; arange keeps their order."""
    return torch.arange(patches, dtype=torch.float32).expand(batch, patches)


def to_timm(hf: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """transformers' ViTMAE names -> the MAE release / timm names (q, k, v stacked as qkv)."""
    out = {"cls_token": hf["embeddings.cls_token"],
           "pos_embed": hf["embeddings.position_embeddings"],
           "patch_embed.proj.weight": hf["embeddings.patch_embeddings.projection.weight"],
           "patch_embed.proj.bias": hf["embeddings.patch_embeddings.projection.bias"],
           "norm.weight": hf["layernorm.weight"], "norm.bias": hf["layernorm.bias"]}
    for i in range(LAYERS):
        h, t = f"encoder.layer.{i}.", f"blocks.{i}."
        for leaf in ("weight", "bias"):
            out[t + "attn.qkv." + leaf] = np.concatenate(
                [hf[f"{h}attention.attention.{n}.{leaf}"] for n in ("query", "key", "value")])
            for ours, theirs in (("attn.proj", "attention.output.dense"),
                                 ("mlp.fc1", "intermediate.dense"), ("mlp.fc2", "output.dense"),
                                 ("norm1", "layernorm_before"), ("norm2", "layernorm_after")):
                out[f"{t}{ours}.{leaf}"] = hf[f"{h}{theirs}.{leaf}"]
    return out


def vit_fixtures(generator: torch.Generator, arrays: dict) -> None:
    config = tf.ViTMAEConfig(
        hidden_size=WIDTH, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
        intermediate_size=HIDDEN, image_size=64, patch_size=16, num_channels=3,
        hidden_act="gelu", layer_norm_eps=1e-6, mask_ratio=0.0, decoder_hidden_size=16,
        decoder_num_hidden_layers=1, decoder_num_attention_heads=1,
        decoder_intermediate_size=16)
    model = tf.ViTMAEModel(config).eval()
    perturb(model, generator)
    with torch.no_grad():
        model.embeddings.position_embeddings.copy_(
            torch.randn(model.embeddings.position_embeddings.shape, generator=generator))
        model.embeddings.cls_token.copy_(
            torch.randn(model.embeddings.cls_token.shape, generator=generator))
    images = torch.randn(2, 3, 64, 64, generator=generator)
    resampled = torch.randn(2, 3, 48, 80, generator=generator)
    pretraining = tf.ViTMAEForPreTraining(config).eval()
    perturb(pretraining, generator)
    pretraining.vit.load_state_dict(model.state_dict())
    with torch.no_grad():
        out = model(images, noise=patch_order_noise(2, 16)).last_hidden_state[:, 1:]
        out_pre = pretraining.vit(images, noise=patch_order_noise(2, 16)).last_hidden_state
        out_resampled = model(resampled, noise=patch_order_noise(2, 15),
                              interpolate_pos_encoding=True).last_hidden_state[:, 1:]
    arrays.update(vit_images=images.permute(0, 2, 3, 1).numpy(), vit_out=out.numpy(),
                  vit_pretraining_out=out_pre[:, 1:].numpy(),
                  vit_resampled_images=resampled.permute(0, 2, 3, 1).numpy(),
                  vit_resampled_out=out_resampled.numpy())
    # Saved as released: MAE's configs pretrain with 75% masking.
    model.config.mask_ratio = pretraining.config.mask_ratio = 0.75
    model.save_pretrained(OUT / "vit_mae_model")
    pretraining.save_pretrained(OUT / "vit_mae_pretraining")
    reloaded = tf.ViTMAEModel.from_pretrained(OUT / "vit_mae_model").eval()
    reloaded.config.mask_ratio = 0.0
    with torch.no_grad():
        again = reloaded(images, noise=patch_order_noise(2, 16)).last_hidden_state[:, 1:]
    assert torch.equal(again, out), "save_pretrained did not keep the weights"
    hf = safetensors.numpy.load_file(OUT / "vit_mae_model" / "model.safetensors")
    timm = to_timm(hf)
    safetensors.numpy.save_file(timm, OUT / "mae_timm.safetensors")
    np.savez(OUT / "mae_timm.npz", **timm)


def clip_fixtures(generator: torch.Generator, arrays: dict) -> None:
    text_config = tf.CLIPTextConfig(
        vocab_size=128, hidden_size=WIDTH, intermediate_size=HIDDEN, num_hidden_layers=LAYERS,
        num_attention_heads=HEADS, max_position_embeddings=77, hidden_act="quick_gelu",
        layer_norm_eps=1e-5, bos_token_id=126, eos_token_id=127, pad_token_id=127)
    text = tf.CLIPTextModel(text_config).eval()
    perturb(text, generator)
    full = tf.CLIPModel(tf.CLIPConfig(
        text_config=text_config.to_dict(), projection_dim=16,
        vision_config=dict(hidden_size=16, intermediate_size=16, num_hidden_layers=1,
                           num_attention_heads=1, image_size=32, patch_size=16))).eval()
    perturb(full, generator)
    # Token ids as CLIP's tokenizer writes them: start, text, end, then end tokens as padding.
    ids = torch.full((2, 77), 127)
    ids[:, 0] = 126
    ids[0, 1:21] = torch.randint(0, 126, (20,), generator=generator)
    ids[1, 1:76] = torch.randint(0, 126, (75,), generator=generator)
    with torch.no_grad():
        out = text(ids).last_hidden_state
        out_short = text(ids[:, :10]).last_hidden_state
        out_full = full.text_model(ids).last_hidden_state
    arrays.update(clip_ids=ids.numpy().astype(np.int32), clip_out=out.numpy(),
                  clip_short_out=out_short.numpy(), clip_full_out=out_full.numpy())
    text.save_pretrained(OUT / "clip_text_model")
    full.save_pretrained(OUT / "clip_model")


def resample_fixture(generator: torch.Generator, arrays: dict) -> None:
    """PyTorch's bicubic on a bare grid, up along one axis and down along the other."""
    grid = torch.randn(1, 8, 5, 7, generator=generator)
    out = torch.nn.functional.interpolate(grid, size=(9, 4), mode="bicubic",
                                          align_corners=False)
    arrays.update(resample_in=grid[0].permute(1, 2, 0).numpy(),
                  resample_out=out[0].permute(1, 2, 0).numpy())


def main() -> None:
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    generator = torch.Generator().manual_seed(0)
    arrays: dict[str, np.ndarray] = {}
    vit_fixtures(generator, arrays)
    clip_fixtures(generator, arrays)
    resample_fixture(generator, arrays)
    np.savez(OUT / "references.npz", **arrays)
    for path in sorted(OUT.rglob("*")):
        if path.is_file():
            print(f"{path.stat().st_size / 1e6:7.3f} MB  {path.relative_to(OUT)}")


if __name__ == "__main__":
    main()
