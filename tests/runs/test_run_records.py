"""A run's record is the truth: a checkpoint's config is data, the
command line says what ran, and what is not a result fails.

Commands run as a user does where the exit status, the printed line or the files left are the
point; the rest is checked in-process on the same objects."""

from __future__ import annotations

import copy
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FAST_OVERRIDES, compose_config
from user_commands import one_line_error, run_command

from nerf_lab.errors import ConfigError, NerfLabError

slow = pytest.mark.slow


class MarkerPayload:
    """Unpickled (numpy.load with allow_pickle=True), this creates `marker` with os.system."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def _craft(trained_run: Path, folder: Path, scheduler: dict, name: str = "crafted.ckpt") -> Path:
    """The trained run's checkpoint whose stored `optim.scheduler` is `scheduler` (plain data,
    so `weights_only=True` loads it: only an instantiate of the stored config would call it)."""
    checkpoint = torch.load(trained_run / "checkpoints" / "best.ckpt", weights_only=True)
    checkpoint["hyper_parameters"]["config"]["optim"]["scheduler"] = scheduler
    path = folder / name
    torch.save(checkpoint, path)
    return path


def open_for_writing(folder: Path) -> tuple[dict, Path]:
    """A stored config node that would empty `victim` if called."""
    victim = folder / "victim.txt"
    victim.write_text("precious\n")
    return {"_target_": "builtins.open", "_args_": [str(victim), "w"]}, victim


def numpy_pickle(folder: Path) -> tuple[dict, Path]:
    """A stored config node that, if called, unpickles a file that creates `marker`."""
    marker = folder / "payload-ran"
    evil = folder / "evil.npy"
    np.save(evil, np.array([MarkerPayload(marker)], dtype=object), allow_pickle=True)
    return {"_target_": "numpy.load", "file": str(evil), "allow_pickle": True}, marker


def test_the_crafted_nodes_would_do_harm_if_instantiated(tmp_path):
    from hydra.utils import instantiate

    node, victim = open_for_writing(tmp_path)
    instantiate(node).close()
    assert victim.read_text() == ""
    node, marker = numpy_pickle(tmp_path)
    instantiate(node)
    assert marker.exists()


def _report_folder(trained_run: Path, tmp_path: Path, checkpoint: Path) -> Path:
    """A one-job sweep folder whose job's best checkpoint is `checkpoint`."""
    job = tmp_path / "sweep" / "0_seed=0"
    shutil.copytree(trained_run, job)
    shutil.copy(checkpoint, job / "checkpoints" / "best.ckpt")
    return tmp_path / "sweep"


@pytest.mark.parametrize(
    ("command", "craft"),
    [
        ("nerf_lab.eval", open_for_writing),
        pytest.param("nerf_lab.eval", numpy_pickle, marks=slow),
        pytest.param("nerf_lab.render", open_for_writing, marks=slow),
        pytest.param("nerf_lab.render", numpy_pickle, marks=slow),
        pytest.param("nerf_lab.report", open_for_writing, marks=slow),
        pytest.param("nerf_lab.report", numpy_pickle, marks=slow),
    ],
)
def test_no_target_stored_in_a_checkpoint_is_called(trained_run, tmp_path, cache_dir, command, craft):
    node, witness = craft(tmp_path)
    path = _craft(trained_run, tmp_path, node)
    if command == "nerf_lab.report":
        sweep = _report_folder(trained_run, tmp_path, path)
        result = run_command(command, str(sweep), "--no-orbit", cwd=tmp_path, cache=cache_dir)
    else:
        extra = ["frames=2"] if command == "nerf_lab.render" else ["views=1"]
        result = run_command(command, f"ckpt_path={path}", "accelerator=cpu", *extra, "hydra.run.dir=out", cwd=tmp_path, cache=cache_dir)
        assert not (tmp_path / "out").exists()
    line = one_line_error(result)
    assert "optim.scheduler._target_" in line and ".ckpt" in line, line
    if craft is open_for_writing:
        assert witness.read_text() == "precious\n"
    else:
        assert not witness.exists()


