"""The model for every task, the NLL's scale remedy, the task losses against NumPy, and what
MANGO describes and draws (describe / diagnostics)."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from mango_jax import fusion
from mango_jax.data import DatasetInfo
from mango_jax.model import MultimodalModel, default_config, fixed_scale
from mango_jax.train.losses import task_loss


def info(task, shapes, kinds, num_classes=5, vocab=None):
    return DatasetInfo(name="fake", task=task, num_classes=num_classes, modality_shapes=shapes,
                       modality_kinds=kinds, vocab_size=vocab, label_shape=(),
                       eval_label_shape=(), label_dtype="int32",
                       ignore_index=255 if task == "segmentation" else None, class_names=None,
                       split_sizes={"train": 4})


def small_config(fusion_name="mango"):
    config = default_config()
    config.dim = 16
    config.encoder.update(patch_size=4, depth=1, num_heads=2, vector_tokens=4,
                          vector_hidden=16, text_max_len=16)
    config.decoder_width = 16
    if fusion_name == "mango":
        config.fusion.flow.update(num_blocks=1, num_heads=2, coupling_hidden=16)
    else:
        config.fusion = fusion.default_config(fusion_name)
    return config


IMAGES = info("segmentation", {"rgb": (16, 16, 3), "depth": (16, 16, 1)},
              {"rgb": "image", "depth": "image"})


def image_batch(rng=0):
    keys = jax.random.split(jax.random.key(rng), 3)
    return {"rgb": jax.random.normal(keys[0], (2, 16, 16, 3)),
            "depth": jax.random.normal(keys[1], (2, 16, 16, 1)),
            "label": jax.random.randint(keys[2], (2, 16, 16), 0, 5),
            "mask": jnp.ones((2,), bool)}


@pytest.mark.parametrize("task", ["segmentation", "translation"])
def test_dense_tasks_predict_at_input_resolution(task):
    data_info = info(task, IMAGES.modality_shapes, IMAGES.modality_kinds,
                     num_classes=5 if task == "segmentation" else None)
    model = MultimodalModel(small_config(), data_info, ("rgb", "depth"), rngs=nnx.Rngs(0))
    out = model(image_batch())
    assert out.prediction.shape == (2, 16, 16, 5 if task == "segmentation" else 3)
    assert out.aux_losses["nll"].shape == out.metrics["nll_bpd"].shape == (2,)
    assert np.all(np.isfinite(out.aux_losses["nll"]))
    if task == "translation":
        assert float(jnp.max(jnp.abs(out.prediction))) <= 1.0


def test_unequal_token_counts_are_resampled_for_image_and_text():
    data_info = info("multilabel", {"poster": (16, 8, 3), "plot": (12,)},
                     {"poster": "image", "plot": "tokens"}, num_classes=23,
                     vocab=40)
    config = small_config()
    with pytest.raises(ValueError, match="equal token counts"):
        MultimodalModel(config, data_info, ("poster", "plot"), rngs=nnx.Rngs(0))
    config.tokens_per_modality = 6
    model = MultimodalModel(config, data_info, ("poster", "plot"), rngs=nnx.Rngs(0))
    batch = {"poster": jnp.ones((2, 16, 8, 3)), "plot": jnp.array([[3] * 5 + [0] * 7] * 2)}
    a, b = model.features(batch)
    assert a.shape == b.shape == (2, 6, 16)
    assert model(batch).prediction.shape == (2, 23)


def test_late_fusion_has_a_head_per_modality():
    data_info = info("multiclass", {"x": (7,), "y": (5,)}, {"x": "vector", "y": "vector"})
    model = MultimodalModel(small_config("late"), data_info, ("x", "y"), rngs=nnx.Rngs(0))
    assert len(model.heads) == 2
    batch = {"x": jnp.ones((3, 7)), "y": jnp.ones((3, 5))}
    a, b = model.features(batch)
    expected = (model.heads[0](a) + model.heads[1](b)) / 2
    np.testing.assert_allclose(model(batch).prediction, expected, atol=1e-6)


def test_shrinking_the_encoder_cannot_lower_the_nll():
    data_info = info("multiclass", {"x": (7,), "y": (5,)}, {"x": "vector", "y": "vector"})
    model = MultimodalModel(small_config(), data_info, ("x", "y"), rngs=nnx.Rngs(0))
    batch = {"x": jax.random.normal(jax.random.key(0), (4, 7)),
             "y": jax.random.normal(jax.random.key(1), (4, 5))}
    nll = np.asarray(model(batch).metrics["nll_bpd"])
    for encoder in (model.encoder_a, model.encoder_b):
        encoder.net.project.kernel[...] *= 1e-3
        encoder.net.project.bias[...] *= 1e-3
    np.testing.assert_allclose(model(batch).metrics["nll_bpd"], nll, rtol=1e-3)
    tokens = jax.random.normal(jax.random.key(2), (2, 3, 16)) * 5 + 2
    np.testing.assert_allclose(jnp.mean(fixed_scale(tokens) ** 2, axis=-1), 1.0, rtol=1e-4)


def test_task_losses_match_numpy():
    rng = np.random.default_rng(0)
    mask = np.array([True, True, False])
    logits = rng.normal(size=(3, 4)).astype(np.float32)
    labels = np.array([0, 3, 1])
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    ref = -log_probs[np.arange(3), labels][mask].mean()
    batch = {"label": labels, "mask": mask}
    assert float(task_loss("multiclass", logits, batch, ignore_index=None)) == pytest.approx(
        ref, rel=1e-5)
    multi = rng.integers(0, 2, size=(3, 4)).astype(np.float32)
    p = 1 / (1 + np.exp(-logits))
    ref = -(multi * np.log(p) + (1 - multi) * np.log(1 - p)).mean(-1)[mask].mean()
    assert float(task_loss("multilabel", logits, {"label": multi, "mask": mask},
                           ignore_index=None)) == pytest.approx(ref, rel=1e-5)
    seg_logits = rng.normal(size=(2, 3, 3, 4)).astype(np.float32)
    seg = rng.integers(0, 4, size=(2, 3, 3))
    seg[0, 0, :] = 255
    lp = seg_logits - np.log(np.exp(seg_logits).sum(-1, keepdims=True))
    valid = seg != 255
    ref = -np.take_along_axis(lp, np.where(valid, seg, 0)[..., None], -1)[..., 0][valid].mean()
    got = task_loss("segmentation", seg_logits, {"label": seg, "mask": np.ones(2, bool)},
                    ignore_index=255)
    assert float(got) == pytest.approx(ref, rel=1e-5)


@pytest.mark.parametrize("layer", ["mango", "realnvp"])
def test_mango_describes_g_and_draws_attention_only_where_g_has_ica_layers(layer, tmp_path):
    data_info = info("multiclass", {"x": (7,), "y": (5,)}, {"x": "vector", "y": "vector"})
    config = small_config()
    config.fusion.flow.layer = layer
    model = MultimodalModel(config, data_info, ("x", "y"), rngs=nnx.Rngs(0))
    batch = {"x": jax.random.normal(jax.random.key(0), (2, 7)),
             "y": jax.random.normal(jax.random.key(1), (2, 5)), "label": jnp.zeros(2, int)}
    described = model.fusion.describe()
    diagnostics = model.fusion.diagnostics(model, batch, str(tmp_path), {})
    if layer != "mango":
        assert described == {"flow_layer": layer, "num_blocks": 1, "partitions": None}
        assert diagnostics == {} and not os.listdir(tmp_path)
        return
    assert described == {"flow_layer": "mango", "num_blocks": 1,
                         "partitions": ["imca", "lica", "mmca"]}
    kinds = ["mmca_ab", "mmca_ba", "imca_1", "imca_2", "imca_3", "imca_4", "lica"]
    assert diagnostics == {"attention_maps": "attention.png", "attention_kinds": kinds}
    assert os.path.getsize(tmp_path / "attention.png") > 1000
    maps = model.fusion.attention_maps(model, batch)
    assert list(maps) == kinds
    # The first layer (MMCA A→B) sees G's input: its map is that layer's attention over the
    # conditioning tokens (modality A) of example 0.
    a, b = model.features(batch)
    first = model.fusion.flow.children()[0].layers[0]
    x1 = jnp.concatenate([a, b], axis=1)[:1, np.asarray(first.idx1)]
    np.testing.assert_allclose(maps["mmca_ab"], first.attention(x1)[0, 0], rtol=1e-5, atol=1e-6)


def test_modality_dropout_replaces_one_modality_by_zeros_in_training_only():
    """q = 1: every training example loses exactly one modality (its tokens zeroed, its aux
    losses not counted); evaluation and `from_features` see both."""
    vectors = info("multiclass", {"x": (6,), "y": (5,)}, {"x": "vector", "y": "vector"})
    config = small_config()
    config.modality_dropout = 1.0
    model = MultimodalModel(config, vectors, ("x", "y"), rngs=nnx.Rngs(0))
    rng = np.random.default_rng(0)
    batch = {"x": jnp.asarray(rng.normal(size=(64, 6)), jnp.float32),
             "y": jnp.asarray(rng.normal(size=(64, 5)), jnp.float32)}
    a, b = model.features(batch)
    a_in, b_in, kept = model._drop_modality(a, b)
    zero_a = np.all(np.asarray(a_in) == 0, axis=(1, 2))
    zero_b = np.all(np.asarray(b_in) == 0, axis=(1, 2))
    np.testing.assert_array_equal(zero_a ^ zero_b, np.ones(64, bool))
    assert 10 < zero_a.sum() < 54 and not np.any(np.asarray(kept))
    train = model(batch, deterministic=False)
    assert np.all(np.asarray(train.aux_losses["nll"]) == 0.0)
    clean = model(batch, deterministic=True)
    np.testing.assert_allclose(np.asarray(clean.prediction),
                               np.asarray(model.from_features(a, b).prediction), rtol=1e-6)
    assert np.all(np.asarray(clean.aux_losses["nll"]) > 0)
    config.modality_dropout = 1.5
    with pytest.raises(ValueError, match="modality_dropout"):
        MultimodalModel(config, vectors, ("x", "y"), rngs=nnx.Rngs(0))
