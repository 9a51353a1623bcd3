"""Bad values on the command line: one line naming the key and what it accepts, exit status 2,
no run folder. (Checkpoints: tests/runs/test_checkpoints.py; scenes: tests/data/test_scene_checks.py.)"""

from __future__ import annotations

import math

import pytest
import torch
from omegaconf import OmegaConf
from user_commands import one_line_error, run_command

from helpers import slow_after_first

from nerf_lab.errors import ConfigError
from nerf_lab.nerf.encoding import PositionalEncoding
from nerf_lab.nerf.encoding import MAX_FREQUENCY_BANDS
from nerf_lab.config.checks import check_values


@pytest.mark.parametrize(
    ("arguments", "message"),
    slow_after_first([
        (["optim.lr=inf"], "optim.lr=inf is not allowed: expected a finite number, a learning rate > 0"),
        (["data.far=inf"], "data.far=inf is not allowed: expected a finite number"),
        (["data.near=nan"], "data.near=nan is not allowed: expected a finite number"),
        (["encoding.position.n_freqs=200"], f"encoding.position.n_freqs=200 is not allowed: expected an integer in [0, {MAX_FREQUENCY_BANDS}]"),
        (["optim.optimizer.betas=[0.9,1.5]"], "optim.optimizer.betas=[0.9, 1.5] is not allowed: expected two numbers in [0, 1)"),
        (["optim.optimizer.eps=0"], "optim.optimizer.eps=0 is not allowed: expected a small number > 0"),
        (["seed=-1"], "seed=-1 is not allowed: expected an integer in [0, 2^32)"),
        (["data.camera_convention=colmap"], "data.camera_convention='colmap' is not allowed: expected opengl (Blender, nerfstudio, instant-ngp) or opencv (COLMAP)"),
        (["data.scene_transform={centre:[0,0],scale:1}"], "data.scene_transform={'centre': [0, 0], 'scale': 1} is not allowed: expected {centre: [x, y, z], scale: s > 0}"),
    ]),
)
def test_train_refuses_a_bad_value_with_one_line(tmp_path, cache_dir, arguments, message):
    result = run_command("nerf_lab.train", *arguments, "hydra.run.dir=run", cwd=tmp_path, cache=cache_dir)
    assert one_line_error(result).startswith(f"error: {message}")
    assert not (tmp_path / "run").exists()


# Values are checked before the checkpoint is read, so no checkpoint is needed here.
@pytest.mark.parametrize(
    ("module", "arguments", "message"),
    slow_after_first([
        # Values that would silently do something else if let through: views=-1 would score one
        # view fewer than the split has, resolution=0 would fall back to another width.
        ("nerf_lab.eval", ["views=-1"], "views=-1 is not allowed: expected a positive integer"),
        ("nerf_lab.eval", ["chunk=0"], "chunk=0 is not allowed: expected a positive integer (rays a chunk)"),
        ("nerf_lab.render", ["frames=0"], "frames=0 is not allowed: expected a positive integer (frames in the orbit)"),
        ("nerf_lab.render", ["resolution=0"], "resolution=0 is not allowed: expected a positive integer (image width"),
        ("nerf_lab.eval", [], "ckpt_path is not set: expected a checkpoint"),
        ("nerf_lab.eval", ["resolution=0"], "resolution=0 is not allowed: expected a positive integer (image width in pixels, up to the source"),
        ("nerf_lab.render", ["radius=-1"], "radius=-1 is not allowed: expected a distance > 0"),
    ]),
)
def test_eval_and_render_refuse_a_bad_value_with_one_line(tmp_path, cache_dir, module, arguments, message):
    ckpt = [] if not arguments else ["ckpt_path=/no/such.ckpt"]
    result = run_command(module, *ckpt, *arguments, "hydra.run.dir=out", cwd=tmp_path, cache=cache_dir)
    assert one_line_error(result).startswith(f"error: {message}")
    assert not (tmp_path / "out").exists()


def test_a_non_finite_number_is_refused_under_any_key():
    cfg = OmegaConf.create({"trainer": {"gradient_clip_val": 1.0, "schedule": [0.5, float("inf")]}, "seed": 0})
    with pytest.raises(ConfigError, match=r"^trainer.schedule\[1\]=inf is not allowed: expected a finite number$") as caught:
        check_values(cfg, [])
    assert caught.value.key == "trainer.schedule[1]"


def test_the_band_limit_is_where_float32_bands_stop_carrying_position():
    """sin(2^k p) in float32 against float64, for positions in a Blender scene's range: the top
    band allowed still follows the position (error well under that of unrelated values, ≈ 0.8);
    a few bands higher it is noise; far above, NaN (what encoding.n_freqs=200 gave)."""
    p = torch.linspace(-4, 4, 20001, dtype=torch.float64)[:, None]

    def band_error(n_freqs: int) -> float:
        # The top band as the encoding computes it (2^k·p, then sin, in float32); above the
        # limit, which the encoding now refuses, the same two operations by hand.
        if n_freqs <= MAX_FREQUENCY_BANDS:
            top32 = PositionalEncoding(n_freqs, include_input=False, in_dim=1)(p.float())[:, -2]
        else:
            top32 = torch.sin(p.float()[:, 0] * torch.tensor(2.0, dtype=torch.float32) ** (n_freqs - 1))
        return float((top32.double() - torch.sin(p[:, 0] * 2.0 ** (n_freqs - 1))).abs().mean())

    assert band_error(10) < 1e-4  # the paper's L = 10: exact to float32
    assert band_error(MAX_FREQUENCY_BANDS) < 0.3
    with pytest.raises(ValueError, match="n_freqs=25 is not allowed"):
        PositionalEncoding(MAX_FREQUENCY_BANDS + 1)
    assert band_error(MAX_FREQUENCY_BANDS + 4) > 0.6
    assert math.isnan(band_error(200))
