"""Shared fixtures. Every shape annotation in nerf_lab is checked at run time in the tests:
the import hook below wraps each annotated function with jaxtyping + beartype."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

try:
    from jaxtyping import install_import_hook

    install_import_hook("nerf_lab", "beartype.beartype")
except ImportError:  # beartype is a test extra; without it the annotations go unchecked
    pass

REPO_ROOT = Path(__file__).resolve().parents[1]


def lego_dir() -> Path:
    """The real Lego scene, where this machine has it (NERF_SYNTHETIC_DIR, else ../shared)."""
    root = os.environ.get("NERF_SYNTHETIC_DIR", str(REPO_ROOT.parent / "shared/data/nerf_synthetic"))
    return Path(root) / "lego"


requires_lego = pytest.mark.skipif(
    not (lego_dir() / "transforms_train.json").is_file(),
    reason=f"the real Lego scene is not at {lego_dir()} (set NERF_SYNTHETIC_DIR to the folder "
    "that holds nerf_synthetic's scenes)",
)
