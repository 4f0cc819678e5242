"""`python -m experiments.main ARGS` in-process: absl flags parsed as on the command line."""

from __future__ import annotations

import sys

from absl import flags

from experiments import main as entry


def run_main(args: list[str]) -> None:
    argv = ["main", *args, "--nodistributed"]
    saved = sys.argv
    sys.argv = argv  # config_flags finds the --config.* overrides in sys.argv
    try:
        flags.FLAGS(argv)
        entry.main(argv[:1])
    finally:
        sys.argv = saved
        for name in [n for n in flags.FLAGS if n.startswith("config.")]:
            delattr(flags.FLAGS, name)  # defined by this call's parse; the next one redefines
        flags.FLAGS.unparse_flags()
