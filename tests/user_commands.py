"""Running nerf_lab's commands as a user does (a subprocess), for tests whose point is the exit
status, the printed line or the files left behind."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def run_command(
    module: str, *arguments: str, cwd: Path, cache: Path, timeout: int = 600, file_size_limit: int | None = None
) -> subprocess.CompletedProcess:
    """`python -m module arguments` in `cwd`; `file_size_limit`: bytes a file may grow to, as
    `ulimit -f` sets it (root is held to it too)."""
    env = {**os.environ, "NERF_LAB_CACHE": str(cache), "PYTHONWARNINGS": "ignore", "HYDRA_FULL_ERROR": "0"}

    def limit_file_size() -> None:
        import resource

        resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, file_size_limit))

    return subprocess.run(
        [sys.executable, "-m", module, *arguments], check=False, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
        preexec_fn=limit_file_size if file_size_limit is not None else None,
    )


def run_script(script: Path, *arguments: str, cwd: Path, cache: Path, env: dict[str, str] | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """A script of the repository's (e.g. benchmarks/gpu_run.py) run as a user runs it, with
    `env` added to the environment."""
    full_env = {**os.environ, "NERF_LAB_CACHE": str(cache), "PYTHONWARNINGS": "ignore", "HYDRA_FULL_ERROR": "0", **(env or {})}
    return subprocess.run(
        [sys.executable, str(script), *arguments], check=False, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout
    )


def one_line_error(result: subprocess.CompletedProcess) -> str:
    """The error line of a command refused with exit status 2 and no traceback."""
    assert result.returncode == 2, (result.returncode, result.stderr[-3000:])
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert result.stderr.endswith("\n"), repr(result.stderr[-200:])  # a line, ended as lines are
    return result.stderr.strip().splitlines()[-1]
