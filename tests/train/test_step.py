"""The steps: losses over the real examples of a padded batch, and eval-time resizing of
segmentation logits to each example's own label size."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from scipy.stats import norm

from mango_jax import model as model_lib
from mango_jax.data import DatasetInfo
from mango_jax.metrics import make_evaluator
from mango_jax.train.sharding import make_mesh, state_shardings
from mango_jax.train.step import (
    StepConfig,
    make_eval_step,
    make_train_step,
    resize_to_label_sizes,
)


def test_logits_land_top_left_at_each_label_size():
    logits = jax.random.normal(jax.random.key(0), (2, 8, 8, 3))
    label_hw = jnp.array([[12, 20], [16, 16]])
    out = resize_to_label_sizes(logits, label_hw, (2, 16, 24))
    assert out.shape == (2, 16, 24, 3)
    for b, (h, w) in enumerate(np.asarray(label_hw)):
        expected = jax.image.resize(logits[b], (h, w, 3), "bilinear", antialias=False)
        np.testing.assert_allclose(out[b, :h, :w], expected, atol=1e-5)
    np.testing.assert_allclose(out[0, 12:], 0.0)
    np.testing.assert_allclose(out[0, :, 20:], 0.0)


def test_loss_is_task_plus_lambda_nll_over_the_real_examples():
    """MANGO through the train and eval steps on a batch whose last two rows are padding:
    every logged term is the mean over the six real rows, checked against a float64 NumPy
    computation of the cross-entropy and of the NLL in bits per dimension (SciPy's normal)."""
    info = DatasetInfo(name="fake", task="multiclass", num_classes=5,
                       modality_shapes={"x": (7,), "y": (5,)},
                       modality_kinds={"x": "vector", "y": "vector"}, vocab_size=None,
                       label_shape=(), eval_label_shape=(), label_dtype="int32",
                       ignore_index=None, class_names=None, split_sizes={"train": 8})
    config = model_lib.default_config()
    config.dim = 8
    config.encoder.update(vector_tokens=2, vector_hidden=16)
    config.fusion.nll_weight = 0.3
    config.fusion.flow.update(num_blocks=1, num_heads=2, coupling_hidden=8)
    model = model_lib.MultimodalModel(config, info, ("x", "y"), rngs=nnx.Rngs(0))
    keys = jax.random.split(jax.random.key(1), 3)
    real = np.arange(8) < 6
    pad = jnp.asarray(real)[:, None]  # padded rows (zeros here) differ from the real ones
    batch = {"x": jax.random.normal(keys[0], (8, 7)) * pad,
             "y": jax.random.normal(keys[1], (8, 5)) * pad,
             "label": jax.random.randint(keys[2], (8,), 0, 5), "mask": jnp.asarray(real)}

    a, b = model.features(batch)
    z, logdet = model.fusion.flow(jnp.concatenate([a, b], axis=1))
    z, logdet = np.asarray(z, np.float64), np.asarray(logdet, np.float64)
    nll = -(norm.logpdf(z).sum(axis=(1, 2)) + logdet) / (z[0].size * np.log(2.0))
    logits = np.asarray(model(batch).prediction, np.float64)
    log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    ce = -log_p[np.arange(8), np.asarray(batch["label"])]
    expected = {"nll_bpd": nll[real].mean(), "task_loss": ce[real].mean()}
    expected["aux/nll"] = 0.3 * expected["nll_bpd"]
    expected["loss"] = expected["task_loss"] + expected["aux/nll"]
    assert abs(nll.mean() - expected["nll_bpd"]) > 0.05  # the padded rows would show
    assert abs(ce.mean() - expected["task_loss"]) > 0.01

    cfg = StepConfig(task="multiclass", ignore_index=None)
    mesh = make_mesh()
    optimizer = nnx.Optimizer(model, optax.sgd(0.0), wrt=nnx.Param)
    graphdef, state = nnx.split((model, optimizer))
    sharding = state_shardings(mesh, state)
    evaluator = make_evaluator("multiclass", num_classes=5, ignore_index=None)
    eval_step = make_eval_step(graphdef, cfg, evaluator, state_sharding=sharding)
    _, sums = eval_step(state, evaluator.init(), batch)
    train_step = make_train_step(graphdef, cfg, lambda step: 0.0, mesh=mesh,
                                 state_sharding=sharding)
    _, logs = train_step(state, batch)
    assert float(sums["count"]) == 6
    for key, value in expected.items():
        np.testing.assert_allclose(float(logs[key]), value, rtol=1e-5, err_msg=key)
        np.testing.assert_allclose(float(sums[key]) / 6, value, rtol=1e-5, err_msg=key)
