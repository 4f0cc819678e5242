"""XLA_FLAGS for a subprocess a test starts: the suite's flags (tests/conftest.py) with another
simulated device count."""

import os
import re


def devices_flag(count: int) -> str:
    flags = re.sub(r"--xla_force_host_platform_device_count=\d+", "", os.environ["XLA_FLAGS"])
    return f"{flags.strip()} --xla_force_host_platform_device_count={count}".strip()
