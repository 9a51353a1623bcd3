"""Training end to end on the built-in scene: files, metrics, TensorBoard, resume."""

import csv
import json
import math
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from omegaconf import open_dict

from helpers import events

from nerf_lab.data.batches import ViewBatch
from nerf_lab.nerf.marching import RenderOutputs
from nerf_lab.train import train
from nerf_lab.runs.checkpoints import load_trained
from nerf_lab.config.build import build_module


def test_a_short_run_writes_everything_a_researcher_looks_at(make_cfg):
    cfg = make_cfg()
    metrics = train(cfg)
    run = Path(cfg.paths.output_dir)

    recorded = json.loads((run / "metrics.json").read_text())
    scalars = {key: value for key, value in metrics.items() if key not in ("views", "protocol")}
    assert {key: recorded[key] for key in recorded if key in scalars} == pytest.approx(scalars) and set(recorded) == set(metrics)
    assert (recorded["views"], recorded["protocol"]) == (metrics["views"], metrics["protocol"])  # the per-view record
    assert metrics["steps"] == 12 and metrics["status"] == "completed"
    for key in ("val/psnr", "val/psnr_best", "val/ssim", "test/psnr", "test/ssim", "steps_per_s", "parameters"):
        assert key in metrics
    # Three callbacks write last.ckpt (each validation, every N steps, every 5 minutes): one file.
    assert {path.name for path in (run / "checkpoints").iterdir()} == {"best.ckpt", "last.ckpt"}

    logged = events(run)
    scalars = set(logged.Tags()["scalars"])
    assert {"train/loss", "train/psnr", "train/lr", "val/psnr", "val/ssim", "test/psnr", "test/ssim"} <= scalars
    # Validation every 6 steps and once more at the end, which here is step 12 itself.
    assert [event.step for event in logged.Scalars("val/psnr")] == [6, 12]
    assert logged.Scalars("val/psnr")[-1].value == pytest.approx(metrics["val/psnr"])
    assert {"val/view_0", "test/view_0", "test/view_1"} == set(logged.Tags()["images"])  # val_views=1, test_views=2

    # curve.csv: the same validations, as they happened, in a file any tool reads.
    with (run / "curve.csv").open() as file:
        curve = list(csv.DictReader(file))
    assert [int(row["step"]) for row in curve] == [6, 12]
    for row, event in zip(curve, logged.Scalars("val/psnr")):
        assert float(row["val_psnr"]) == pytest.approx(event.value, abs=1e-4)
    assert float(curve[-1]["val_ssim"]) == pytest.approx(metrics["val/ssim"], abs=1e-5)
    assert 0 < float(curve[0]["wall_s"]) < float(curve[1]["wall_s"]) <= metrics["wall_time_s"]


def test_validation_runs_at_the_last_step_even_off_the_interval(make_cfg):
    cfg = make_cfg("trainer.max_steps=8", "trainer.val_check_interval=5")
    train(cfg)
    assert [event.step for event in events(Path(cfg.paths.output_dir)).Scalars("val/psnr")] == [5, 8]


def test_learning_rate_decays_from_lr_to_lr_final(make_cfg):
    cfg = make_cfg("optim.lr=1e-3", "optim.lr_final=1e-4", "trainer.max_steps=10", "trainer.val_check_interval=10")
    train(cfg)
    rates = events(Path(cfg.paths.output_dir)).Scalars("train/lr")
    assert len(rates) >= 3
    # The rate used at step k is lr · (lr_final / lr)^(k / max_steps).
    for rate in rates:
        assert rate.value == pytest.approx(1e-3 * 0.1 ** (rate.step / 10), rel=1e-4)


class _KillAt(pl.Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, *args) -> None:
        if trainer.global_step == self.step:
            raise KeyboardInterrupt  # as if the machine went away


def test_a_killed_run_resumes_from_its_last_checkpoint_and_ends_as_if_never_stopped(make_cfg):
    steps = ("trainer.max_steps=16", "trainer.val_check_interval=100", "callbacks.last_checkpoint.every_n_train_steps=5")
    whole = make_cfg(*steps)
    train(whole)

    killed = make_cfg(*steps)
    with open_dict(killed):
        killed.callbacks.kill = {"_target_": "test_train._KillAt", "step": 12}
    with pytest.raises((KeyboardInterrupt, SystemExit)):
        train(killed)
    last = Path(killed.paths.output_dir) / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, weights_only=True)
    assert checkpoint["global_step"] == 10
    assert not (Path(killed.paths.output_dir) / "metrics.json").exists()

    resumed = make_cfg(*steps, f"ckpt_path={last}")
    metrics = train(resumed)
    assert metrics["steps"] == 16
    # The training time of steps 0-10 comes back from the checkpoint: steps/s cover all 16 steps.
    (clock_state,) = [v for k, v in checkpoint["callbacks"].items() if "TrainingClock" in k]
    assert 0 < clock_state["seconds"] < metrics["train_time_s"]
    # (train_time_s is rounded to 10 ms, a few % of these short runs; counting only the 6 steps
    # after the resume would be off by 2.7x.)
    assert metrics["steps_per_s"] == pytest.approx(16 / metrics["train_time_s"], rel=0.1)

    final_whole = torch.load(Path(whole.paths.output_dir) / "checkpoints" / "last.ckpt", weights_only=True)
    final_resumed = torch.load(Path(resumed.paths.output_dir) / "checkpoints" / "last.ckpt", weights_only=True)
    for key, value in final_whole["state_dict"].items():
        torch.testing.assert_close(final_resumed["state_dict"][key], value, msg=key)
    adam_whole = final_whole["optimizer_states"][0]["state"][0]
    adam_resumed = final_resumed["optimizer_states"][0]["state"][0]
    assert int(adam_resumed["step"]) == int(adam_whole["step"]) == 16
    assert final_resumed["lr_schedulers"][0]["_last_lr"] == pytest.approx(final_whole["lr_schedulers"][0]["_last_lr"])


