"""The commands as a user runs them: exit codes, one-line errors, and the files they write."""

import json
import math
import re
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from conftest import FAST_OVERRIDES
from user_commands import one_line_error, run_command

from helpers import slow_after_first

from nerf_lab.data.builtin_scene import builtin_scene_dir
from nerf_lab.visuals.panels import LABEL_HEIGHT


def test_train_command_writes_a_complete_run(trained_run):
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["steps"] == 12
    assert (trained_run / ".hydra" / "config.yaml").is_file()
    assert list((trained_run / "tensorboard").glob("events.out.tfevents.*"))
    assert {p.name for p in (trained_run / "checkpoints").iterdir()} >= {"best.ckpt", "last.ckpt"}
    # The test's per-view record: each view's PSNR, whose mean is the run's test PSNR, and how it was measured.
    views = metrics["views"]
    assert [v["view"] for v in views] == [0, 1] and [v["name"] for v in views] == ["r_0", "r_1"]  # data.test_views=2
    assert metrics["test/psnr"] == pytest.approx(sum(v["psnr"] for v in views) / 2, rel=1e-5)
    protocol = metrics["protocol"]
    assert protocol["views"] == 2 and protocol["resolution"] == [32, 32] and protocol["background"] == [1.0, 1.0, 1.0]
    assert "test/lpips" not in metrics and protocol["lpips"]["unavailable"].startswith("LPIPS unavailable")
    rows = (trained_run / "test_views.csv").read_text().splitlines()
    assert rows[0] == "view,name,psnr,ssim" and len(rows) == 3


@pytest.mark.parametrize(
    ("arguments", "message"),
    slow_after_first([
        (["model.depth=0"], "error: model.depth=0 is not allowed: expected an integer >= 1"),
        (["sampling.n_c=-1"], "error: sampling.n_c=-1 is not allowed: expected an integer >= 1"),
        (["model=huge"], "error: model=huge: no such option in conf/model/; expected one of: ngp, original, original_lite, tiny"),
        (["data=blender", "data.scene_dir=/no/such/scene"], "error: scene folder /no/such/scene does not exist"),
        (["data.batch_rays=0"], "error: data.batch_rays=0 is not allowed: expected a positive integer"),
    ]),
)
def test_bad_input_fails_at_once_with_one_line_and_no_run_folder(tmp_path, cache_dir, arguments, message):
    result = run_command("nerf_lab.train", *arguments, "hydra.run.dir=run", cwd=tmp_path, cache=cache_dir)
    assert result.returncode == 2
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith(message), result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()  # nothing half-written


@pytest.mark.parametrize("mode", [[], ["-m"]])
def test_a_refused_command_line_leaves_no_default_folder(tmp_path, cache_dir, mode):
    """The check before Hydra composes the config, and an experiment's own hydra.sweep.dir, claim
    default folders (outputs/multirun/<date>/<time>): a refused command leaves none behind."""
    result = run_command("nerf_lab.train", *mode, "experiment=original_800_pe_only", "no_such.key=1", cwd=tmp_path, cache=cache_dir)
    assert one_line_error(result).startswith("error: no_such.key=1: train's config has no no_such")
    assert sorted(path.name for path in tmp_path.iterdir()) == []