def _stored(trained_run: Path) -> dict:
    return torch.load(trained_run / "checkpoints" / "best.ckpt", weights_only=True)


def _save(checkpoint: dict, folder: Path, name: str = "changed.ckpt") -> Path:
    path = folder / name
    torch.save(checkpoint, path)
    return path


def test_a_checkpoint_rebuilds_from_todays_config_with_its_stored_values(trained_run):
    from nerf_lab.runs.checkpoints import load_trained

    checkpoint = _stored(trained_run)
    assert checkpoint["hyper_parameters"]["choices"]["data"] == "builtin"
    trained = load_trained(trained_run / "checkpoints" / "best.ckpt")
    stored = checkpoint["hyper_parameters"]["config"]
    assert trained.run_config.sampling.n_c == stored["sampling"]["n_c"] == 16
    assert trained.run_config.data.resolution == 32
    for name, tensor in checkpoint["state_dict"].items():
        assert torch.equal(trained.module.state_dict()[name], tensor)


def test_a_checkpoint_of_before_the_choices_were_stored_has_them_inferred(trained_run, tmp_path):
    from nerf_lab.runs.checkpoints import load_trained

    checkpoint = _stored(trained_run)
    del checkpoint["hyper_parameters"]["choices"]
    trained = load_trained(_save(checkpoint, tmp_path))
    assert trained.run_config.data._target_ == "nerf_lab.data.BuiltinSceneDataModule"
    assert trained.run_config.sampling.n_c == 16


def test_an_occupancy_checkpoint_without_choices_infers_the_grid(tmp_path):
    from omegaconf import OmegaConf

    from nerf_lab.runs.checkpoints import load_trained
    from nerf_lab.config.build import build_module

    cfg = compose_config([*FAST_OVERRIDES, "sampling=occupancy", "sampling.grid.resolution=8"], tmp_path / "run")
    module = build_module(cfg)
    checkpoint = {"state_dict": module.state_dict(), "hyper_parameters": {"config": OmegaConf.to_container(cfg, resolve=True)}}
    trained = load_trained(_save(checkpoint, tmp_path))
    assert trained.module.renderer.sampler.grid is not None
    assert trained.module.renderer.sampler.grid.occupied.shape == (8, 8, 8)


# The modules and classes of earlier nerf_lab versions that a stored config names.
OLD_TARGETS = {
    ("module", "renderer"): "nerf_lab.nerf.model.NeRFModel",
    ("sampling", "sampler"): "nerf_lab.nerf.samplers.OccupancyGridSampler",  # the default command's
    ("callbacks", "checkpoint_on_stop"): "nerf_lab.records.stops.CheckpointOnStop",
    ("callbacks", "view_images"): "nerf_lab.training.logging.LogViewImages",
}


def test_a_checkpoint_of_the_old_module_layout_loads_with_the_same_weights(trained_run, tmp_path):
    """A checkpoint written before the renderer and the run records moved: its config names
    the old modules, its weights sit under `model.`; it loads, through today's classes."""
    from nerf_lab.runs.checkpoints import load_trained

    checkpoint = _stored(trained_run)
    config = checkpoint["hyper_parameters"]["config"]
    for (group, key), target in OLD_TARGETS.items():
        assert config[group][key]["_target_"].rsplit(".", 1)[1] == target.rsplit(".", 1)[1] or key == "renderer"
        config[group][key]["_target_"] = target
    checkpoint["state_dict"] = {name.replace("renderer.", "model.", 1): value for name, value in checkpoint["state_dict"].items()}
    assert any(name.startswith("model.coarse_field.") for name in checkpoint["state_dict"])

    trained = load_trained(_save(checkpoint, tmp_path))
    assert type(trained.module.renderer).__name__ == "NeRFRenderer"
    assert trained.run_config.callbacks.checkpoint_on_stop._target_ == "nerf_lab.runs.stops.CheckpointOnStop"
    for name, value in trained.module.state_dict().items():
        if name.startswith("renderer."):
            torch.testing.assert_close(value, checkpoint["state_dict"]["model." + name.removeprefix("renderer.")], msg=name)


