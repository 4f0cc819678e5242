"""The speed changes in the flow core keep its contract at sizes where they take effect.

`tests/flows/test_core.py` runs 6-token halves, below the 16-row leaf of the blocked solve;
these tests use sizes that exercise the recursion, the slice-based partitions and remat.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from mango_jax import flows
from mango_jax.bench import xla
from mango_jax.flows import checks
from mango_jax.flows.base import invert_upper_triangular, solve_upper_triangular
from mango_jax.flows.ica import ICA, take_tokens
from mango_jax.flows.partitions import PARTITIONS, partition


@pytest.mark.parametrize("n", [5, 16, 17, 100])
def test_blocked_triangular_solve_matches_float64(n):
    rng = np.random.default_rng(n)
    a = np.triu(rng.uniform(-0.3, 0.3, (3, n, n)) / np.sqrt(n)) + np.eye(n) * rng.uniform(
        0.8, 1.2, (3, 1, n))
    b = rng.standard_normal((3, n, 7))
    x = solve_upper_triangular(jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32))
    np.testing.assert_allclose(np.asarray(x), np.linalg.solve(a, b), rtol=2e-5, atol=2e-5)



@pytest.mark.parametrize("n", [5, 16, 17, 100, 512])
def test_blocked_triangular_inverse_matches_float64(n):
    rng = np.random.default_rng(n)
    a = np.triu(rng.uniform(-0.3, 0.3, (2, n, n)) / np.sqrt(n)) + np.eye(n) * rng.uniform(
        0.8, 1.2, (2, 1, n))
    inverse = np.asarray(invert_upper_triangular(jnp.asarray(a, jnp.float32)))
    np.testing.assert_array_equal(inverse, np.triu(inverse))
    np.testing.assert_allclose(inverse, np.linalg.inv(a), rtol=2e-5, atol=2e-6)

@pytest.mark.parametrize("split", ["contiguous", "interleave"])
def test_partitions_slice_exactly_like_a_gather(split):
    x = jnp.arange(2 * 40 * 3, dtype=jnp.float32).reshape(2, 40, 3)
    for kind in PARTITIONS:
        for idx in partition(kind, (20, 20), split):
            np.testing.assert_array_equal(take_tokens(x, idx), x[:, np.asarray(idx)])
    scattered = [7, 1, 30, 2, 9, 11, 4, 0, 39, 5, 6]  # more runs than slices are worth
    np.testing.assert_array_equal(take_tokens(x, scattered), x[:, np.asarray(scattered)])


def test_ica_inverse_and_logdet_at_a_size_that_uses_the_blocked_solve():
    m, d = 40, 16
    layer = checks.perturb(ICA(d, 2, range(m), range(m, 2 * m), min_identity=0.6,
                               rngs=nnx.Rngs(0)), jax.random.key(1))
    x = jax.random.normal(jax.random.key(2), (2, 2 * m, d))
    y, logdet = layer(x)
    x_rec, logdet_inv = layer.inverse(y)
    np.testing.assert_allclose(np.asarray(x_rec), np.asarray(x), atol=2e-5)
    np.testing.assert_allclose(np.asarray(logdet_inv), -np.asarray(logdet), rtol=1e-6)
    attn = np.asarray(layer.attention(x[:, :m]), np.float64)  # [B, H, n, n]
    ref = np.einsum("bhij,bjhd->bihd", attn, np.asarray(x[:, m:]).reshape(2, m, 2, d // 2))
    np.testing.assert_allclose(np.asarray(y[:, m:]), ref.reshape(2, m, d), atol=2e-5)
    ref_logdet = (d // 2) * np.log(np.diagonal(attn, axis1=-2, axis2=-1)).sum(axis=(1, 2))
    np.testing.assert_allclose(np.asarray(logdet), ref_logdet, rtol=1e-5)


def _flow_grad(block_pattern, tokens, batch, *, remat=False):
    """The jitted gradient of a small perturbed G's NLL, its parameters and an input."""
    config = flows.default_config()
    config.update(num_blocks=3, dim=16, num_heads=2, tokens_per_modality=(tokens, tokens),
                  coupling_hidden=32, remat=remat, block_pattern=block_pattern)
    flow = checks.perturb(flows.build(config, rngs=nnx.Rngs(0)), jax.random.key(3))
    graph, params, rest = nnx.split(flow, nnx.Param, ...)

    def loss(params, x):
        z, logdet = nnx.merge(graph, params, rest)(x)
        return jnp.mean(flows.nll_bits_per_dim(z, logdet))

    x = jax.random.normal(jax.random.key(4), (batch, 2 * tokens, 16))
    return jax.jit(jax.grad(loss)), params, x


def _remat_grad(remat):
    grad, params, x = _flow_grad(("mmca_ab", "imca_2"), 32, 4, remat=remat)
    return grad.lower(params, x).compile().memory_analysis().temp_size_in_bytes, grad(params, x)


def test_remat_saves_memory_on_this_backend_and_keeps_the_gradients():
    temp, grads = _remat_grad(False)
    temp_remat, grads_remat = _remat_grad(True)
    assert temp_remat < 0.6 * temp
    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(grads_remat), strict=True):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-4, atol=1e-6)


def test_lica_train_step_makes_no_lapack_calls():
    """Two batched LAPACK solves that XLA:CPU runs at once can deadlock jaxlib's thread pool (seen
    with 2 threads, where a block's two LICA layers build W⁻¹ concurrently); LICA builds W⁻¹ and
    its derivative from matrix products only. (G's inverse still solves with ICA's blocked
    solve, whose LAPACK leaves run one after another.)"""
    grad, params, x = _flow_grad(("lica", "lica"), 20, 2)
    assert xla.custom_calls(grad.lower(params, x).compile().as_text()).count == 0
