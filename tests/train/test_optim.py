"""Fine-tuning controls of the optimiser against a float64 NumPy AdamW with per-parameter rate
scales and decay flags written out from MAE's / BEiT's rules."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from mango_jax.train import optim

LR, WD, B1, B2, EPS, DECAY = 0.1, 0.3, 0.9, 0.99, 1e-6, 0.5


class Encoder(nnx.Module):
    """The layout of every encoder: embedding, class token, positions, blocks, norm, project."""

    def __init__(self, depth, rngs, image=True):
        if image:
            self.patch = nnx.Conv(3, 4, kernel_size=(2, 2), strides=(2, 2), rngs=rngs)
            self.cls_token = nnx.Param(jnp.ones((1, 1, 4)))
        else:
            self.embed = nnx.Embed(5, 4, rngs=rngs)
        self.position = nnx.Param(jnp.ones((3, 4)))
        self.blocks = nnx.List([nnx.Linear(4, 4, rngs=rngs) for _ in range(depth)])
        self.norm = nnx.LayerNorm(4, rngs=rngs)
        self.project = nnx.Linear(4, 2, rngs=rngs)


class Model(nnx.Module):
    modalities = ("rgb", "text")

    def __init__(self):
        rngs = nnx.Rngs(0)
        self.encoder_a = Encoder(2, rngs)
        self.encoder_b = Encoder(1, rngs, image=False)
        self.fusion = nnx.Linear(2, 2, rngs=rngs)


# (rate scale, weight decay) of every parameter: layer_decay 0.5, exclusions on encoder_a only.
# encoder_a: L = 2, scale 0.5^(3 - layer); encoder_b: L = 1, scale 0.5^(2 - layer).
EXPECT = {
    "encoder_a/patch/kernel": (DECAY ** 3, True), "encoder_a/patch/bias": (DECAY ** 3, False),
    "encoder_a/cls_token": (DECAY ** 3, False), "encoder_a/position": (DECAY ** 3, False),
    "encoder_a/blocks/0/kernel": (DECAY ** 2, True), "encoder_a/blocks/0/bias": (DECAY ** 2, False),
    "encoder_a/blocks/1/kernel": (DECAY, True), "encoder_a/blocks/1/bias": (DECAY, False),
    "encoder_a/norm/scale": (1, False), "encoder_a/norm/bias": (1, False),
    "encoder_a/project/kernel": (1, True), "encoder_a/project/bias": (1, False),
    "encoder_b/embed/embedding": (DECAY ** 2, True), "encoder_b/position": (DECAY ** 2, True),
    "encoder_b/blocks/0/kernel": (DECAY, True), "encoder_b/blocks/0/bias": (DECAY, True),
    "encoder_b/norm/scale": (1, True), "encoder_b/norm/bias": (1, True),
    "encoder_b/project/kernel": (1, True), "encoder_b/project/bias": (1, True),
    "fusion/kernel": (1, True), "fusion/bias": (1, True),
}


def config(**fields):
    c = optim.default_config()
    c.update({**dict(learning_rate=LR, weight_decay=WD, b1=B1, b2=B2, eps=EPS, warmup_steps=0,
                     schedule="constant", grad_clip_norm=0.0), **fields})
    return c


def flat(tree):
    """{'a/b/0/kernel': float64 array} of a model's parameters or of a gradient state."""
    state = nnx.state(tree, nnx.Param) if isinstance(tree, nnx.Module) else tree
    return {"/".join(str(k) for k in path): np.asarray(
        v[...] if isinstance(v, nnx.Variable) else v, np.float64)
        for path, v in nnx.to_flat_state(state)}


def run(cfg, steps=3, pretrained=("rgb",)):
    """Params after `steps` updates with fixed random gradients, and the gradients."""
    model = Model()
    tx, _ = optim.make_optimizer(cfg, 10, model, pretrained=pretrained)
    opt = nnx.Optimizer(model, tx, wrt=nnx.Param)
    start = flat(model)
    grads = []
    for t in range(steps):
        g = jax.tree.map(lambda x, t=t: jax.random.normal(jax.random.key(t), x.shape),
                         nnx.state(model, nnx.Param))
        grads.append(flat(g))
        opt.update(model, g)
    return start, flat(model), grads