def test_checkpoint_alone_rebuilds_the_model(make_cfg):
    cfg = make_cfg("model=original", "model.width=16", "sampling.n_c=8", "sampling.n_f=8", "trainer.max_steps=2")
    train(cfg)
    last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    trained = load_trained(last)
    module = trained.module
    assert module.renderer.fine_field is not None and module.renderer.sampler.n_fine == 8
    assert trained.run_config.model.width == 16 and module.renderer.coarse_field.trunk[0].out_features == 16
    stored = torch.load(last, weights_only=True)["state_dict"]
    for key, value in module.state_dict().items():
        torch.testing.assert_close(value, stored[key], msg=key)  # the trained weights, not fresh ones


def test_bf16_mixed_precision_trains(make_cfg):
    metrics = train(make_cfg("trainer.precision=bf16-mixed", "trainer.max_steps=4"))
    # Four steps: a finite score, not a quality bar (a blank image scores about 7 dB).
    assert metrics["precision"] == "bf16-mixed" and math.isfinite(metrics["val/psnr"]) and math.isfinite(metrics["train/loss"])


def test_metrics_are_float32_under_bf16_autocast(make_cfg):
    """SSIM convolves: under bf16 autocast it would be computed, wrongly, in bfloat16."""
    module = build_module(make_cfg()).eval()
    generator = torch.Generator().manual_seed(0)
    target = torch.rand(32, 32, 3, generator=generator)
    prediction = (target + 0.05 * torch.randn(32, 32, 3, generator=generator)).clamp(0, 1)
    module.render_view = lambda batch: RenderOutputs(prediction, torch.zeros(32, 32), torch.ones(32, 32))
    batch = ViewBatch(torch.zeros(32, 32, 3), torch.zeros(32, 32, 3), target, view=0)
    module.test_step(batch, 0)
    reference = module.test_ssim.compute().item()
    module.test_ssim.reset()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        module.test_step(batch, 0)
    assert module.test_ssim.compute().item() == pytest.approx(reference, abs=1e-6)


def test_the_test_score_is_that_of_the_best_checkpoint_the_report_renders(make_cfg):
    cfg = make_cfg()
    metrics = train(cfg)
    assert metrics["tested_checkpoint"] == "best.ckpt" and metrics["tested_step"] in (6, 12)
    trained = load_trained(Path(cfg.paths.output_dir) / "checkpoints" / "best.ckpt")
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.test(trained.module, datamodule=trained.datamodule(test_views=2), verbose=False)
    assert float(trainer.callback_metrics["test/psnr"]) == metrics["test/psnr"]


def test_the_check_before_a_run_hands_over_what_it_built_and_the_run_builds_nothing_again(make_cfg, monkeypatch):
    """One build of a run: the Hydra callback's check builds the data module and the
    LightningModule, and `train` trains those very objects (a sweep's job, unchecked, builds
    its own once)."""
    import nerf_lab.config.build as build
    import nerf_lab.train as train_command
    from nerf_lab.runs.hydra_callbacks import check_before_run

    builds = []
    real = build.build_run

    def counted(*args, **kwargs):
        builds.append(real(*args, **kwargs))
        return builds[-1]

    monkeypatch.setattr(build, "build_run", counted)
    monkeypatch.setattr(train_command, "build_run", counted)
    trained = []
    monkeypatch.setattr(pl.Trainer, "fit", lambda self, module, **kwargs: trained.append(module))
    cfg = make_cfg("trainer.max_steps=2", "test=false")
    prepared = check_before_run(cfg)
    with pytest.raises(Exception, match="trained 0 steps"):  # fit is stubbed out
        train(cfg)
    assert len(builds) == 1 and trained == [prepared.run.module]

    builds.clear()
    with pytest.raises(Exception, match="trained 0 steps"):
        train(make_cfg("trainer.max_steps=2", "test=false"))
    assert len(builds) == 1 and trained[-1] is builds[0].module
