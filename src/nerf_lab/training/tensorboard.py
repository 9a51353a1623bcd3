"""What a run writes for TensorBoard beyond its curves: the HPARAMS entry, the Custom Scalars
layout, and a logger without Lightning's `epoch` tag.

HPARAMS: each run declares the experiment (`hparams_config`: the knobs below and the metric
columns) and its own values (`hparams`), with TensorBoard's hparams plugin, at the start, so a
running or failed job is in the table too. The metric columns are tags the run writes anyway
(`val/psnr_best` only rises, so its last point is the best), plus three figures written once
at the end (`train/steps_per_s`, `train/time_s`, `train/parameters`); no scalar is copied.
TensorBoard takes the experiment from whichever run it reads first, so every job of a sweep
writes the same one: the keys the sweep varies lead the list (marked `differs`, which the
HPARAMS tab shows first, five columns ticked) and name the trial (`depth=2 n_c=16 (07-31-02/0)`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import TensorBoardLogger
from tensorboard.plugins.hparams import api_pb2, plugin_data_pb2
from tensorboard.plugins.hparams import summary_v2 as hp

# The study's knobs, as config keys; a key the run's config lacks is left out.
STUDY_KEYS: tuple[str, ...] = (
    "model.depth",
    "model.width",
    "model.skips",
    "model.view_dependent",
    "encoding.position.n_freqs",
    "encoding.position.include_input",
    "encoding.direction.n_freqs",
    "encoding.direction.include_input",
    "encoding.direction.degree",
    "sampling.n_c",
    "sampling.n_f",
    "sampling.perturb",
    "optim.lr",
    "optim.lr_final",
    "trainer.max_steps",
    "data.batch_rays",
    "data.resolution",
    "seed",
)
# Config groups whose choice (`model=tiny`) is a knob of its own.
CHOICE_GROUPS = ("experiment", "model", "encoding", "encoding/direction", "sampling", "optim", "data", "trainer")
# Overrides that say where things are, not what the experiment is.
NOT_KNOBS = ("paths.", "data.scene_dir", "data.cache_dir", "ckpt_path", "hydra.", "trainer.enable_progress_bar")
# (tag, column title): the columns of the HPARAMS table, in order; the tab ticks the first five.
METRICS = (
    ("test/psnr", "test PSNR (dB)"),
    ("test/ssim", "test SSIM"),
    ("val/psnr_best", "best val PSNR (dB)"),
    ("train/steps_per_s", "steps/s"),
    ("train/time_s", "train time (s)"),
    ("train/parameters", "parameters"),
)
# metrics.json key → the scalar tag its value is written under at the end of a run.
RUN_FIGURES = {"steps_per_s": "train/steps_per_s", "train_time_s": "train/time_s", "parameters": "train/parameters"}


class RunLogger(TensorBoardLogger):
    """Lightning's TensorBoard logger without the `epoch` scalar it adds to every write (a NeRF
    run is one epoch of random rays: a flat line at 0 that Time Series would open on)."""

    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        super().log_metrics({key: value for key, value in metrics.items() if key != "epoch"}, step)


def _knob(value: Any) -> bool | int | float | str:
    """A config value as HPARAMS shows it: booleans stay booleans, lists become `[4]`."""
    if isinstance(value, (bool, int, float, str)):
        return value
    if value is None:
        return "none"
    return str(OmegaConf.to_container(value) if OmegaConf.is_config(value) else value)


def _key_of(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def _is_knob(override: str) -> bool:
    return not _key_of(override).startswith(NOT_KNOBS)


def run_knobs(cfg: DictConfig, choices: dict[str, Any], overrides: list[str], precision: str) -> dict[str, Any]:
    """The run's HPARAMS entry: group choices, the command line, the study's keys, precision."""
    knobs: dict[str, Any] = {group: _knob(choices[group]) for group in CHOICE_GROUPS if group in choices}
    knobs["overrides"] = " ".join(o for o in overrides if _is_knob(o)) or "none"
    for name in STUDY_KEYS:
        value = OmegaConf.select(cfg, name, default=None)
        if value is not None:
            knobs[name] = _knob(value)
    if OmegaConf.select(cfg, "data.scene_dir", default=None):
        knobs["data.scene"] = Path(str(cfg.data.scene_dir)).name
    knobs["trainer.precision"] = precision  # what the run used (auto resolved)
    return knobs


def swept_keys(sweep_overrides: list[str]) -> list[str]:
    """The keys a multirun's command line sweeps (`model.depth=2,4` → `model.depth`)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides([o for o in sweep_overrides if _is_knob(o)])
    return [override.key_or_group for override in parsed if override.is_sweep_override()]