def _with(checkpoint: dict, edit) -> dict:
    changed = copy.deepcopy(checkpoint)
    edit(changed)
    return changed


def _grid_checkpoint(tmp_path: Path) -> dict:
    from omegaconf import OmegaConf

    from nerf_lab.config.build import build_module

    cfg = compose_config([*FAST_OVERRIDES, "sampling=occupancy", "sampling.grid.resolution=8"], tmp_path / "run")
    module = build_module(cfg)
    return {"state_dict": module.state_dict(), "hyper_parameters": {"config": OmegaConf.to_container(cfg, resolve=True)}}


GRID = "renderer.sampler.grid"
TAMPERED = [
    ("chunk", lambda c: c["hyper_parameters"]["config"]["sampling"].update(chunk=0), "sampling.chunk=0 is not allowed"),
    ("unknown key", lambda c: c["hyper_parameters"]["config"]["model"].update(dropout=0.5), "model.dropout, a key today's config does not have"),
    ("args", lambda c: c["hyper_parameters"]["config"]["model"].update(_args_=[1]), "model._args_=[1] where today's config has nothing"),
    ("interpolation", lambda c: c["hyper_parameters"]["config"]["data"].update(cache_dir="${oc.env:HOME}"), "expected a resolved value"),
    ("choice", lambda c: c["hyper_parameters"].update(choices={"data": "../../etc"}), "no such option in today's conf/data/"),
    ("far", lambda c: c["hyper_parameters"]["config"]["data"].update(far=1e30), "data.far=1e+30 is not allowed"),
    ("nan weight", lambda c: c["state_dict"]["renderer.coarse_field.trunk.0.weight"].view(-1)[0].fill_(float("nan")), "holds non-finite weights"),
    ("shape", lambda c: c["state_dict"].update({"renderer.coarse_field.trunk.0.bias": torch.zeros(3)}), "holds a model of another shape"),
]


@pytest.mark.parametrize(("edit", "expected"), [pytest.param(e, x, id=i) for i, e, x in TAMPERED])
def test_a_tampered_checkpoint_is_refused_in_one_line_naming_the_file_and_key(trained_run, tmp_path, edit, expected):
    from nerf_lab.runs.checkpoints import load_trained

    path = _save(_with(_stored(trained_run), edit), tmp_path)
    with pytest.raises(ConfigError) as caught:
        load_trained(path)
    message = str(caught.value)
    assert expected in message and str(path) in message and "\n" not in message, message


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda s: s.update({f"{GRID}.occupied": s[f"{GRID}.occupied"].float()}), "holds a model of another shape"),
        (lambda s: s.update({f"{GRID}.occupied": torch.ones(4, 4, 4, dtype=torch.bool)}), "holds a model of another shape"),
        (lambda s: s[f"{GRID}.occupied"].fill_(False), "an occupancy grid its run could not have left"),
    ],
    ids=["float", "shape", "emptied"],
)
def test_a_tampered_occupancy_grid_is_refused(tmp_path, edit, expected):
    from nerf_lab.runs.checkpoints import load_trained

    checkpoint = _grid_checkpoint(tmp_path)
    edit(checkpoint["state_dict"])
    with pytest.raises(ConfigError, match=expected):
        load_trained(_save(checkpoint, tmp_path))


def test_a_grid_the_run_left_loads(tmp_path):
    from nerf_lab.runs.checkpoints import load_trained

    checkpoint = _grid_checkpoint(tmp_path)
    state = checkpoint["state_dict"]
    state[f"{GRID}.density"][:2] = 50.0  # a refreshed grid: occupied exactly where dense
    state[f"{GRID}.occupied"].copy_(state[f"{GRID}.density"] > 1.0)
    assert load_trained(_save(checkpoint, tmp_path)).module.renderer.sampler.grid.occupied_fraction() == 0.25


