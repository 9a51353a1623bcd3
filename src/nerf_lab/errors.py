"""Errors in what the user gave us (config values, data files), shown as one line."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

# Exit status for bad input, as argparse and Hydra use for a bad command line.
USAGE_ERROR_EXIT_CODE = 2


class NerfLabError(Exception):
    """Bad input: the message names the file or config key and what was expected."""


class ConfigError(NerfLabError):
    """A config value that does not fit; `key` is the config key that caused it, where known."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


class DataError(NerfLabError):
    pass


class TrainingDiverged(NerfLabError):
    """The loss became NaN or infinite."""


class TrainingFailed(NerfLabError):
    """A run ended without results (it trained no step)."""


def user_error_exit(error: NerfLabError) -> SystemExit:
    """The one exit path for bad input: print `error: <the one line>` on stderr and return the
    `SystemExit(2)` to raise (`raise user_error_exit(error) from None`, no traceback)."""
    print(f"error: {error}", file=sys.stderr)
    return SystemExit(USAGE_ERROR_EXIT_CODE)


def exit_on_user_error(main: Callable[[], T]) -> Callable[[], T]:
    """Wrap a command's entry point: a `NerfLabError` ends the process with its one-line
    message on stderr (no traceback) and exit status 2; any other error is a bug and keeps
    its traceback."""

    @functools.wraps(main)
    def wrapper() -> T:
        try:
            return main()
        except NerfLabError as error:
            raise user_error_exit(error) from None

    return wrapper