def numpy_adamw(start, grads, groups, clip=0.0):
    p = dict(start)
    m = {k: 0 * v for k, v in p.items()}
    v = {k: 0 * x for k, x in p.items()}
    for t, g in enumerate(grads, start=1):
        trainable = [k for k in p if groups[k] is not None]
        if clip:
            norm = np.sqrt(sum(np.sum(g[k] ** 2) for k in trainable))
            g = {k: x * min(1.0, clip / norm) for k, x in g.items()}
        for k in trainable:
            scale, decay = groups[k]
            m[k] = B1 * m[k] + (1 - B1) * g[k]
            v[k] = B2 * v[k] + (1 - B2) * g[k] ** 2
            update = (m[k] / (1 - B1 ** t)) / (np.sqrt(v[k] / (1 - B2 ** t)) + EPS)
            p[k] = p[k] - LR * scale * (update + (WD * p[k] if decay else 0))
    return p


def test_layer_decay_and_weight_decay_exclusions_match_numpy():
    start, end, grads = run(config(layer_decay=DECAY))
    assert set(end) == set(EXPECT)
    ref = numpy_adamw(start, grads, EXPECT)
    for k in EXPECT:
        np.testing.assert_allclose(end[k], ref[k], rtol=1e-5, atol=1e-7, err_msg=k)
    groups = optim.parameter_groups(config(layer_decay=DECAY), nnx.state(Model(), nnx.Param),
                                    ("encoder_a",))
    assert {"/".join(map(str, k)): (s, d) for k, (s, d, _) in groups.items()} == EXPECT


def test_frozen_encoder_unchanged_and_out_of_the_clipping_norm():
    start, end, grads = run(config(freeze="pretrained", decay_exclusions="all",
                                   grad_clip_norm=0.5))
    groups = {k: None if k.startswith("encoder_a/") and "/project/" not in k
              else (1.0, not (start[k].ndim <= 1 or k.endswith("position"))) for k in start}
    ref = numpy_adamw(start, grads, groups, clip=0.5)
    for k in start:
        if groups[k] is None:
            np.testing.assert_array_equal(end[k], start[k], err_msg=k)
        else:
            assert not np.allclose(end[k], start[k]), k
            np.testing.assert_allclose(end[k], ref[k], rtol=1e-5, atol=1e-7, err_msg=k)


def test_defaults_are_plain_adamw_and_bad_fields_are_refused():
    start, end, grads = run(config(), pretrained=())
    ref = numpy_adamw(start, grads, {k: (1.0, True) for k in start})
    for k in start:
        np.testing.assert_allclose(end[k], ref[k], rtol=1e-5, atol=1e-7, err_msg=k)
    for field, value in [("freeze", "all"), ("decay_exclusions", "heads"), ("layer_decay", 0.0)]:
        with pytest.raises(ValueError, match=f"optimizer.{field}"):
            optim.make_optimizer(config(**{field: value}), 10, Model())
    with pytest.raises(ValueError, match="need the model"):
        optim.make_optimizer(config(layer_decay=0.7), 10)
    assert isinstance(optim.default_config(), ml_collections.ConfigDict)


def test_layers_of_the_real_encoders():
    """The package's ViT and text encoders (with resampler) get MAE's layer ids."""
    from mango_jax import encoders

    cfg = encoders.default_config()
    cfg.depth, cfg.num_heads = 2, 2

    class Real(nnx.Module):
        modalities = ("rgb", "text")

        def __init__(self):
            rngs = nnx.Rngs(0)
            self.encoder_a = encoders.ModalityEncoder("image", (16, 16, 3), dim=8, num_tokens=3,
                                                      latent=True, config=cfg, rngs=rngs)
            self.encoder_b = encoders.ModalityEncoder("tokens", (5,), dim=8, num_tokens=3,
                                                      latent=True, config=cfg, rngs=rngs,
                                                      vocab_size=7)

    groups = optim.parameter_groups(config(layer_decay=DECAY), nnx.state(Real(), nnx.Param))
    layer = {"/".join(map(str, k)): round(np.log(s) / np.log(DECAY)) for k, (s, _, _) in
             groups.items()}  # L + 1 − layer, with L = 2
    for path, exponent in layer.items():
        names = path.split("/")
        if "blocks" in names:
            assert exponent == 3 - (int(names[names.index("blocks") + 1]) + 1), path
        elif names[2] in ("patch", "embed", "cls_token", "position"):
            assert names[1] == "net" and exponent == 3, path
        else:
            assert names[1] == "resample" or names[2] == "norm", path
            assert exponent == 0, path
    assert {p.split("/")[2] for p in layer if p.startswith("encoder_a/net")} == {
        "patch", "cls_token", "position", "blocks", "norm"}
    assert {p.split("/")[0] for p in layer if p.split("/")[1] == "resample"} == {
        "encoder_a", "encoder_b"}
