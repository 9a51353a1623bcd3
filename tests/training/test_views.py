"""The per-view record of a test and its protocol (`nerf_lab.training.views`), against hand
computations; LPIPS only from weights already on the machine."""

import csv
import sys
import types

import pytest
import torch

from helpers import renderer
from nerf_lab.data.batches import ViewBatch
from nerf_lab.nerf.encoding import PositionalEncoding
from nerf_lab.nerf.field import NeRFField
from nerf_lab.nerf.marching import RenderOutputs
from nerf_lab.training.views import LPIPS_VGG_WEIGHTS, perceptual_metric
from nerf_lab.training.views import VIEWS_CSV, record_test_views
from nerf_lab.training.module import NeRFLitModule


def tiny_module() -> NeRFLitModule:
    field = NeRFField(PositionalEncoding(2), PositionalEncoding(1), depth=1, width=8, skips=(), view_dependent=False)
    return NeRFLitModule(
        renderer(field, None, 4, 0, 2.0, 6.0), lambda p: torch.optim.Adam(p), lambda o, n: torch.optim.lr_scheduler.LambdaLR(o, lambda s: 1.0)
    )


def test_a_test_records_each_views_psnr_and_ssim_and_how_they_were_measured(tmp_path, monkeypatch):
    """Two 16 × 16 grey views (0.5) rendered as flat 0.6 and 0.51: MSE 0.01 and 1e-4, so PSNR
    20 and 40 dB, and the split's 30 dB (the mean of the views'). Flat images have no variance,
    so SSIM is its luminance term alone, (2 μx μy + C1) / (μx² + μy² + C1) with C1 = 0.01²:
    0.6001 / 0.6101 = 0.98361 and 0.5101 / 0.5102 = 0.99980."""
    module = tiny_module()
    rendered = iter([0.6, 0.51])
    monkeypatch.setattr(
        module, "render_view",
        lambda batch: RenderOutputs(torch.full((16, 16, 3), next(rendered)), torch.zeros(16, 16), torch.ones(16, 16)),
    )
    module.on_test_epoch_start()
    for view in (3, 7):
        module.test_step(ViewBatch(torch.zeros(16, 16, 3), torch.zeros(16, 16, 3), torch.full((16, 16, 3), 0.5), view), 0)

    def ssim_flat(x: float, y: float) -> float:
        c1 = 0.01**2
        return (2 * x * y + c1) / (x * x + y * y + c1)

    views = module.test_views
    assert [v["view"] for v in views] == [3, 7]
    assert [v["psnr"] for v in views] == pytest.approx([20.0, 40.0], abs=1e-4)
    # To 2e-4: torchmetrics forms the variances as E[x²] − μ² in float32, which for flat images
    # leaves ~1e-7 of rounding, against C2 = 0.03² = 9e-4 in the contrast term.
    assert [v["ssim"] for v in views] == pytest.approx([ssim_flat(0.6, 0.5), ssim_flat(0.51, 0.5)], abs=2e-4)
    assert float(module.test_psnr.compute()) == pytest.approx(30.0, abs=1e-4)
    assert all("lpips" not in v for v in views)  # no torchvision or VGG16 weights on this machine

    protocol = module.test_protocol
    assert protocol["background"] == [1.0, 1.0, 1.0] and protocol["resolution"] == [16, 16] and protocol["views"] == 2
    assert protocol["ssim"]["window"] == "gaussian" and protocol["ssim"]["window_size_px"] == 11
    assert protocol["ssim"]["sigma_px"] == 1.5 and (protocol["ssim"]["k1"], protocol["ssim"]["k2"]) == (0.01, 0.03)
    assert protocol["lpips"]["unavailable"].startswith("LPIPS unavailable: ")

    entries = record_test_views(tmp_path, views, protocol)
    assert entries == {"views": views, "protocol": protocol}
    rows = list(csv.DictReader((tmp_path / VIEWS_CSV).open()))
    assert [row["view"] for row in rows] == ["3", "7"] and list(rows[0]) == ["view", "name", "psnr", "ssim"]
    assert float(rows[0]["psnr"]) == pytest.approx(20.0, abs=1e-4)


def test_lpips_is_unavailable_without_torchvision_and_says_how_to_provide_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchvision", None)  # import torchvision raises ImportError
    metric, reason = perceptual_metric(torch.device("cpu"))
    assert metric is None
    assert reason.startswith("LPIPS unavailable: torchvision cannot be imported") and "\n" not in reason
    assert "torchvision" in reason.split(";", 1)[1]  # and how to install it


def test_lpips_is_unavailable_without_the_vgg_weights_and_downloads_nothing(monkeypatch, tmp_path):
    """With torchvision importable but no VGG16 weights under TORCH_HOME, LPIPS is reported
    unavailable, naming where the weights go; nothing is fetched into the cache."""
    monkeypatch.setitem(sys.modules, "torchvision", types.ModuleType("torchvision"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    metric, reason = perceptual_metric(torch.device("cpu"))
    assert metric is None
    assert str(tmp_path / "hub" / "checkpoints" / LPIPS_VGG_WEIGHTS) in reason and "TORCH_HOME" in reason
    assert list(tmp_path.rglob("*")) == []
