"""Checkpoints are read without running code, everywhere one is read; a bad checkpoint is one
line naming the file, exit status 2, before anything is written."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from conftest import FAST_OVERRIDES
from user_commands import one_line_error, run_command

from helpers import slow_after_first

from nerf_lab.errors import ConfigError


class Payload:
    """Unpickling this calls os.system: it creates `marker`, if anything runs it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def crafted(trained_run, tmp_path) -> tuple[Path, Path]:
    """A real checkpoint of the trained run with the payload inside, and the payload's marker."""
    marker = tmp_path / "payload-ran"
    checkpoint = torch.load(trained_run / "checkpoints" / "last.ckpt", weights_only=True)
    checkpoint["callbacks"]["extra"] = Payload(marker)
    path = tmp_path / "shared-lego.ckpt"
    torch.save(checkpoint, path)
    return path, marker


def test_the_crafted_checkpoint_would_run_its_payload_if_unpickled_unsafely(crafted):
    path, marker = crafted
    torch.load(path, weights_only=False)  # what every reader did before
    assert marker.exists()


def test_our_checkpoints_hold_only_what_a_safe_load_accepts(trained_run):
    for name in ("last.ckpt", "best.ckpt"):
        checkpoint = torch.load(trained_run / "checkpoints" / name, weights_only=True)
        assert isinstance(checkpoint["hyper_parameters"]["config"], dict)


@pytest.mark.parametrize(
    ("module", "arguments"),
    slow_after_first([
        ("nerf_lab.eval", ["accelerator=cpu"]),
        ("nerf_lab.render", ["frames=2", "accelerator=cpu"]),
        ("nerf_lab.train", [*FAST_OVERRIDES]),  # resume
    ]),
)
def test_every_command_refuses_a_checkpoint_that_would_run_code(crafted, tmp_path, cache_dir, module, arguments):
    path, marker = crafted
    result = run_command(module, f"ckpt_path={path}", *arguments, "hydra.run.dir=out", cwd=tmp_path, cache=cache_dir)
    line = one_line_error(result)
    assert line.startswith(f"error: ckpt_path={path} refused: it names posix.system"), line
    assert not marker.exists()  # the payload did not run
    assert not (tmp_path / "out").exists()  # nothing written


def test_the_reports_loader_refuses_it_too(crafted):
    from nerf_lab.runs.checkpoints import load_trained

    path, marker = crafted
    with pytest.raises(ConfigError, match="refused: it names posix.system"):
        load_trained(path)
    assert not marker.exists()