def test_tensors_larger_than_the_model_are_refused_before_they_are_read(trained_run, tmp_path):
    from nerf_lab.runs.checkpoints import load_trained

    checkpoint = _stored(trained_run)
    checkpoint["callbacks"]["padding"] = torch.zeros(2**22)  # 16 MiB of zeros
    path = _save(checkpoint, tmp_path)
    with pytest.raises(ConfigError, match="its tensors hold 1[67]"):
        load_trained(path)
    # The same, packed: 16 MiB of zeros in a file of kilobytes, refused from the zip's headers.
    packed = tmp_path / "packed.ckpt"
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(packed, "w", zipfile.ZIP_DEFLATED) as target:
        for record in source.infolist():
            target.writestr(record.filename, source.read(record))
    assert packed.stat().st_size < 2**20
    with pytest.raises(ConfigError, match="its records are compressed"):
        load_trained(packed)


def test_eval_refuses_non_finite_weights_in_one_line(trained_run, tmp_path, cache_dir):
    path = _save(_with(_stored(trained_run), TAMPERED[6][1]), tmp_path)
    result = run_command("nerf_lab.eval", f"ckpt_path={path}", "accelerator=cpu", "hydra.run.dir=out", cwd=tmp_path, cache=cache_dir)
    assert "holds non-finite weights (renderer.coarse_field.trunk.0.weight" in one_line_error(result)
    assert not (tmp_path / "out").exists()


@slow
def test_render_refuses_non_finite_weights_in_one_line(trained_run, tmp_path, cache_dir):
    path = _save(_with(_stored(trained_run), TAMPERED[6][1]), tmp_path)
    result = run_command("nerf_lab.render", f"ckpt_path={path}", "frames=2", "hydra.run.dir=out", cwd=tmp_path, cache=cache_dir)
    assert "holds non-finite weights" in one_line_error(result)
    assert not (tmp_path / "out").exists()


# --- the command line says what ran ---

ADDED_KEYS = [
    ("+foo=1", "no component takes foo"),
    ("+optim.weight_decay=0.01", "takes it as optim.optimizer.weight_decay (+optim.optimizer.weight_decay=0.01)"),
    ("+sampling.jitter=0.1", "no component takes sampling.jitter"),
    ("+model.dropout=0.1", "nearest keys: model.depth"),
    ("+data.near_plane=1.0", "nearest keys: data.near"),
    ("+encoding.position.scale=2", "no component takes encoding.position.scale"),
    ("+trainer.foo=1", "no component takes trainer.foo"),
    ("model.detph=2", "model has no key detph; nearest keys: model.depth"),
]


@pytest.mark.parametrize(("argument", "expected"), ADDED_KEYS)
def test_a_key_no_component_takes_is_refused_naming_the_nearest(argument, expected):
    from nerf_lab.cli import command_line_error

    line = command_line_error("train", [argument])
    assert line is not None and line.startswith(argument) and expected in line, line


@pytest.mark.parametrize("argument", ["+optim.optimizer.weight_decay=0.01", "+optim.optimizer.amsgrad=true", "+trainer.overfit_batches=1"])
def test_a_key_a_constructor_takes_is_accepted(argument):
    from nerf_lab.cli import command_line_error

    assert command_line_error("train", [argument]) is None


def test_adams_added_keys_reach_adam(tmp_path):
    from nerf_lab.config.build import build_module

    cfg = compose_config([*FAST_OVERRIDES, "+optim.optimizer.weight_decay=0.01", "+optim.optimizer.amsgrad=true"], tmp_path)
    group = build_module(cfg).make_optimizer(torch.nn.Linear(2, 2).parameters()).param_groups[0]
    assert group["weight_decay"] == 0.01 and group["amsgrad"] is True


