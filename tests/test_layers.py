"""The package's layers: each module imports only what its layer allows.

Every `import` statement is read from the source with `ast`, at module level and inside
functions alike (an import deferred into a function is still a dependency), and checked
against its layer's allow-list: the standard library, the third-party packages named, and
the layers of nerf_lab below it.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "nerf_lab"

# Each layer: the third-party packages and the nerf_lab modules it may import. A layer's own
# modules are always allowed.
NERF = ("torch", "jaxtyping")
# errors.py and files.py sit at the bottom: every layer but nerf/ may use them.
BOTTOM = ("nerf_lab.errors", "nerf_lab.files")
DATA = (*NERF, "numpy", "imageio", "PIL", "pytorch_lightning", "nerf_lab.nerf", *BOTTOM)
VISUALS = (*NERF, "numpy", "matplotlib", "PIL", "nerf_lab.nerf")
TRAINING = (
    *DATA, *VISUALS, "lightning_fabric", "hydra", "omegaconf", "yaml", "torchmetrics", "torchvision", "tensorboard", "nerf_lab.data",
    "nerf_lab.visuals",
)
CONFIG = (*TRAINING, "nerf_lab.training")
RUNS = (*CONFIG, "submitit", "nerf_lab.config")
ANALYSIS = (*RUNS, "scipy", "imageio_ffmpeg", "nerf_lab.runs")
COMMANDS = (*ANALYSIS, "nerf_lab")
ALLOWED = {
    "nerf_lab.nerf": NERF,
    "nerf_lab.data": DATA,
    "nerf_lab.visuals": VISUALS,
    "nerf_lab.training": TRAINING,  # the Lightning loop: the module, callbacks, schedules, logger
    "nerf_lab.config": CONFIG,  # the run's config: compose, check, build, a stored config read as data
    "nerf_lab.runs": RUNS,  # a run's record: checkpoints, folders, stops, resume, Hydra callbacks
    "nerf_lab.analysis": ANALYSIS,
    "nerf_lab": COMMANDS,  # the commands and cli.py at the top
}
# The bottom layer: errors (one-line messages) and files (atomic writes) import nothing of ours.
ALLOWED_FOR_FILE = {"nerf_lab.errors": (), "nerf_lab.files": ("numpy",)}


def imports_of(path: Path, module: str) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in the file, wherever it stands."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the module's own package upwards
                package = module.split(".")[: -node.level] if path.name != "__init__.py" else module.split(".")[: len(module.split(".")) - node.level + 1]
                name = ".".join([*package, node.module] if node.module else package)
            else:
                name = node.module or ""
            found.append((node.lineno, name))
    return found


def layer_of(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 2 or (len(parts) == 2 and (PACKAGE / parts[1]).is_dir()) else "nerf_lab"


def is_allowed(name: str, allowed: tuple[str, ...], layer: str) -> bool:
    top = name.split(".")[0]
    if top in sys.stdlib_module_names or top == "__future__":
        return True
    return any(name == prefix or name.startswith(prefix + ".") for prefix in (*allowed, layer if layer != "nerf_lab" else "nerf_lab.cli"))


def all_modules() -> list[tuple[str, Path]]:
    modules = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        modules.append((".".join(parts[:-1] if parts[-1] == "__init__" else parts), path))
    return modules


@pytest.mark.parametrize(("module", "path"), all_modules(), ids=[m for m, _ in all_modules()])
def test_module_imports_only_what_its_layer_allows(module: str, path: Path) -> None:
    layer = layer_of(module)
    allowed = ALLOWED_FOR_FILE.get(module, ALLOWED[layer])
    offending = [f"line {line}: {name}" for line, name in imports_of(path, module) if not is_allowed(name, allowed, layer)]
    assert not offending, f"{module} ({layer} layer) imports what its layer may not: {offending}"


def test_the_check_sees_imports_inside_functions(tmp_path: Path) -> None:
    source = tmp_path / "example.py"
    source.write_text("import torch\n\ndef later():\n    from nerf_lab.training import module\n    import hydra\n")
    names = [name for _, name in imports_of(source, "nerf_lab.nerf.example")]
    assert names == ["torch", "nerf_lab.training", "hydra"]
    assert [n for n in names if not is_allowed(n, NERF, "nerf_lab.nerf")] == ["nerf_lab.training", "hydra"]