def trial_name(varied: list[str], overrides: list[str], where: str) -> str:
    """`depth=2 n_c=16 (07-31-02/0)`: the job's values of what varies, by the keys' last part
    (HPARAMS cuts the trial column at about 15 characters), then where the run is, which also
    keeps two sweeps' jobs apart."""
    values = [o.split("=", 1) for o in overrides if _key_of(o) in varied]
    short = [key.rsplit(".", 1)[-1] for key, _ in values]
    if len(set(short)) < len(short):  # two keys end alike: keep them whole
        short = [key for key, _ in values]
    named = " ".join(f"{key}={value}" for key, (_, value) in zip(short, values))
    return f"{named or 'defaults'} ({where})"


def _hydra_context(cfg: DictConfig) -> tuple[dict[str, Any], list[str], list[str], str]:
    """(group choices, overrides, varied keys, where) from Hydra's record of the job; without
    Hydra (train() called directly), none of them and the run folder's name."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return {}, [], [], Path(str(cfg.paths.output_dir)).name
    hydra_cfg = HydraConfig.get()
    choices = dict(hydra_cfg.runtime.choices)
    overrides = list(hydra_cfg.overrides.task)
    multirun = hydra_cfg.mode is not None and hydra_cfg.mode.name == "MULTIRUN"
    # (hydra.sweep.dir read only in a sweep: reading a default one claims a folder for it.)
    sweep_file = Path(hydra_cfg.sweep.dir) / "multirun.yaml" if multirun else None
    if sweep_file is not None and sweep_file.is_file():
        varied = swept_keys(list(OmegaConf.load(sweep_file).hydra.overrides.task))
        where = f"{Path(hydra_cfg.sweep.dir).name}/{hydra_cfg.job.num}"
    else:
        varied = [_key_of(o) for o in overrides if _is_knob(o)]
        output_dir = Path(hydra_cfg.runtime.output_dir)
        where = f"{output_dir.parent.name}/{output_dir.name}"
    return choices, overrides, varied, where


def hparams_summaries(knobs: dict[str, Any], varied: list[str], trial: str) -> list[Any]:
    """The experiment's declaration and the run's values, as summary protos."""
    order = sorted(knobs, key=lambda name: name not in varied)  # stable: varied first
    params = [hp.HParam(name, hp.Discrete([False, True]) if isinstance(knobs[name], bool) else None) for name in order]
    config = hp.hparams_config_pb(params, [hp.Metric(tag, display_name=title) for tag, title in METRICS])
    # The API leaves `differs` and the type of a domain-less value unset; both steer the tab
    # (what it shows first; number axes in parallel coordinates).
    value = config.value[0]
    data = plugin_data_pb2.HParamsPluginData.FromString(value.metadata.plugin_data.content)
    for info in data.experiment.hparam_infos:
        info.differs = info.name in varied
        if not info.HasField("domain_discrete"):
            is_number = isinstance(knobs[info.name], (int, float))
            info.type = api_pb2.DATA_TYPE_FLOAT64 if is_number else api_pb2.DATA_TYPE_STRING
    value.metadata.plugin_data.content = data.SerializeToString()
    return [config, hp.hparams_pb(knobs, trial_id=trial, start_time_secs=time.time())]


def custom_scalars_layout() -> dict[str, Any]:
    """Custom Scalars tab: training and validation PSNR on one chart; the loss and the rate.
    (The tags are regular expressions: anchored, `val/psnr` leaves out `val/psnr_best`.)"""
    return {
        "NeRF": {
            "PSNR (dB): train/psnr and val/psnr": ["Multiline", ["^train/psnr$", "^val/psnr$"]],
            "train/loss": ["Multiline", ["^train/loss$"]],
            "train/lr": ["Multiline", ["^train/lr$"]],
        }
    }


def describe_run(logger: Any, cfg: DictConfig, precision: str) -> dict[str, Any]:
    """Write the run's HPARAMS entry and the Custom Scalars layout; return the knobs."""
    if not isinstance(logger, TensorBoardLogger):
        return {}
    choices, overrides, varied, where = _hydra_context(cfg)
    knobs = run_knobs(cfg, choices, overrides, precision)
    varied = [key for key in varied if key in knobs]
    writer = logger.experiment
    # On data-parallel ranks other than 0 the writer is a stand-in whose methods return None.
    file_writer = writer._get_file_writer()
    if file_writer is not None:
        for summary in hparams_summaries(knobs, varied, trial_name(varied, overrides, where)):
            file_writer.add_summary(summary)
        writer.add_custom_scalars(custom_scalars_layout())
        writer.flush()
    return knobs


def log_run_figures(logger: Any, metrics: dict[str, Any], step: int) -> None:
    """Steps/s, training seconds and parameters, once, at the last step: HPARAMS columns."""
    if isinstance(logger, TensorBoardLogger):
        logger.log_metrics({tag: float(metrics[key]) for key, tag in RUN_FIGURES.items() if key in metrics}, step=step)
        logger.finalize("success")
