"""The per-view record of a test: what a training run's test and `nerf_lab.eval` both write.

`metrics.json` gets `views` (one entry a view: `view`, its index in the test split; `name`, the
split's image, `r_0`; `psnr`; `ssim`; `lpips` where available) and `protocol` (how they were
measured: background, resolution, number of views, the PSNR and SSIM definitions, the LPIPS
network or why it is unavailable); `test_views.csv` beside it holds the same rows.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import torch
from torchmetrics.functional.image import structural_similarity_index_measure
from torchmetrics.image import StructuralSimilarityIndexMeasure

from nerf_lab.files import written_atomically

VIEWS_CSV = "test_views.csv"

PSNR_DEFINITION = (
    "per view, -10 log10(MSE) over the view's pixels (those that count, in a view with a mask) and RGB channels, "
    "the prediction clamped to [0, 1], in float32; the split's PSNR is the mean of the views'"
)


def counted_pixels(image: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """(1, 3, H, W) → (1, 3, N, 1): the N pixels where `mask` ((H, W) bool) is True, as an
    image batch, so that torchmetrics' per-image PSNR is the PSNR of those pixels alone;
    `image` itself when `mask` is None."""
    return image if mask is None else image[..., mask][..., None]


def filled_outside(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """The prediction with the pixels that do not count set to the target's, for scores that
    need a whole image (LPIPS): those pixels then differ by nothing."""
    return prediction if mask is None else torch.where(mask, prediction, target)


class MaskedSSIM(StructuralSimilarityIndexMeasure):
    """torchmetrics' SSIM (Wang et al. 2004, eq. 13; a Gaussian window) of whole views, or,
    given `mask` ((H, W) bool) for a view of a batch of one, the mean of that view's per-pixel
    SSIM map over the pixels where `mask` is True (each pixel's window still reads its masked
    neighbours, which a mask leaves in the image)."""

    def update(self, preds: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        if mask is None:
            super().update(preds, target)
            return
        if preds.shape[0] != 1:
            raise ValueError(f"a mask scores one view at a time, got a batch of {preds.shape[0]}")
        _, image = structural_similarity_index_measure(
            preds, target, gaussian_kernel=self.gaussian_kernel, sigma=self.sigma, kernel_size=self.kernel_size,
            data_range=self.data_range, k1=self.k1, k2=self.k2, return_full_image=True,
        )
        self.similarity += image[..., mask].mean()
        self.total += 1


def ssim_protocol(ssim: Any) -> dict[str, Any]:
    """The settings of a torchmetrics `StructuralSimilarityIndexMeasure`, as it was run."""
    return {
        "implementation": "torchmetrics StructuralSimilarityIndexMeasure, float32",
        "window": "gaussian" if ssim.gaussian_kernel else "uniform",
        "window_size_px": int(ssim.kernel_size[0] if isinstance(ssim.kernel_size, (list, tuple)) else ssim.kernel_size),
        "sigma_px": float(ssim.sigma[0] if isinstance(ssim.sigma, (list, tuple)) else ssim.sigma),
        "k1": float(ssim.k1),
        "k2": float(ssim.k2),
        "data_range": float(ssim.data_range),
        "variant": "RGB channels averaged; the mean over every pixel's window, the image reflect-padded at its borders; "
                   "in a view with a mask, over the pixels that count",
    }


def test_protocol(
    background: list[float], width: int, height: int, views: int, ssim: Any, lpips: str | None, masked_views: int = 0
) -> dict[str, Any]:
    """The evaluation protocol of a test. `lpips`: the network used (e.g. "vgg"), or the line
    saying why LPIPS is unavailable (starting "LPIPS unavailable"); `masked_views`: how many
    views were scored over the pixels their mask keeps (`mask_path`). The resolution is the
    last view's (a split of several heights scores each view at its own)."""
    available = lpips is not None and not lpips.startswith("LPIPS unavailable")
    return {
        "background": [float(c) for c in background],
        "resolution": [int(width), int(height)],
        "views": int(views),
        "masked_views": int(masked_views),
        "psnr": PSNR_DEFINITION,
        "ssim": ssim_protocol(ssim),
        "lpips": {"network": lpips, "inputs": "[0, 1], normalised to [-1, 1]"} if available else {"unavailable": lpips},
    }


def views_csv(views: list[dict[str, Any]]) -> str:
    """The rows of `test_views.csv`: view, name, psnr, ssim, and lpips when the views have it."""
    columns = ["view", "name", "psnr", "ssim"] + (["lpips"] if views and all("lpips" in v for v in views) else [])
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for view in views:
        writer.writerow([view.get(column, "") for column in columns])
    return out.getvalue()


def record_test_views(folder: Path, views: list[dict[str, Any]], protocol: dict[str, Any]) -> dict[str, Any]:
    """Write `test_views.csv` into `folder` (whole or not at all) and return the entries for
    `metrics.json`: {"views": views, "protocol": protocol}."""
    with written_atomically(Path(folder) / VIEWS_CSV) as partial:
        partial.write_text(views_csv(views))
    return {"views": views, "protocol": protocol}


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
