"""mango_jax: MANGO, a multimodal attention-based normalizing flow, in JAX/Flax NNX."""

__version__ = "0.1.0"
