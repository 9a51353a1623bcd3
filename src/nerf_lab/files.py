"""Files written so that an interruption never leaves damage a user must repair: arrays and
checkpoints are written to `.<name>.<pid>.partial` and renamed into place; partials of killed
writers are removed at the next write; a damaged cached array is said once and rebuilt."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

log = logging.getLogger("nerf_lab")


def read_cached_array(path: Path, views: int, width: int) -> np.ndarray | None:
    """The cached array, or None when there is none or it is damaged (truncated, empty, of
    another shape): a damaged entry is said once, removed, and rebuilt by the caller."""
    if not path.is_file():
        return None
    try:
        array = np.load(path, allow_pickle=False)
        if array.dtype != np.float16 or array.ndim != 4 or array.shape[0] != views or array.shape[2:] != (width, 4):
            raise ValueError(f"an array of {array.dtype} {array.shape}, expected float16 ({views}, height, {width}, 4)")
    except (OSError, ValueError, EOFError) as error:
        log.warning("image cache entry %s is damaged (%s): rebuilding it", path, str(error).splitlines()[0] if str(error) else type(error).__name__)
        path.unlink(missing_ok=True)
        return None
    return array


def remove_stale_partials(folder: Path, pattern: str = ".*.partial") -> None:
    """Remove the `*.<pid>.partial` files and folders of writes whose process is gone (killed
    while writing); a partial of a process still running (a parallel sweep job) is left alone."""
    for partial in folder.glob(pattern):
        pid = partial.name.rsplit(".", 2)[-2]
        if not pid.isdigit() or not _process_alive(int(pid)):
            if partial.is_dir() and not partial.is_symlink():
                shutil.rmtree(partial, ignore_errors=True)
            else:
                partial.unlink(missing_ok=True)


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


@contextmanager
def written_atomically(path: Path) -> Iterator[Path]:
    """The one way nerf_lab writes a file or folder that readers must see whole or not at all:
    the block writes to the yielded `.<name>.<pid>.partial` beside `path`, which is renamed onto
    `path` when the block ends, and removed when it raises. Partials that killed writers left
    in the folder are removed first (`remove_stale_partials`). Used for cached arrays, JSON
    records, checkpoints and the built-in scene's folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(path.parent)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    _remove(partial)
    try:
        yield partial
    except BaseException:
        _remove(partial)
        raise
    os.replace(partial, path)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def save_array_atomically(path: Path, array: np.ndarray) -> None:
    """`array` as `path` (.npy), whole or not at all."""
    try:
        with written_atomically(path) as partial, open(partial, "wb") as file:
            np.save(file, array)
    except OSError as error:
        if error.errno is None:  # numpy's short write ("N requested and M written") names no cause
            raise short_write(path, array.nbytes) from error
        raise


def short_write(path: Path, size: int) -> OSError:
    """The OSError, with its errno, of a write of `size` bytes to `path` that wrote less: EFBIG
    where the process's file-size limit (`ulimit -f`) is below `size`, else ENOSPC."""
    import errno
    import resource

    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    code = errno.EFBIG if limit != resource.RLIM_INFINITY and limit < size else errno.ENOSPC
    return OSError(code, os.strerror(code), str(path))