@pytest.mark.parametrize(
    "arguments",
    [
        ["+foo=1"],
        pytest.param(["model.detph=2"], marks=slow),
        pytest.param(["trainer.devices=0"], marks=slow),
        pytest.param(["trainer.max_time=00:00:00:00"], marks=slow),
        pytest.param(["trainer.accumulate_grad_batches=0"], marks=slow),
        pytest.param(["data.far=1e30"], marks=slow),
        pytest.param(["-m", "experiment=ablation_depth,ablation_lr", "hydra.sweep.dir=out"], marks=slow),
    ],
)
def test_a_refused_command_line_is_one_line_and_leaves_no_folder(tmp_path, cache_dir, arguments):
    result = run_command("nerf_lab.train", *arguments, "hydra.run.dir=out", cwd=tmp_path, cache=cache_dir)
    line = one_line_error(result)
    assert line.startswith("error: "), line
    assert not (tmp_path / "out").exists() and not (tmp_path / "outputs").exists()


def test_a_sweep_over_study_presets_is_refused():
    from nerf_lab.cli import command_line_error

    line = command_line_error("train", ["-m", "experiment=ablation_depth,ablation_lr"])
    assert line.startswith("experiment=ablation_depth,ablation_lr: study presets carry their own sweeps"), line
    assert command_line_error("train", ["-m", "experiment=ablation_depth"]) is None


def test_values_that_train_nothing_are_refused(tmp_path):
    from nerf_lab.config.build import validate_config

    for override, key in [
        ("trainer.max_time=00:00:00:00", "trainer.max_time"),
        ("trainer.accumulate_grad_batches=0", "trainer.accumulate_grad_batches"),
        ("trainer.devices=0", "trainer.devices"),
        ("data.far=1e30", "data.far"),
    ]:
        with pytest.raises(ConfigError) as caught:
            validate_config(compose_config([*FAST_OVERRIDES, override], tmp_path))
        assert caught.value.key == key


# --- resuming ---


def test_resuming_past_max_steps_is_one_line(trained_run, tmp_path):
    from nerf_lab.config.build import build_run
    from nerf_lab.runs.checkpoints import check_resumable

    path = trained_run / "checkpoints" / "last.ckpt"
    cfg = compose_config([*FAST_OVERRIDES, "trainer.max_steps=10", f"ckpt_path={path}"], tmp_path)
    with pytest.raises(ConfigError, match=r"is at step 12 and trainer.max_steps=10: nothing left to train; expected trainer.max_steps > 12"):
        check_resumable(cfg, build_run(cfg).module)


@pytest.mark.parametrize(
    ("overrides", "changed"),
    [
        (["model.depth=2"], "model.depth: 4 → 2"),
        (["sampling.n_c=32", "encoding.position.n_freqs=6"], "encoding.position.n_freqs: 10 → 6; sampling.n_c: 16 → 32"),
        (["data.resolution=64"], "data.resolution: 32 → 64"),
        (["seed=1"], "data.seed: 0 → 1; seed: 0 → 1"),
    ],
)
def test_resuming_with_keys_that_fix_the_run_changed_is_refused_listing_them(trained_run, tmp_path, overrides, changed):
    from nerf_lab.config.build import build_run
    from nerf_lab.runs.checkpoints import check_resumable

    path = trained_run / "checkpoints" / "last.ckpt"
    cfg = compose_config([*FAST_OVERRIDES, "trainer.max_steps=20", *overrides, f"ckpt_path={path}"], tmp_path)
    with pytest.raises(ConfigError) as caught:
        check_resumable(cfg, build_run(cfg).module)
    assert changed in str(caught.value), str(caught.value)


