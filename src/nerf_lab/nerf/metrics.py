"""Image quality measures in one place: PSNR, the study's measure, and LPIPS where its network's
weights are on the machine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor


def psnr_from_mse(mse: Float[Tensor, "*batch"]) -> Float[Tensor, "*batch"]:
    """PSNR in dB of images with values in [0, 1]: −10 log10(MSE). E.g. MSE 0.01 → 20 dB."""
    return -10.0 * torch.log10(mse)


def image_psnr(prediction: Float[Tensor, "*shape"], target: Float[Tensor, "*shape"]) -> float:
    """PSNR in dB of one image against another (values in [0, 1]), in float32."""
    return float(psnr_from_mse(torch.mean((prediction.float() - target.float()) ** 2)))


# The VGG16 ImageNet weights torchvision loads for torchmetrics' LPIPS(net_type="vgg") (its
# VGG16_Weights.IMAGENET1K_V1), as torch's hub cache names them. LPIPS's own linear layers
# ship inside torchmetrics.
LPIPS_VGG_WEIGHTS = "vgg16-397923af.pth"
LPIPS_NETWORK = "vgg"  # as the paper reports it (Mildenhall et al. 2020, Table 1)


def lpips_weights_path() -> Path:
    """Where torch's hub cache keeps the VGG16 weights: `$TORCH_HOME/hub/checkpoints/` (by
    default `~/.cache/torch/hub/checkpoints/`)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / LPIPS_VGG_WEIGHTS


def perceptual_metric(device: torch.device) -> tuple[Any | None, str]:
    """torchmetrics' `LearnedPerceptualImagePatchSimilarity(net_type="vgg", normalize=True)`
    (images in [0, 1]; lower is closer) on `device`, and "" — or None and the one line that
    says why it is unavailable and how to provide it.

    Built only from weights already on this machine: never with random weights, and never by
    downloading during a run (torchvision would fetch the VGG16 weights when they are missing,
    so they are looked for first). Needs torchvision (the `lpips` extra).
    """
    try:
        import torchvision  # noqa: F401  (torchmetrics builds the VGG16 through it)
    except Exception as error:  # absent, or a build that does not match this torch
        reason = type(error).__name__ if isinstance(error, ImportError) else f"{type(error).__name__}: {error}"
        return None, (
            f"LPIPS unavailable: torchvision cannot be imported ({reason}); install the build matching torch "
            f"{torch.__version__} (the lpips extra; with a CPU torch: pip install torchvision --index-url "
            "https://download.pytorch.org/whl/cpu)"
        )
    path = lpips_weights_path()
    if not path.is_file():
        return None, (
            f"LPIPS unavailable: the VGG16 weights are not at {path}; put {LPIPS_VGG_WEIGHTS} there once "
            "(python -c \"import torchvision; torchvision.models.vgg16(weights='IMAGENET1K_V1')\" downloads it), "
            "or point TORCH_HOME at a folder whose hub/checkpoints/ holds it"
        )
    from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

    return LearnedPerceptualImagePatchSimilarity(net_type=LPIPS_NETWORK, normalize=True).to(device), ""
