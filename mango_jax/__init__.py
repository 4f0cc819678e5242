"""mango_jax: MANGO, a multimodal attention-based normalizing flow, in JAX/Flax NNX."""

__version__ = "0.1.0"


def load(workdir: str, checkpoint: str = "best"):
    """The trained run in `workdir` as a `mango_jax.predict.Predictor` (see that module)."""
    from mango_jax.predict import load as _load

    return _load(workdir, checkpoint)