def test_resuming_with_keys_that_may_change_is_accepted_and_listed(trained_run, tmp_path):
    from nerf_lab.config.build import build_run
    from nerf_lab.runs.checkpoints import check_resumable

    path = trained_run / "checkpoints" / "last.ckpt"
    overrides = ["trainer.max_steps=40", "optim.lr=1e-3", "optim.lr_final=1e-4", "trainer.val_check_interval=10", "trainer.precision=bf16-mixed"]
    cfg = compose_config([*FAST_OVERRIDES, *overrides, f"ckpt_path={path}"], tmp_path)
    changes = check_resumable(cfg, build_run(cfg).module).changes
    assert "optim.lr: 0.005 → 0.001" in changes and "trainer.max_steps: 12 → 40" in changes


def _last_lr(run: Path) -> float:
    return torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["optimizer_states"][0]["param_groups"][0]["lr"]


def test_a_resumed_run_steps_the_schedule_of_its_new_config(tmp_path, make_cfg):
    """Resumed at step 6 with a new rate and twice the steps, a run ends on the
    rate an uninterrupted run of the new config ends on, bit for bit (and not on the old
    schedule's, ten times lower)."""
    from nerf_lab.train import train

    first = make_cfg("trainer.max_steps=6", "test=false")
    train(first)
    new = ["trainer.max_steps=12", "optim.lr=1e-3", "optim.lr_final=1e-4", "test=false"]
    resumed = make_cfg(*new, f"ckpt_path={Path(first.paths.output_dir) / 'checkpoints' / 'last.ckpt'}")
    straight = make_cfg(*new)
    train(resumed)
    train(straight)
    lr = _last_lr(Path(resumed.paths.output_dir))
    assert lr == _last_lr(Path(straight.paths.output_dir))
    assert lr == pytest.approx(1e-4, rel=1e-6)  # lr_k = lr·(lr_final/lr)^(k/max_steps) at k = max_steps


def test_a_run_that_trains_no_step_fails(make_cfg, monkeypatch):
    """Whatever stops it (a time budget spent in the first batch's set-up, a stop signal), a
    run that trained no step ends failed, not "completed" with the untrained model's metrics."""
    import pytorch_lightning as pl

    from nerf_lab.train import train

    monkeypatch.setattr(pl.Trainer, "fit", lambda *args, **kwargs: None)
    with pytest.raises(NerfLabError, match="the run trained 0 steps"):
        train(make_cfg())


# --- eval reads only what it scores ---


def _blender_run(tmp_path: Path, builtin_scene_32px: Path, cache_dir: Path) -> tuple[Path, Path]:
    """A tiny run on a copy of the built-in scene read as a Blender folder."""
    scene = tmp_path / "scene"
    shutil.copytree(builtin_scene_32px, scene)
    overrides = [o for o in FAST_OVERRIDES if not o.startswith("trainer.max_steps")]
    result = run_command(
        "nerf_lab.train", "data=blender", f"data.scene_dir={scene}", *overrides, "trainer.max_steps=2", "test=false",
        "hydra.run.dir=run", cwd=tmp_path, cache=cache_dir,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return tmp_path / "run" / "checkpoints" / "last.ckpt", scene


@slow
def test_eval_neither_decodes_the_train_split_nor_names_data_scene_dir(tmp_path, builtin_scene_32px, cache_dir):
    checkpoint, scene = _blender_run(tmp_path, builtin_scene_32px, cache_dir)
    for image in (scene / "train").glob("*.png"):
        image.write_bytes(b"not a png")  # eval scores the test split: the train split is never read
    result = run_command("nerf_lab.eval", f"ckpt_path={checkpoint}", "accelerator=cpu", "views=1", "hydra.run.dir=ev", cwd=tmp_path, cache=tmp_path / "fresh-cache")
    assert result.returncode == 0, result.stderr[-3000:]
    shutil.rmtree(scene)
    result = run_command("nerf_lab.eval", f"ckpt_path={checkpoint}", "accelerator=cpu", "hydra.run.dir=ev2", cwd=tmp_path, cache=cache_dir)
    line = one_line_error(result)
    assert "expected scene_dir=" in line and "data.scene_dir" not in line, line
    assert not (tmp_path / "ev2").exists()
