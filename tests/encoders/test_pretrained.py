"""Pretrained encoders against the reference implementations' outputs.

The fixtures (checkpoints as transformers / the MAE release write them, inputs and reference
outputs) come from `make_reference_fixtures.py` (PyTorch + transformers); these tests read
files only. Equality is to 1e-5 of the reference's largest magnitude, in float32.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jax
import numpy as np
import optax
import pytest
import safetensors.numpy
from flax import nnx

from mango_jax import encoders
from mango_jax import model as model_lib
from mango_jax.data import DatasetInfo
from mango_jax.encoders import TextEncoder, ViTEncoder, load_pretrained
from mango_jax.encoders.vit import resample_positions
from mango_jax.train.step import StepConfig, _loss_terms

FIXTURES = Path(__file__).parent / "fixtures"
REF = dict(np.load(FIXTURES / "references.npz"))
TOL = 1e-5


# One compiled forward per architecture and input shape, shared by the tests (eager op-by-op
# dispatch compiles far more).
run = nnx.jit(lambda module, x, mask=None: module(x) if mask is None else module(x, mask=mask))


def relative_error(ours, reference) -> float:
    return float(np.max(np.abs(np.asarray(ours) - reference)) / np.max(np.abs(reference)))


@pytest.fixture(scope="module")
def hf_npz(tmp_path_factory):
    """The transformers-named tensors of the ViTMAEModel folder, as `.npz`."""
    path = tmp_path_factory.mktemp("npz") / "vit_mae.npz"
    np.savez(path, **safetensors.numpy.load_file(FIXTURES / "vit_mae_model/model.safetensors"))
    return path


VIT_FILES = {
    "ViTMAEModel folder": (FIXTURES / "vit_mae_model", "vit_out"),
    "ViTMAEModel model.safetensors": (FIXTURES / "vit_mae_model/model.safetensors", "vit_out"),
    "ViTMAEForPreTraining folder": (FIXTURES / "vit_mae_pretraining", "vit_pretraining_out"),
    "MAE/timm .safetensors": (FIXTURES / "mae_timm.safetensors", "vit_out"),
    "MAE/timm .npz": (FIXTURES / "mae_timm.npz", "vit_out"),
}


@pytest.mark.parametrize("kind", sorted(VIT_FILES))
def test_mae_encoder_equals_reference(kind):
    path, reference = VIT_FILES[kind]
    encoder = load_pretrained(path)
    assert isinstance(encoder, ViTEncoder)
    assert (encoder.width, encoder.patch_size, encoder.in_channels) == (128, 16, 3)
    assert relative_error(run(encoder, REF["vit_images"]), REF[reference]) < TOL
    # 48 x 80 pixels from a 4 x 4 position grid: resampled, down one axis and up the other.
    resampled = run(encoder, REF["vit_resampled_images"])
    assert relative_error(resampled, REF["vit_resampled_out"]) < TOL


def test_transformers_names_in_npz(hf_npz):
    encoder = load_pretrained(hf_npz)
    assert relative_error(run(encoder, REF["vit_images"]), REF["vit_out"]) < TOL


def test_position_resampling_is_pytorch_bicubic():
    grid = jax.numpy.asarray(REF["resample_in"])  # [5, 7, 8] -> torch's [9, 4, 8]
    out = resample_positions(grid.reshape(35, 8), (5, 7), (9, 4))
    assert relative_error(out.reshape(9, 4, 8), REF["resample_out"]) < TOL


@pytest.mark.parametrize("folder,reference", [("clip_text_model", "clip_out"),
                                              ("clip_model", "clip_full_out")])
def test_clip_text_encoder_equals_reference(folder, reference):
    encoder = load_pretrained(FIXTURES / folder)
    assert isinstance(encoder, TextEncoder)
    assert (encoder.width, encoder.context_length, encoder.vocab_size,
            encoder.eos_token_id) == (128, 77, 128, 127)
    assert encoder.blocks[0].mlp.act == "quick_gelu" and encoder.norm.epsilon == 1e-5
    ids = REF["clip_ids"]
    assert relative_error(run(encoder, ids), REF[reference]) < TOL
    if folder == "clip_text_model":  # shorter texts take the first positions
        assert relative_error(run(encoder, ids[:, :10]), REF["clip_short_out"]) < TOL
    with pytest.raises(ValueError, match="context of 77"):
        encoder(np.zeros((1, 78), np.int32))
    mask = np.asarray(encoder.padding_mask(ids))
    np.testing.assert_array_equal(mask.sum(1), [22, 77])  # start, text, first end token


def test_parameter_names_the_optimiser_selects_on():
    vit, text = load_pretrained(FIXTURES / "mae_timm.npz"), load_pretrained(
        FIXTURES / "clip_text_model")
    for module in (vit, text):
        assert isinstance(module.blocks, nnx.List) and len(module.blocks) == 2
        assert isinstance(module.norm, nnx.LayerNorm)
        assert isinstance(module.position, nnx.Param)
    assert vit.cls_token.shape == (1, 128) and vit.position.shape == (17, 128)
    assert vit.blocks[0].mlp.act == "gelu"


def test_depth_through_rgb_checkpoint_equals_repeated_channel():
    rgb, depth = (load_pretrained(FIXTURES / "mae_timm.safetensors") for _ in range(2))
    depth.sum_colours()
    x = REF["vit_images"][..., :1]
    assert depth.in_channels == 1
    reference = np.asarray(run(rgb, np.repeat(x, 3, axis=-1)))
    assert relative_error(run(depth, x), reference) < TOL


def test_without_latent_model_only_the_patch_embedding_is_loaded():
    encoder = load_pretrained(FIXTURES / "vit_mae_model", latent=False)
    assert len(encoder.blocks) == 0 and encoder.cls_token is None
    stored = safetensors.numpy.load_file(FIXTURES / "mae_timm.safetensors")
    np.testing.assert_array_equal(np.asarray(encoder.patch.kernel[...]),
                                  stored["patch_embed.proj.weight"].transpose(2, 3, 1, 0))
    text = load_pretrained(FIXTURES / "clip_model", latent=False)
    assert len(text.blocks) == 0 and text.embed.embedding.shape == (128, 128)


def copy_folder(tmp_path, name, **config_changes) -> Path:
    folder = shutil.copytree(FIXTURES / name, tmp_path / name)
    config = json.loads((folder / "config.json").read_text())
    config.update(config_changes)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_config_json_decides_the_architecture(tmp_path):
    folder = copy_folder(tmp_path, "vit_mae_model", num_attention_heads=4, layer_norm_eps=1e-12)
    encoder = load_pretrained(folder)
    assert encoder.blocks[0].attention.num_heads == 4 and encoder.norm.epsilon == 1e-12
    assert relative_error(run(encoder, REF["vit_images"]), REF["vit_out"]) > 1e-2
    with pytest.raises(ValueError, match="contradicts"):
        load_pretrained(folder, num_heads=2)
    # The bare file has no config.json: 2 heads of 64 from the width, MAE's eps and GELU.
    bare = load_pretrained(FIXTURES / "mae_timm.safetensors")
    assert bare.blocks[0].attention.num_heads == 2 and bare.norm.epsilon == 1e-6
    text = load_pretrained(copy_folder(tmp_path, "clip_text_model", hidden_act="gelu"))
    assert text.blocks[0].mlp.act == "gelu"
    with pytest.raises(ValueError, match="model_type 'bert'"):
        load_pretrained(copy_folder(tmp_path / "b", "vit_mae_model", model_type="bert"))


def test_unknown_width_needs_num_heads(tmp_path):
    stored = safetensors.numpy.load_file(FIXTURES / "mae_timm.safetensors")
    narrow = {k: v[..., :48] if k in ("cls_token", "pos_embed") else v for k, v in
              stored.items() if not k.startswith("blocks.")}
    narrow["patch_embed.proj.weight"] = narrow["patch_embed.proj.weight"][:48]
    for k in ("patch_embed.proj.bias", "norm.weight", "norm.bias"):
        narrow[k] = narrow[k][:48]
    rng = np.random.default_rng(0)
    shapes = {"attn.qkv.weight": (144, 48), "attn.qkv.bias": (144,), "attn.proj.weight": (48, 48),
              "attn.proj.bias": (48,), "mlp.fc1.weight": (96, 48), "mlp.fc1.bias": (96,),
              "mlp.fc2.weight": (48, 96), "mlp.fc2.bias": (48,), "norm1.weight": (48,),
              "norm1.bias": (48,), "norm2.weight": (48,), "norm2.bias": (48,)}
    narrow.update({f"blocks.0.{k}": rng.normal(size=s).astype(np.float32)
                   for k, s in shapes.items()})
    path = tmp_path / "narrow.safetensors"
    safetensors.numpy.save_file(narrow, path)
    with pytest.raises(ValueError, match=r"width 48.*num_heads=H"):
        load_pretrained(path)
    encoder = load_pretrained(path, num_heads=3)
    assert encoder.blocks[0].attention.num_heads == 3
    assert run(encoder, REF["vit_images"]).shape == (2, 16, 48)


def test_bad_files_fail_naming_file_key_and_shape(tmp_path):
    stored = safetensors.numpy.load_file(FIXTURES / "mae_timm.safetensors")
    missing = {k: v for k, v in stored.items() if k != "blocks.1.mlp.fc2.bias"}
    path = tmp_path / "missing.safetensors"
    safetensors.numpy.save_file(missing, path)
    with pytest.raises(KeyError, match=r"missing.safetensors.*blocks.1.mlp.fc2.bias.*\(128,\)"):
        load_pretrained(path)

    wrong = {**stored, "blocks.1.mlp.fc1.weight": stored["blocks.1.mlp.fc1.weight"][:100]}
    path = tmp_path / "wrong.npz"
    np.savez(path, **wrong)
    with pytest.raises(ValueError, match=r"wrong.npz.*blocks.1.mlp.fc1.weight.*\(100, 128\).*"
                                         r"expected \(192, 128\)"):
        load_pretrained(path)

    path = tmp_path / "resnet.safetensors"
    safetensors.numpy.save_file({"conv1.weight": np.zeros((4, 3, 7, 7), np.float32)}, path)
    with pytest.raises(ValueError, match=r"resnet.safetensors is neither .*conv1.weight"):
        load_pretrained(path)

    data = (FIXTURES / "mae_timm.safetensors").read_bytes()
    for name, content in (("truncated", data[: len(data) // 2]), ("corrupt", b"\x07" * 64),
                          ("empty", b"")):
        path = tmp_path / f"{name}.safetensors"
        path.write_bytes(content)
        with pytest.raises(ValueError, match=rf"{name}.safetensors cannot be read"):
            load_pretrained(path)
    path = tmp_path / "corrupt.npz"
    path.write_bytes(data[:1000])
    with pytest.raises(ValueError, match="corrupt.npz cannot be read"):
        load_pretrained(path)


def test_pickled_files_are_refused_with_the_conversion_command(tmp_path):
    path = tmp_path / "mae_pretrain_vit_base.pth"
    path.write_bytes(b"not to be unpickled")
    with pytest.raises(ValueError, match=r"do not unpickle.*torch.load\('.*\.pth'.*save_file"):
        load_pretrained(path)
    folder = tmp_path / "hub"
    folder.mkdir()
    (folder / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=r"no model.safetensors.*pytorch_model.bin"):
        load_pretrained(folder)


def encoder_config(patch_size=16):
    config = encoders.default_config()
    config.update(patch_size=patch_size, depth=1, num_heads=2, text_max_len=16)
    return config


def test_modality_encoder_projects_adapts_depth_and_checks_fit():
    enc = encoders.ModalityEncoder("image", (64, 64, 1), dim=32, num_tokens=16, latent=True,
                                   config=encoder_config(), rngs=nnx.Rngs(0),
                                   pretrained=str(FIXTURES / "vit_mae_model"))
    assert enc.project.kernel.shape == (128, 32) and enc.net.in_channels == 1
    assert enc(REF["vit_images"][..., :1]).shape == (2, 16, 32)
    with pytest.raises(ValueError, match="patch_size=16"):
        encoders.ModalityEncoder("image", (64, 64, 3), dim=32, num_tokens=64, latent=True,
                                 config=encoder_config(8), rngs=nnx.Rngs(0),
                                 pretrained=str(FIXTURES / "mae_timm.npz"))
    with pytest.raises(ValueError, match="for image inputs"):
        encoders.ModalityEncoder("tokens", (16,), dim=32, num_tokens=16, latent=True,
                                 config=encoder_config(), rngs=nnx.Rngs(0), vocab_size=100,
                                 pretrained=str(FIXTURES / "mae_timm.npz"))
    with pytest.raises(ValueError, match="context of 77"):
        encoders.ModalityEncoder("tokens", (80,), dim=32, num_tokens=80, latent=True,
                                 config=encoder_config(), rngs=nnx.Rngs(0), vocab_size=100,
                                 pretrained=str(FIXTURES / "clip_model"))


def test_clip_padding_mask_keeps_padding_out_of_the_resampler():
    enc = encoders.ModalityEncoder("tokens", (77,), dim=32, num_tokens=8, latent=True,
                                   config=encoder_config(), rngs=nnx.Rngs(0), vocab_size=128,
                                   pretrained=str(FIXTURES / "clip_text_model"))
    ids = REF["clip_ids"]
    mask = np.arange(77)[None] < np.array([[22], [77]])
    out = run(enc, ids, mask)
    changed = ids.copy()
    changed[0, 30:] = 5  # other padding ids after the end token
    np.testing.assert_allclose(run(enc, changed, mask), out, atol=1e-6)
    np.testing.assert_allclose(run(enc, changed), out, atol=1e-6)  # derived: up to the first end
    everything = np.ones_like(mask)  # a mask over every position lets the 5s in
    assert not np.allclose(run(enc, changed, everything), run(enc, ids, everything), atol=1e-3)


def test_model_with_pretrained_encoders_from_config_fields_trains_a_step():
    """MM-IMDB's shape of problem: an MAE poster encoder and a CLIP plot encoder, named by
    config fields alone, widths projected to D, both resampled to 8 tokens, CLIP's padding
    mask in the batch; one optimiser step moves the pretrained weights."""
    config = model_lib.default_config()
    config.dim, config.tokens_per_modality, config.decoder_width = 32, 8, 16
    config.encoder.update(patch_size=16, num_heads=2)
    config.encoder.pretrained.poster = str(FIXTURES / "vit_mae_model")
    config.encoder.pretrained.plot = str(FIXTURES / "clip_model")
    config.fusion.flow.update(num_blocks=1, num_heads=2, coupling_hidden=16)
    info = DatasetInfo(name="fake", task="multilabel", num_classes=3,
                       modality_shapes={"poster": (64, 64, 3), "plot": (77,)},
                       modality_kinds={"poster": "image", "plot": "tokens"}, vocab_size=128,
                       label_shape=(3,), eval_label_shape=(3,), label_dtype="float32",
                       ignore_index=None, class_names=None, split_sizes={"train": 2})
    model = model_lib.MultimodalModel(config, info, ("poster", "plot"), rngs=nnx.Rngs(0))
    counts = {name: sum(x.size for x in jax.tree.leaves(nnx.state(module, nnx.Param)))
              for name, module in (("a", model.encoder_a), ("b", model.encoder_b))}
    reference = {name: sum(v.size for v in safetensors.numpy.load_file(path).values())
                 for name, path in (("a", FIXTURES / "vit_mae_model/model.safetensors"),
                                    ("b", FIXTURES / "clip_text_model/model.safetensors"))}
    resampler = 8 * 32 + 2 * 32 + 4 * (32 * 32 + 32)
    for name in "ab":  # the checkpoint's tensors + `project` (128 -> 32) + the resampler
        assert counts[name] == reference[name] + 128 * 32 + 32 + resampler
    batch = {"poster": REF["vit_images"], "plot": REF["clip_ids"],
             "plot_mask": np.arange(77)[None] < np.array([[22], [77]]),
             "label": np.array([[1, 0, 1], [0, 1, 0]], np.float32), "mask": np.ones(2, bool)}
    optimizer = nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer, batch):
        def loss(model):
            out = model(batch)
            return _loss_terms(StepConfig("multilabel", None), out, batch)[0]
        value, grads = nnx.value_and_grad(loss)(model)
        optimizer.update(model, grads)
        return value

    before = np.asarray(model.encoder_a.net.blocks[0].attention.query.kernel[...])
    assert np.isfinite(float(step(model, optimizer, batch)))
    after = np.asarray(model.encoder_a.net.blocks[0].attention.query.kernel[...])
    assert np.abs(after - before).max() > 1e-4
