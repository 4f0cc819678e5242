"""`python -m experiments.report --workdirs=... --out=...` (see the package docstring)."""

from experiments import cli
from experiments.report import define_flags, main

if __name__ == "__main__":
    define_flags()
    cli.run(main)
