"""The error a user's config or command line causes, as opposed to a bug."""

from __future__ import annotations


class ConfigError(ValueError):
    """A config argument, field or value that cannot work; the message says what to set instead.

    The commands of experiments/ print it as one line, `error: <message>`, and exit with status 2;
    any other exception is a bug and keeps its traceback.
    """
