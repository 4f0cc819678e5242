"""How the commands of experiments/ end on a user's mistake: one line `error: ...` on stderr and
exit status 2, no traceback.

A mistake is a `ConfigError` (a config argument or value that cannot work), a dataset that is
missing or malformed (`DataNotFoundError`, `DataFormatError`), a configured checkpoint that is
not on disk (`WeightsNotFoundError`), a run none of whose checkpoints can be read
(`CheckpointError`), or a flag that absl or ml_collections refuses (an unknown
`--config.` field, a value of the wrong type, a missing config file). Anything else is a bug and
keeps its traceback.
"""

from __future__ import annotations

import sys

from absl import app, flags

from mango_jax.errors import ConfigError
from mango_jax.train.host_memory import reexec_with_huge_pages

# ml_collections' config_flags re-raises an error of get_config() with its traceback as text,
# and reports a config file it cannot load when the config is first read.
_IN_CONFIG_FILE = "Error whilst parsing config file"
_NO_CONFIG_FILE = "Failed loading config file"


def fail(message: object) -> None:
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(2)


def _chain(err: BaseException):
    while err is not None:
        yield err
        err = err.__cause__ or err.__context__


def user_errors() -> tuple[type[Exception], ...]:
    """The exceptions that are a user's mistake (imported when one is raised: a command that
    needs no dataset or JAX, like experiments.report, starts without them)."""
    from experiments.common import WeightsNotFoundError
    from mango_jax.data.core import DataFormatError, DataNotFoundError
    from mango_jax.train.checkpoint import CheckpointError

    return (ConfigError, DataNotFoundError, DataFormatError, WeightsNotFoundError,
            CheckpointError, app.UsageError)


def user_error(err: BaseException) -> BaseException | None:
    """The innermost user mistake among `err` and the exceptions it was raised from."""
    kinds = user_errors()
    found = [e for e in _chain(err) if isinstance(e, kinds)]
    return found[-1] if found else None


def _unknown_field(err: AttributeError, argv: list[str]) -> str | None:
    """The message for `--config.a.b=...` naming a field the config does not have."""
    keys = [e for e in _chain(err) if isinstance(e, KeyError)]
    if not keys:
        return None
    key, hint = keys[-1].args[0], str(keys[0].args[0]).partition("\n")[2]
    flag = next((a.partition("=")[0] for a in argv if a.startswith("--config.")
                 and key in a.partition("=")[0][len("--config."):].split(".")), None)
    if flag is None:
        return None
    return (f"{flag}: the config has no field {key!r}" + (f" ({hint})" if hint else "")
            + "; a run prints its config's fields at the start")


def mistake(err: BaseException, argv: list[str]) -> str | None:
    """The one-line message for `err` when it is a user's mistake, else None (a bug)."""
    user = user_error(err)
    if user is not None:
        return str(user)
    if isinstance(err, flags.Error) and _IN_CONFIG_FILE not in str(err):
        return str(err).splitlines()[0]
    if isinstance(err, OSError) and _NO_CONFIG_FILE in str(err):
        return ("--config: cannot load the config file: "
                + str(err).strip().splitlines()[-1].strip())
    if isinstance(err, AttributeError):
        return _unknown_field(err, argv)
    return None


def run(main) -> None:
    """`absl.app.run(main)` where a user's mistake, while parsing the flags or in `main`, ends
    with one `error:` line and exit status 2. A command run as a program first restarts itself
    with transparent huge pages for XLA:CPU's buffers (`mango_jax.train.host_memory`)."""
    if getattr(sys.modules.get("__main__"), "main", None) is main:
        reexec_with_huge_pages()
    args = list(sys.argv)

    def parse_flags(argv):
        try:
            return flags.FLAGS(argv)
        except Exception as err:
            message = mistake(err, argv)
            if message is None:
                raise
            fail(message)

    def guarded(argv):
        try:
            return main(argv)
        except Exception as err:
            message = mistake(err, args)
            if message is None:
                raise
            fail(message)

    app.run(guarded, flags_parser=parse_flags)
