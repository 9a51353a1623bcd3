"""Errors in what the user gave us (config values, data files), shown as one line."""

from __future__ import annotations

import errno
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
class EnvironmentFault(NerfLabError):
    """A fault of the machine, not of nerf_lab or the input: a full disk, a file-size limit, a
    path that is not a folder, a read-only or forbidden folder. One line naming the path."""


# errno → what the user reads. OSError's own strerror says the same in the C library's words.
ENVIRONMENT_FAULTS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file too large (a file-size limit such as ulimit -f?)",
    errno.ENOTDIR: "not a folder (a file is in the way)",
    errno.EEXIST: "a file is in the way of a folder",
    errno.EISDIR: "a folder where a file was expected",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
}


def environment_fault(error: BaseException, where: str | None = None) -> EnvironmentFault | None:
    """The one-line `EnvironmentFault` for an OSError of the environment (also when it is the
    cause of another exception, e.g. a config interpolation's), or None for any other error.
    `where`: the path to name when the error names none."""
    while error is not None and not isinstance(error, OSError):
        error = error.__cause__ or error.__context__
    if error is None or error.errno not in ENVIRONMENT_FAULTS:
        return None
    path = error.filename or where or "a file"
    return EnvironmentFault(f"{path}: {ENVIRONMENT_FAULTS[error.errno]} ({errno.errorcode[error.errno]}): expected a writable folder with room for the run")


def user_error_exit(error: NerfLabError) -> SystemExit:
    """The one exit path for bad input: print `error: <the one line>` on stderr and return the
    `SystemExit(2)` to raise (`raise user_error_exit(error) from None`, no traceback)."""
    print(f"error: {error}", file=sys.stderr)
    return SystemExit(USAGE_ERROR_EXIT_CODE)


def exit_on_user_error(main: Callable[[], T]) -> Callable[[], T]:
    """Wrap a command's entry point: a `NerfLabError` or a fault of the environment (an
    OSError such as a full disk, see `environment_fault`) ends the process with its one-line
    message on stderr (no traceback) and exit status 2; any other error is a bug and keeps
    its traceback."""

    @functools.wraps(main)
    def wrapper() -> T:
        try:
            return main()
        except NerfLabError as error:
            raise user_error_exit(error) from None
        except OSError as error:
            fault = environment_fault(error)
            if fault is None:
                raise
            raise user_error_exit(fault) from None

    return wrapper
