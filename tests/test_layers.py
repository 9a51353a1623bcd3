"""The package's layers: each imports only the layers below it."""

from __future__ import annotations

import subprocess
import sys

import pytest

# The commands, at the top: no layer imports them.
COMMANDS = ("nerf_lab.train", "nerf_lab.eval", "nerf_lab.render", "nerf_lab.bench", "nerf_lab.report", "nerf_lab.cli")

# What each layer may not import (a layer may import the ones before it in this list).
FORBIDDEN = {
    "nerf_lab.nerf": ("pytorch_lightning", "lightning", "hydra", "omegaconf", "nerf_lab.data", "nerf_lab.training", "nerf_lab.analysis"),
    "nerf_lab.data": ("hydra", "nerf_lab.training", "nerf_lab.analysis"),
    "nerf_lab.training": ("nerf_lab.analysis", *COMMANDS),
    "nerf_lab.analysis": COMMANDS,
}


def modules_loaded_by(package: str) -> set[str]:
    """The modules in sys.modules after importing every module of `package`, in a fresh process."""
    code = (
        "import importlib, pkgutil, sys\n"
        f"package = importlib.import_module({package!r})\n"
        "for info in pkgutil.walk_packages(package.__path__, package.__name__ + '.'):\n"
        "    importlib.import_module(info.name)\n"
        "print('\\n'.join(sorted(sys.modules)))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(result.stdout.split())


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_layer_imports_nothing_above_it(package: str) -> None:
    loaded = modules_loaded_by(package)
    offending = sorted(
        name for name in loaded for forbidden in FORBIDDEN[package] if name == forbidden or name.startswith(forbidden + ".")
    )
    assert not offending, f"{package} imports {offending}"
