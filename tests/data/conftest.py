"""Shared fixtures of the data tests: absl flags for grain, the mfeat config on the suite's
prepared copy (`mfeat_data_dir`), batch collection."""

from __future__ import annotations

import pytest
from absl import flags

from mango_jax import data


@pytest.fixture(scope="session", autouse=True)
def _absl_flags_parsed():
    # grain's multiprocessing reads absl flags; pytest never parses them.
    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


@pytest.fixture
def mfeat_cfg(mfeat_data_dir):
    cfg = data.default_config("mfeat")
    cfg.data_dir = mfeat_data_dir
    return cfg


def collect(it, num_batches=None):
    """All batches of an eval iterator (or the first `num_batches`)."""
    out = []
    for i, batch in enumerate(it):
        if num_batches is not None and i >= num_batches:
            break
        out.append(batch)
    return out
