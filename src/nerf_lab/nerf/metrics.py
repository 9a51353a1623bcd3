"""Peak signal-to-noise ratio, the study's measure of an image's quality, in one place (LPIPS,
a learned network's measure, is scored beside it in `nerf_lab.training.views`)."""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor


def psnr_from_mse(mse: Float[Tensor, "*batch"]) -> Float[Tensor, "*batch"]:
    """PSNR in dB of images with values in [0, 1]: −10 log10(MSE). E.g. MSE 0.01 → 20 dB."""
    return -10.0 * torch.log10(mse)


def image_psnr(prediction: Float[Tensor, "*shape"], target: Float[Tensor, "*shape"]) -> float:
    """PSNR in dB of one image against another (values in [0, 1]), in float32."""
    return float(psnr_from_mse(torch.mean((prediction.float() - target.float()) ** 2)))
