"""Shared fixtures. Every shape annotation in nerf_lab is checked at run time in the tests:
the import hook below wraps each annotated function with jaxtyping + beartype."""

from __future__ import annotations

import inspect
import os
import re
from pathlib import Path

import pytest

try:
    from jaxtyping import install_import_hook

    install_import_hook("nerf_lab", "beartype.beartype")
except ImportError:  # beartype is a test extra; without it the annotations go unchecked
    pass

REPO_ROOT = Path(__file__).resolve().parents[1]


# The folder of the NeRF synthetic scenes (NERF_SYNTHETIC_DIR, else ../shared beside the
# repository), made absolute here: every test runs in a scratch working directory, where the
# config's relative default would name nothing.
os.environ["NERF_SYNTHETIC_DIR"] = str(
    Path(os.environ.get("NERF_SYNTHETIC_DIR", REPO_ROOT.parent / "shared/data/nerf_synthetic")).resolve()
)


def lego_dir() -> Path:
    """The real Lego scene, where this machine has it."""
    return Path(os.environ["NERF_SYNTHETIC_DIR"]) / "lego"


_lego_absent = pytest.mark.skipif(
    not (lego_dir() / "transforms_train.json").is_file(),
    reason=f"the real Lego scene is not at {lego_dir()} (set NERF_SYNTHETIC_DIR to the folder "
    "that holds nerf_synthetic's scenes)",
)


def requires_lego(test):
    """Mark a test `lego` (`pytest -m lego` selects them) and skip it, saying why, where the
    scene is absent."""
    return pytest.mark.lego(_lego_absent(test))


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """One cache for the whole test session: the built-in scene is rendered once a resolution."""
    return tmp_path_factory.mktemp("nerf_lab_cache")


@pytest.fixture(scope="session")
def builtin_scene_32px(cache_dir) -> Path:
    from nerf_lab.data.builtin_scene import ensure_builtin_scene

    return ensure_builtin_scene(cache_dir, 32)


# Small enough for a CPU test: a 32 px built-in scene, few rays, few samples, few steps.
FAST_OVERRIDES = [
    "data.resolution=32",
    "data.batch_rays=128",
    "data.val_views=1",
    "data.test_views=2",
    "sampling.n_c=16",
    "sampling.chunk=4096",
    "trainer.max_steps=12",
    "trainer.val_check_interval=6",
    "trainer.log_every_n_steps=3",
    "trainer.accelerator=cpu",
    "trainer.precision=32-true",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "callbacks.last_checkpoint.every_n_train_steps=5",
]


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, cache_dir) -> Path:
    """One real `python -m nerf_lab.train` run (the fast config), shared by the tests that read
    what a run leaves behind: its files, checkpoints, and what eval and render make of them."""
    from user_commands import run_command

    folder = tmp_path_factory.mktemp("cli")
    result = run_command("nerf_lab.train", *FAST_OVERRIDES, "hydra.run.dir=run", cwd=folder, cache=cache_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    return folder / "run"


def compose_config(overrides: list[str], output_dir: Path | None = None, cache: Path | None = None):
    """The real training config, as the command line would compose it."""
    from hydra import compose, initialize_config_dir

    from nerf_lab.config import resolvers  # noqa: F401 (registers the config's resolvers)
    from nerf_lab.config.compose import CONF_DIR

    extra = []
    if output_dir is not None:
        extra.append(f"paths.output_dir={output_dir}")
    if cache is not None:
        extra.append(f"paths.cache_dir={cache}")
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=[*overrides, *extra])


@pytest.fixture
def make_cfg(tmp_path, cache_dir):
    """make_cfg(*overrides) -> a fast training config writing into its own tmp folder."""
    counter = iter(range(1000))

    def make(*overrides: str, fast: bool = True):
        output_dir = tmp_path / f"run{next(counter)}"
        return compose_config([*(FAST_OVERRIDES if fast else []), *overrides], output_dir, cache_dir)

    return make


@pytest.fixture(autouse=True)
def _default_folders_outside_the_repository(tmp_path_factory, monkeypatch):
    """Every test runs in a scratch working directory: a command's default folder
    (`outputs/<date>/<time>`, relative to where it runs) never lands in the repository."""
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))


def _outputs() -> set[str]:
    folder = REPO_ROOT / "outputs"
    return {str(path.relative_to(folder)) for path in folder.rglob("*")} if folder.is_dir() else set()


# What makes a test a `command` test: it runs a nerf_lab command in a process of its own, a
# script, or a training fit in this one.
_RUNS_A_COMMAND = re.compile(r"\brun_command\(|\brun_script\(|(?<![\w.])train\(|\.fit\(")


def pytest_collection_modifyitems(config, items):
    """Mark `command` every test that runs a whole command or a fit (its source calls
    `run_command`, `run_script`, `train(` or `.fit(`, or it reads the shared `trained_run`):
    `make test-unit` is then the quick suite less those."""
    for item in items:
        function = getattr(item, "function", None)
        try:
            source = inspect.getsource(function) if function is not None else ""
        except (OSError, TypeError):
            source = ""
        if "trained_run" in getattr(item, "fixturenames", ()) or _RUNS_A_COMMAND.search(source):
            item.add_marker(pytest.mark.command)


def pytest_sessionstart(session):
    session.config._outputs_before = _outputs()


def pytest_sessionfinish(session, exitstatus):
    """The suite writes nothing into the repository's outputs/: anything new there fails it."""
    new = sorted(_outputs() - getattr(session.config, "_outputs_before", set()))
    if new:
        print(f"\nthe tests wrote into {REPO_ROOT / 'outputs'}: {', '.join(new[:10])}")
        session.exitstatus = 1
