"""The promise of the redesign (issue 13): a config whose meaning did not change trains to the
same numbers, bit for bit on the same CPU.

The reference values were produced by the code before the redesign (commit c0ef43b, the flat
package whose LightningModule built everything from the run config) with the fast test
config, in float32, by `python -m nerf_lab.train [experiment=tiny_lego] <FAST_OVERRIDES>`.
They are the same bits only where the CPU runs the same kernels: on a CPU whose PyTorch picks
another instruction set the last bits of a float32 sum may differ, and the test then allows a
relative 1e-4."""

from __future__ import annotations

import pytest
import torch
from conftest import requires_lego

from nerf_lab.train import train

# Recorded on an x86 CPU for which torch.backends.cpu.get_cpu_capability() is "AVX512".
RECORDED_ON = "AVX512"
REFERENCE = {
    "default": {
        "train/loss": 0.12215343117713928,
        "train/psnr": 9.130943298339844,
        "val/psnr": 9.386096000671387,
        "val/ssim": 0.3277873396873474,
        "test/psnr": 9.49557113647461,
        "test/ssim": 0.2197488248348236,
        "parameters": 58244,
    },
    "tiny_lego": {
        "train/loss": 0.07169654965400696,
        "train/psnr": 11.445016860961914,
        "val/psnr": 11.33866024017334,
        "val/ssim": 0.376922607421875,
        "test/psnr": 10.653287887573242,
        "test/ssim": 0.3637123703956604,
        "parameters": 55172,
    },
}


def assert_same_run(metrics: dict, reference: dict) -> None:
    same_kernels = torch.backends.cpu.get_cpu_capability() == RECORDED_ON
    for key, expected in reference.items():
        if same_kernels:
            assert metrics[key] == expected, (key, metrics[key], expected)
        else:
            assert metrics[key] == pytest.approx(expected, rel=1e-4), key


def test_the_default_run_trains_to_the_same_numbers_as_before_the_redesign(make_cfg):
    assert_same_run(train(make_cfg()), REFERENCE["default"])


@requires_lego
def test_tiny_lego_trains_to_the_same_numbers_as_before_the_redesign(make_cfg):
    from conftest import lego_dir

    metrics = train(make_cfg("experiment=tiny_lego", f"data.scene_dir={lego_dir()}"))
    assert_same_run(metrics, REFERENCE["tiny_lego"])
