"""The time arithmetic of a GPU run (benchmarks/gpu_run.py): how many training steps a run can
afford in the seconds a part has left, from what the bench measured, never from a guess.

A run's wall time is start-up + compilation + training + validations + test (+ a margin):

    train_s   = min(cap, available − startup − compile − validation − test − margin)
    max_steps = ⌊train_s · steps_per_s⌋    (so the learning-rate schedule decays over the run)

with validation = (validations + 1) · val_views · s_per_view (Lightning validates every
`max_steps // validations` steps and `ValidateOnLastStep` once more at the end), test =
test_views · s_per_view, and margin = max(margin_min_s, margin_fraction · available). The
figures come from a `nerf_lab.bench` JSON (steps/s, seconds to render a whole view) and the
bench's own wall time, which gives the start-up (process, imports, data, first steps) and, set
against an eager bench, the compilation. `trainer.max_time` is set too, as a guard should the
run go slower than measured: training stops then with time left for the test.

E.g. the H200 of 2026-11-29: eager 29.10 steps/s, 1.804 s a view, bench wall 23 s over 40
steps → start-up 23 − 30/29.10 − 1.804 ≈ 20.2 s. A white-minimum arm given 165 s, one val view
six times (+1), five test views, margin 15 s: train_s = 165 − 20.2 − 12.6 − 9.0 − 16.5 ≈ 106.7
s → 3104 steps, validating every 517.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class Measured:
    """What a bench measured for one path: `steps_per_s` (training, after warm-up),
    `s_per_view` (rendering one whole view), `startup_s` (process start to steady training,
    warm-up steps included) and `compile_s` (extra seconds compilation costs; 0 eager)."""

    steps_per_s: float
    s_per_view: float
    startup_s: float
    compile_s: float = 0.0

    @classmethod
    def from_bench(cls, bench_json: Path, wall_s: float, eager_startup_s: float | None = None) -> Measured:
        """From a `nerf_lab.bench` JSON and the bench command's wall time in seconds: the
        start-up is the wall time less the timed steps and the rendered view; for a compiled
        bench, the compilation is its start-up less the eager one's (`eager_startup_s`).
        Raises ValueError on a JSON without a positive speed."""
        bench = json.loads(Path(bench_json).read_text())
        speed, view = float(bench["train_steps_per_s"]), float(bench["render_s_per_view"])
        if not speed > 0 or not view >= 0:
            raise ValueError(f"{bench_json}: expected train_steps_per_s > 0 and render_s_per_view >= 0")
        startup = max(0.0, wall_s - bench["timed_steps"] / speed - view)
        if eager_startup_s is None or not bench.get("compile"):
            return cls(speed, view, startup)
        return cls(speed, view, min(startup, eager_startup_s), max(0.0, startup - eager_startup_s))


@dataclass(frozen=True)
class RunBudget:
    """A training run's plan, in seconds and steps; `limit_s` is the run's kill limit."""

    available_s: float
    startup_s: float
    compile_s: float
    validation_s: float
    test_s: float
    margin_s: float
    train_s: float
    steps_per_s: float
    max_steps: int
    val_check_interval: int
    max_time_s: int
    limit_s: int

    @property
    def max_time(self) -> str:
        """`trainer.max_time` as Lightning reads it, DD:HH:MM:SS."""
        minutes, seconds = divmod(self.max_time_s, 60)
        hours, minutes = divmod(minutes, 60)
        return f"00:{hours:02d}:{minutes:02d}:{seconds:02d}"

    def overrides(self) -> list[str]:
        """The run's `trainer.*` overrides."""
        return [
            f"trainer.max_steps={self.max_steps}",
            f"trainer.val_check_interval={self.val_check_interval}",
            f"trainer.max_time={self.max_time}",
        ]

    def write(self, path: Path) -> None:
        Path(path).write_text(json.dumps({**asdict(self), "max_time": self.max_time}, indent=2) + "\n")


def plan_run(
    available_s: float,
    measured: Measured,
    val_views: int,
    test_views: int,
    validations: int = 6,
    train_cap_s: float | None = None,
    margin_fraction: float = 0.1,
    margin_min_s: float = 5.0,
    max_val_interval: int | None = None,
) -> RunBudget | None:
    """The run that fits `available_s` seconds (see the module's docstring), training at most
    `train_cap_s`; None when it leaves no training step. Validation every
    `max(1, max_steps // validations)` steps: at most `validations` + 1 validations, as
    budgeted. With `max_val_interval` (a rehearsal that must validate often), at most that
    many steps apart: when that gives more validations, their time V = (t · r / c + 1) · v · s
    (t training seconds, r steps/s, c the interval, v views, s seconds a view) is taken from
    the training time too: t = (A − v · s) / (1 + r · v · s / c), A what the rest leaves."""
    view_s = val_views * measured.s_per_view  # one validation
    test_s = test_views * measured.s_per_view
    margin_s = max(margin_min_s, margin_fraction * available_s)
    rest_s = available_s - measured.startup_s - measured.compile_s - test_s - margin_s
    validation_s = (validations + 1) * view_s
    train_s = rest_s - validation_s
    if train_cap_s is not None:
        train_s = min(train_s, train_cap_s)
    if max_val_interval and train_s * measured.steps_per_s / validations > max_val_interval:
        frequent_s = (rest_s - view_s) / (1 + measured.steps_per_s * view_s / max_val_interval)
        train_s = min(train_s, frequent_s)
        validation_s = (train_s * measured.steps_per_s / max_val_interval + 1) * view_s
    max_steps = math.floor(train_s * measured.steps_per_s) if train_s > 0 else 0
    if max_steps < 1:
        return None
    # Lightning's clock starts with training (compilation and validations inside it); the test
    # and half the margin stay outside, so a slow run still tests before the kill.
    max_time_s = math.floor(available_s - measured.startup_s - test_s - margin_s / 2)
    return RunBudget(
        available_s=round(available_s, 2),
        startup_s=round(measured.startup_s, 2),
        compile_s=round(measured.compile_s, 2),
        validation_s=round(validation_s, 2),
        test_s=round(test_s, 2),
        margin_s=round(margin_s, 2),
        train_s=round(train_s, 2),
        steps_per_s=measured.steps_per_s,
        max_steps=max_steps,
        val_check_interval=max(1, min(max_steps // validations, max_val_interval or max_steps)),
        max_time_s=max_time_s,
        limit_s=math.floor(available_s),
    )


def best_plan(available_s: float, paths: dict[str, Measured | None], *args, **kwargs) -> tuple[str, RunBudget] | None:
    """Of the measured `paths` (e.g. eager and compiled; None: not measured), the one whose
    `plan_run(available_s, …)` trains the most steps, with its plan; None when none fits.
    Compiling thus pays only when its faster steps make up for the compilation's seconds."""
    plans = [(name, plan_run(available_s, measured, *args, **kwargs)) for name, measured in paths.items() if measured]
    fitting = [(name, plan) for name, plan in plans if plan is not None]
    return max(fitting, key=lambda item: item[1].max_steps) if fitting else None
