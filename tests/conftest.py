"""Fixtures shared across the suite."""

import pytest

from mango_jax import data


@pytest.fixture(scope="session")
def mfeat_data_dir(tmp_path_factory):
    """UCI Multiple Features prepared once per test process from the embedded archive."""
    root = tmp_path_factory.mktemp("data")
    config = data.default_config("mfeat")
    config.data_dir = str(root)
    data.ensure_prepared(config)
    return str(root)