def _truncated(trained_run: Path, folder: Path) -> Path:
    data = (trained_run / "checkpoints" / "last.ckpt").read_bytes()
    path = folder / "truncated.ckpt"
    path.write_bytes(data[: len(data) // 2])
    return path


def _text(trained_run: Path, folder: Path) -> Path:
    path = folder / "notes.ckpt"
    path.write_text("not a checkpoint\n")
    return path


def _not_ours(trained_run: Path, folder: Path) -> Path:
    path = folder / "weights.ckpt"
    torch.save({"weight": torch.zeros(3)}, path)
    return path


BAD_FILES = [(_truncated, "is damaged or not a checkpoint"), (_text, "is damaged or not a checkpoint"), (_not_ours, "is not a nerf_lab checkpoint")]


@pytest.mark.parametrize(("make", "expected"), BAD_FILES)
def test_a_file_that_is_not_a_whole_nerf_lab_checkpoint_is_refused_by_the_loader(trained_run, tmp_path, make, expected):
    from nerf_lab.runs.checkpoints import load_trained

    path = make(trained_run, tmp_path)
    with pytest.raises(ConfigError, match=f"^ckpt_path={path} {expected}"):
        load_trained(path)


# Each command once, each kind of bad file once: the commands share the check above.
@pytest.mark.parametrize(
    ("module", "make", "expected"),
    slow_after_first([("nerf_lab.eval", *BAD_FILES[1]), ("nerf_lab.render", *BAD_FILES[0]), ("nerf_lab.train", *BAD_FILES[2])]),
)
def test_a_bad_checkpoint_file_given_to_a_command_is_one_line(trained_run, tmp_path, cache_dir, module, make, expected):
    path = make(trained_run, tmp_path)
    extra = FAST_OVERRIDES if module == "nerf_lab.train" else ["accelerator=cpu"]
    result = run_command(module, f"ckpt_path={path}", *extra, "hydra.run.dir=out", cwd=tmp_path, cache=cache_dir)
    line = one_line_error(result)
    assert line.startswith(f"error: ckpt_path={path} {expected}"), line
    assert not (tmp_path / "out").exists()


def test_resuming_a_missing_checkpoint_is_one_line(tmp_path, cache_dir):
    result = run_command("nerf_lab.train", *FAST_OVERRIDES, "ckpt_path=/no/such.ckpt", "hydra.run.dir=out", cwd=tmp_path, cache=cache_dir)
    assert one_line_error(result).startswith("error: ckpt_path=/no/such.ckpt does not exist")
    assert not (tmp_path / "out").exists()


def test_resuming_a_model_of_another_shape_is_one_line(trained_run, tmp_path, cache_dir):
    path = trained_run / "checkpoints" / "last.ckpt"
    result = run_command(
        "nerf_lab.train", *FAST_OVERRIDES, "trainer.max_steps=14", "model.width=32", f"ckpt_path={path}", "hydra.run.dir=out", cwd=tmp_path, cache=cache_dir
    )
    line = one_line_error(result)
    assert line.startswith(f"error: ckpt_path={path} cannot be resumed with 1 changed key(s)"), line
    assert "model.width: 128 → 32" in line
    assert line.endswith("resume with the run's own values, or start a new run")  # model=tiny is the run's own option
    assert not (tmp_path / "out").exists()


def test_a_resume_refused_for_its_sampling_names_the_option_the_run_trained_with(make_cfg):
    """A default run from before the default skipped empty space (its choice `sampling=tiny`,
    then one dense pass), resumed with today's default: refused, naming the option its stored
    values fit; with that option it goes on."""
    from omegaconf import OmegaConf

    from nerf_lab.errors import ConfigError
    from nerf_lab.runs.resume import check_resume_changes

    stored = OmegaConf.to_container(make_cfg("sampling=coarse"), resolve=True)
    checkpoint = {"global_step": 12, "hyper_parameters": {"config": stored, "choices": {"model": "tiny", "sampling": "tiny"}}}
    with pytest.raises(ConfigError, match=r"\(sampling.grid.*: resume with the run's own values \(sampling=coarse\), or start a new run$"):
        check_resume_changes(make_cfg("trainer.max_steps=20", "ckpt_path=old.ckpt"), checkpoint)
    check_resume_changes(make_cfg("sampling=coarse", "trainer.max_steps=20", "ckpt_path=old.ckpt"), checkpoint)


def test_a_real_checkpoint_resumes_with_the_safe_load(trained_run, tmp_path, cache_dir):
    path = trained_run / "checkpoints" / "last.ckpt"
    overrides = [o for o in FAST_OVERRIDES if not o.startswith("trainer.max_steps")]
    result = run_command("nerf_lab.train", *overrides, "trainer.max_steps=14", f"ckpt_path={path}", "hydra.run.dir=out", cwd=tmp_path, cache=cache_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    assert '"steps": 14' in (tmp_path / "out" / "metrics.json").read_text()


def _old_name(name: str) -> str:
    """A tensor's name in the checkpoints of before: the renderer under `model.`, the grid
    under `model.occupancy.`."""
    return name.replace("renderer.sampler.grid.", "model.occupancy.").replace("renderer.", "model.")


def test_a_checkpoint_written_before_the_renderer_node_still_loads_with_the_same_weights(make_cfg, tmp_path):
    """Checkpoints whose stored config has no `module` and sampler nodes and whose grid sits
    under `model.occupancy.` load, through today's nodes, with the same weights."""
    from nerf_lab.train import train
    from nerf_lab.runs.checkpoints import load_trained

    cfg = make_cfg("sampling=occupancy", "sampling.grid.resolution=8", "trainer.max_steps=2", "trainer.val_check_interval=2")
    train(cfg)
    checkpoint = torch.load(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt", weights_only=True)
    stored = checkpoint["hyper_parameters"]["config"]
    # A stored config of another layout: no module node, no sampler node, clip_to_box, encodings not in the field node.
    del stored["module"]
    del stored["sampling"]["sampler"]
    stored["sampling"]["clip_to_box"] = True
    for key in ("position_encoding", "direction_encoding"):
        del stored["model"][key]
    checkpoint["state_dict"] = {_old_name(name): value for name, value in checkpoint["state_dict"].items()}
    old = tmp_path / "old.ckpt"
    torch.save(checkpoint, old)

    module = load_trained(old).module
    assert type(module.renderer.sampler).__name__ == "OccupancyGridSampler"
    for name, value in module.state_dict().items():
        saved = checkpoint["state_dict"].get(_old_name(name))
        if saved is not None:
            torch.testing.assert_close(value, saved, msg=name)
    assert torch.equal(module.renderer.sampler.grid.occupied, checkpoint["state_dict"]["model.occupancy.occupied"])
