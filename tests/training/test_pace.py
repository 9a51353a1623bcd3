"""A run says what to expect: after its first steps, the measured seconds a step and the time
left to trainer.max_steps (progress bar and log); before training, one warning line when the
run's work at this device's measured rate passes an hour, naming the keys that bring it down."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
import pytorch_lightning as pl
import torch
from conftest import compose_config

from nerf_lab.training.callbacks import StepPace, format_duration


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FakeTrainer(pl.Trainer):
    """A Trainer's attributes that the callbacks read, set by hand (the class's properties shadowed)."""

    global_step = max_steps = val_check_interval = is_global_zero = sanity_checking = state = None
    callbacks = progress_bar_metrics = loggers = None

    def __init__(self, **attributes) -> None:
        self.__dict__.update(attributes)


MODULE = pl.LightningModule()


def _trainer(max_steps: int = 100, val_check_interval: int = 10) -> FakeTrainer:
    from pytorch_lightning.trainer.states import TrainerFn

    return FakeTrainer(
        global_step=0, max_steps=max_steps, val_check_interval=val_check_interval, is_global_zero=True, sanity_checking=False,
        state=SimpleNamespace(fn=TrainerFn.FITTING), callbacks=[], progress_bar_metrics={}, loggers=[],
    )


def _step(pace: StepPace, trainer, clock: Clock, seconds: float) -> None:
    clock.now += seconds
    trainer.global_step += 1
    pace.on_train_batch_end(trainer)


def test_the_pace_leaves_out_start_up_and_validation(caplog):
    clock, trainer = Clock(), _trainer()
    pace = StepPace(skip=1, measure=3, clock=clock)
    pace.on_train_start(trainer, MODULE)
    with caplog.at_level(logging.INFO, logger="nerf_lab"):
        _step(pace, trainer, clock, 60.0)  # step 1: start-up, not measured
        assert pace.seconds_per_step is None
        for _ in range(3):
            _step(pace, trainer, clock, 2.0)
    assert pace.seconds_per_step == 2.0 and trainer.global_step == 4
    # 96 steps left at 2 s; no validation measured yet
    assert pace.seconds_left(trainer) == 192.0
    assert [r.getMessage() for r in caplog.records] == [
        "pace: 2 s a step (3 steps measured, start-up excluded); 96 steps to trainer.max_steps=100: "
        "about 3 min 12 s, validations not yet measured"
    ]
    # A validation of 5 s between steps: not in the pace, counted in the time left.
    pace.on_validation_start(trainer, MODULE)
    clock.now += 5.0
    pace.on_validation_end(trainer, MODULE)
    _step(pace, trainer, clock, 2.0)
    assert pace.seconds_per_step == 2.0
    # 95 steps left at 2 s, and validations after steps 10, 20, …, 100: ten at 5 s
    assert pace.seconds_left(trainer) == 95 * 2.0 + 10 * 5.0


def test_the_pace_is_logged_after_measure_s_seconds_when_steps_are_slow(caplog):
    clock, trainer = Clock(), _trainer(max_steps=1000)
    pace = StepPace(skip=1, measure=3, measure_s=30.0, clock=clock)
    pace.on_train_start(trainer, MODULE)
    with caplog.at_level(logging.INFO, logger="nerf_lab"):
        _step(pace, trainer, clock, 300.0)
        _step(pace, trainer, clock, 80.0)
    assert len(caplog.records) == 1 and "80 s a step" in caplog.records[0].getMessage()
    assert "about 22 h 10 min" in caplog.records[0].getMessage()  # 998 steps × 80 s


@pytest.mark.parametrize(("seconds", "text"), [(4.25, "4.2 s"), (42.0, "42 s"), (425.0, "7 min 05 s"), (7380.0, "2 h 03 min")])
def test_durations_read_as_a_person_reads_them(seconds, text):
    assert format_duration(seconds) == text


def test_the_progress_bar_shows_the_pace():
    from nerf_lab.training.callbacks import StepProgressBar

    clock, trainer = Clock(), _trainer()
    pace = StepPace(skip=1, clock=clock)
    pace.on_train_start(trainer, MODULE)
    for seconds in (10.0, 0.5, 0.5):
        _step(pace, trainer, clock, seconds)
    trainer.callbacks = [pace]
    metrics = StepProgressBar().get_metrics(trainer, MODULE)
    assert metrics["s/step"] == "0.5" and metrics["left"] == "48 s"  # 97 steps × 0.5 s


# Tiny NeRF (L = 6, raw input): 317,952 FLOP a point in a training step (NeRFField.training_flops_per_point).
TINY_STEP_FLOP_PER_POINT = 317_952


def _tiny(tmp_path, *overrides: str):
    from nerf_lab.config.build import build_module

    cfg = compose_config(["model=tiny", "encoding.position.n_freqs=6", "sampling.n_c=64", "data.batch_rays=1024", "data.resolution=100", "data.val_views=2",
                          "trainer.max_steps=1000", "trainer.val_check_interval=100", *overrides], tmp_path)
    return cfg, build_module(cfg).renderer


def test_the_run_flops_are_the_fields_work(tmp_path):
    from nerf_lab.analysis.benchmarking import run_flops

    cfg, model = _tiny(tmp_path)
    flops = run_flops(cfg, model)
    assert flops["step"] == 1024 * 64 * TINY_STEP_FLOP_PER_POINT
    assert flops["validations"] == 10
    assert flops["validation"] == pytest.approx(2 * 100 * 100 * 64 * TINY_STEP_FLOP_PER_POINT / 3)


def test_a_run_beyond_an_hour_is_announced_naming_the_keys(tmp_path):
    from nerf_lab.analysis.benchmarking import long_run_warning

    cfg, model = _tiny(tmp_path)
    # 1000 steps of 2.08e10 FLOP and 10 validations of 1.36e11: 2.22e13 FLOP
    assert long_run_warning(cfg, model, torch.device("cpu"), torch.float32, rate=1e10) is None  # 37 min
    line = long_run_warning(cfg, model, torch.device("cpu"), torch.float32, rate=5e9)  # 74 min
    assert line is not None and "\n" not in line
    assert "at least 1.2 h" in line
    for key in ("data.batch_rays=1024", "data.resolution", "trainer.max_steps", "model.depth=4", "model.width=128"):
        assert key in line, line


def test_the_warning_measures_this_devices_rate(tmp_path):
    """With no rate given, the device's matrix-product rate is measured: a billion steps are
    beyond an hour on any device."""
    from nerf_lab.analysis.benchmarking import long_run_warning

    cfg, model = _tiny(tmp_path, "trainer.max_steps=1000000000")
    assert "GFLOP/s that is at least" in long_run_warning(cfg, model, torch.device("cpu"), torch.float32)
    few, model = _tiny(tmp_path, "trainer.max_steps=3")
    assert long_run_warning(few, model, torch.device("cpu"), torch.float32) is None


def test_measuring_the_devices_rate_draws_nothing_from_the_runs_random_stream(tmp_path):
    """A long run measures the device before its first step; its random draws after that
    (stratified samples, ray batches) must be those of a run that did not: the measurement
    leaves torch's global generator where it found it."""
    from nerf_lab.analysis.benchmarking import long_run_warning

    cfg, model = _tiny(tmp_path, "trainer.max_steps=1000000000")
    torch.manual_seed(7)
    expected = torch.rand(4)
    torch.manual_seed(7)
    assert long_run_warning(cfg, model, torch.device("cpu"), torch.float32) is not None  # it did measure
    torch.testing.assert_close(torch.rand(4), expected, rtol=0, atol=0)
