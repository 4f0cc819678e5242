"""Fixtures shared across the suite, which runs on 8 simulated CPU devices.

The device count is set here, before anything imports JAX, so `pytest` run directly sees the
same 8 devices as `make test`.
"""

import os

_DEVICES = "--xla_force_host_platform_device_count"
if _DEVICES not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_DEVICES}=8".strip()

import pytest  # noqa: E402

from mango_jax import data  # noqa: E402


@pytest.fixture(scope="session")
def mfeat_data_dir(tmp_path_factory):
    """UCI Multiple Features prepared once per test process from the embedded archive."""
    root = tmp_path_factory.mktemp("data")
    config = data.default_config("mfeat")
    config.data_dir = str(root)
    data.ensure_prepared(config)
    return str(root)