def test_eval_writes_views_and_per_view_metrics(trained_run, tmp_path, cache_dir):
    result = run_command(
        "nerf_lab.eval", f"ckpt_path={trained_run / 'checkpoints' / 'last.ckpt'}", "views=2", "hydra.run.dir=eval", "accelerator=cpu",
        cwd=tmp_path, cache=cache_dir,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert [v["view"] for v in metrics["views"]] == [0, 1]  # views=2: the first two (default: all)
    # The same record as the training run's test: the same fields a view, the same protocol.
    trained_views = json.loads((trained_run / "metrics.json").read_text())["views"]
    assert [set(v) for v in metrics["views"]] == [set(v) for v in trained_views]
    assert metrics["protocol"]["views"] == 2 and metrics["protocol"]["resolution"] == [32, 32]
    assert (tmp_path / "eval" / "test_views.csv").read_text().splitlines()[0] == "view,name,psnr,ssim"
    assert metrics["psnr"] == pytest.approx(sum(v["psnr"] for v in metrics["views"]) / 2, rel=1e-5)
    trained = json.loads((trained_run / "metrics.json").read_text())
    assert metrics["psnr"] == pytest.approx(trained["test/psnr"], abs=0.05)  # same model, same views
    # Plain files named by view, for other metric tools: they hold what was scored.
    folder = tmp_path / "eval"
    prediction, truth = iio.imread(folder / "pred" / "r_0.png"), iio.imread(folder / "gt" / "r_0.png")
    assert prediction.shape == truth.shape == (32, 32, 3)
    mse = np.mean((prediction / 255.0 - truth / 255.0) ** 2)
    assert -10 * np.log10(mse) == pytest.approx(metrics["views"][0]["psnr"], abs=0.1)  # 8-bit rounding
    depth = np.load(folder / "depth" / "r_0.npy")
    assert depth.shape == (32, 32) and depth.dtype == np.float32 and ((2.0 <= depth) & (depth <= 6.0)).all()
    # The labelled panel: prediction | ground truth | depth, each 32 px view shown 8x, the
    # first tile the prediction itself, pixel for pixel.
    panel = iio.imread(folder / "views" / "000.png")
    assert panel.shape[1] > 3 * 256
    np.testing.assert_array_equal(panel[LABEL_HEIGHT : LABEL_HEIGHT + 256 : 8, 1 : 1 + 256 : 8], prediction)


def test_eval_at_another_resolution_renders_and_records_it(trained_run, tmp_path, cache_dir):
    """resolution=48 on a run trained at 32 px: 48 px views, scored against the scene at 48 px,
    and the size in metrics.json; +data.resolution (Hydra's hint) is refused, not ignored."""
    checkpoint = f"ckpt_path={trained_run / 'checkpoints' / 'last.ckpt'}"
    result = run_command("nerf_lab.eval", checkpoint, "views=1", "resolution=48", "hydra.run.dir=eval", "accelerator=cpu", cwd=tmp_path, cache=cache_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["resolution"] == [48, 48]
    assert iio.imread(tmp_path / "eval" / "pred" / "r_0.png").shape == (48, 48, 3)
    for override in ("+data.resolution=48", "data.resolution=48"):
        refused = run_command("nerf_lab.eval", checkpoint, override, "hydra.run.dir=refused", cwd=tmp_path, cache=cache_dir)
        assert refused.returncode == 2
        assert refused.stderr.strip().splitlines()[-1].startswith(
            "error: data.resolution is not read by nerf_lab.eval: the run's own settings come from its checkpoint"
        )
        assert refused.stderr.strip().splitlines()[-1].endswith("(the image width to evaluate at is resolution=<px>)")
        assert not (tmp_path / "refused").exists()


@pytest.mark.parametrize("task", ["eval", "render"])
def test_the_check_before_eval_or_render_hands_over_its_model_and_data_module(trained_run, tmp_path, cache_dir, monkeypatch, task):
    """One build: the check before the command reads the checkpoint and builds the data module;
    the command uses those very objects and builds neither again."""
    from hydra import compose, initialize_config_dir

    import nerf_lab.runs.checkpoints as checkpoints
    from nerf_lab.config import resolvers  # noqa: F401 (registers the config's resolvers)
    from nerf_lab.config.compose import CONF_DIR
    from nerf_lab.eval import evaluate
    from nerf_lab.render import render_orbit
    from nerf_lab.runs.hydra_callbacks import check_before_run

    calls = {"read_checkpoint": 0, "build_datamodule": 0}
    for name in calls:
        real = getattr(checkpoints, name)

        def counted(*args, _real=real, _name=name, **kwargs):
            calls[_name] += 1
            return _real(*args, **kwargs)

        monkeypatch.setattr(checkpoints, name, counted)
    own = {"eval": ["views=1"], "render": ["frames=1", "resolution=8"]}[task]
    overrides = [f"ckpt_path={trained_run / 'checkpoints' / 'last.ckpt'}", *own, "accelerator=cpu", f"paths.cache_dir={cache_dir}"]
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose(task, overrides=[*overrides, f"paths.output_dir={tmp_path}"])
    prepared = check_before_run(cfg)
    assert calls == {"read_checkpoint": 1, "build_datamodule": 1}
    {"eval": evaluate, "render": render_orbit}[task](cfg)
    assert calls == {"read_checkpoint": 1, "build_datamodule": 1}
    assert len(prepared.trained._datamodules) == 1


def test_eval_of_a_missing_checkpoint_is_one_line(tmp_path, cache_dir):
    result = run_command("nerf_lab.eval", "ckpt_path=/no/such.ckpt", "hydra.run.dir=eval", cwd=tmp_path, cache=cache_dir)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "error: ckpt_path=/no/such.ckpt does not exist: expected a checkpoint such as <run>/checkpoints/last.ckpt"
    )


def test_render_writes_an_orbit_gif(trained_run, tmp_path, cache_dir):
    result = run_command(
        "nerf_lab.render", f"ckpt_path={trained_run / 'checkpoints' / 'last.ckpt'}", "frames=6", "depth=true",
        "hydra.run.dir=orbit", "accelerator=cpu", cwd=tmp_path, cache=cache_dir,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    frames = iio.imread(tmp_path / "orbit" / "orbit.gif", index=None)
    assert frames.shape[:3] == (6, 32, 64)  # colour | depth, 6 frames
    assert not (frames[0] == frames[3]).all()  # the camera moves


def test_render_of_a_poses_only_json_draws_what_eval_draws_for_those_cameras(trained_run, tmp_path, cache_dir):
    """Field case 20: render poses=<json> of the test split's first two cameras, in a folder
    without their images: the same prediction and depth, pixel for pixel, as eval renders and
    scores for those views, named as the split names them; no score claimed."""
    checkpoint = f"ckpt_path={trained_run / 'checkpoints' / 'last.ckpt'}"
    evaluated = run_command("nerf_lab.eval", checkpoint, "views=2", "hydra.run.dir=eval", "accelerator=cpu", cwd=tmp_path, cache=cache_dir)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    meta = json.loads((builtin_scene_dir(cache_dir, 32) / "transforms_test.json").read_text())
    meta["frames"] = meta["frames"][:2]
    (tmp_path / "cameras").mkdir()
    (tmp_path / "cameras" / "path.json").write_text(json.dumps(meta))
    rendered = run_command("nerf_lab.render", checkpoint, f"poses={tmp_path / 'cameras' / 'path.json'}", "hydra.run.dir=poses",
                           "accelerator=cpu", cwd=tmp_path, cache=cache_dir)
    assert rendered.returncode == 0, rendered.stderr[-3000:]
    assert "no ground truth read: no PSNR/SSIM" in rendered.stdout
    names = sorted(path.name for path in (tmp_path / "eval" / "pred").iterdir())
    assert len(names) == 2 and sorted(path.name for path in (tmp_path / "poses" / "pred").iterdir()) == names
    for name in names:
        np.testing.assert_array_equal(iio.imread(tmp_path / "poses" / "pred" / name), iio.imread(tmp_path / "eval" / "pred" / name))
        depth = Path(name).with_suffix(".npy").name
        np.testing.assert_allclose(np.load(tmp_path / "poses" / "depth" / depth), np.load(tmp_path / "eval" / "depth" / depth), atol=1e-5)


def test_bench_prints_and_writes_its_figures(tmp_path, cache_dir):
    # a run's validation curve: 20 dB first reached at 80 s, 25 dB at 120 s, 28 dB never
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "curve.csv").write_text(
        "step,wall_s,val_psnr,val_ssim\n100,40.0,19.1,0.7\n200,80.0,24.0,0.8\n300,120.0,26.2,0.85\n"
    )
    result = run_command(
        "nerf_lab.bench", *FAST_OVERRIDES, "sampling=coarse", "bench.warmup_steps=2", "bench.steps=4", "bench.profile_steps=2",
        "bench.curve_from=run", "hydra.run.dir=bench", cwd=tmp_path, cache=cache_dir,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads((tmp_path / "bench" / "bench.json").read_text())
    for key in ("train_steps_per_s", "train_rays_per_s", "render_s_per_view", "peak_mem_mb", "device", "config"):
        assert key in figures
    assert figures["train_rays_per_s"] == pytest.approx(figures["train_steps_per_s"] * 128, rel=0.01)
    assert figures["timed_steps"] == 4 and figures["render_s_per_view"] > 0
    # Without an occupancy grid every one of the 16 samples a ray reaches the field.
    assert figures["field_evals_per_ray"] == 16 and figures["occupied_fraction"] is None
    assert "steps/s" in result.stdout
    assert figures["time_to_psnr_s"] == {"20": 80.0, "25": 120.0, "28": None, "30": None}
    assert re.search(r"time to 25 dB +\| 120 s", result.stdout) and re.search(r"time to 28 dB +\| not reached", result.stdout)
    # The profiled steps come after the timed ones; the model's stages are a part of the step.
    stages = figures["profile_ms_per_step"]
    assert set(stages) == {"step", "nerf.sampling", "nerf.field", "nerf.compositing"}
    assert 0 < stages["nerf.field"] < stages["step"]
    assert "aten::" in (tmp_path / "bench" / "profile.txt").read_text()


def test_compiled_fields_train_and_their_checkpoint_loads_uncompiled(tmp_path, cache_dir):
    # A command, not train(cfg): the tests' run-time shape checks (jaxtyping) are not traceable
    # by torch.compile, and users run it this way.
    result = run_command(
        "nerf_lab.train", *FAST_OVERRIDES, "compile=true", "trainer.max_steps=3", "trainer.val_check_interval=3",
        "sampling.n_c=8", "hydra.run.dir=run", cwd=tmp_path, cache=cache_dir,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    # Three steps: a finite score, not a quality bar (a blank image scores about 7 dB).
    assert metrics["steps"] == 3 and math.isfinite(metrics["val/psnr"]) and math.isfinite(metrics["test/psnr"])
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert state and not any("_orig_mod" in key for key in state)  # the same keys as an eager model's
