"""The small field of instant-ngp (Müller et al. 2022, section 5.4): a grid encoding read by two
tiny MLPs, one for density and geometry features, one for colour."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn

from nerf_lab.nerf.parameters import is_int, require

NGP_DENSITY_ACTIVATIONS = ("trunc_exp", "softplus")


class _TruncatedExp(torch.autograd.Function):
    """exp(x) forward, exp(min(x, 15)) as its derivative: the density activation of instant-ngp
    (and nerfacc, torch-ngp), whose gradient cannot overflow where a sample's raw density is
    large."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        ctx.save_for_backward(x)
        return torch.exp(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        (x,) = ctx.saved_tensors
        return grad * torch.exp(x.clamp(max=15.0))


def trunc_exp(x: Float[Tensor, "*batch"]) -> Float[Tensor, "*batch"]:
    """exp(x), with the gradient of exp(min(x, 15)) (`_TruncatedExp`)."""
    return _TruncatedExp.apply(x)


class NGPField(nn.Module):
    """F : (enc(x), enc(d)) → (c, σ), the network of instant-ngp's NeRF (paper section 5.4):

        density MLP:  enc(x) → `width` (ReLU) → 1 + `n_geometry_features`
                      σ = act(out₀) (trunc_exp: exp with a bounded gradient; or softplus)
        colour MLP:   [out₁…, enc(d)] → `width` (ReLU) → `width` (ReLU) → 3, sigmoid

    The paper: `width` 64, 15 geometry features (16 outputs), the hash grid for x and spherical
    harmonics of degree 4 for d; here any position and direction encoding with an `out_dim`
    works (the layer widths follow it). Without its `density_bias` shift a fresh field, whose
    table is ~0, starts at σ ≈ exp(0) = 1 everywhere: `density_bias` = −1 starts it at about
    e⁻¹ ≈ 0.37 (nerfacc's instant-ngp example uses the same shift).

    Raises `ParameterError` naming `direction_encoding`, `position_encoding`, `width`,
    `n_geometry_features` or `density_activation` for a value that does not fit.
    """

    def __init__(
        self,
        position_encoding: nn.Module,
        direction_encoding: nn.Module | None,
        width: int = 64,
        n_geometry_features: int = 15,
        density_activation: str = "trunc_exp",
        density_bias: float = -1.0,
    ) -> None:
        super().__init__()
        require(is_int(width) and width >= 2, "width", width, "an integer >= 2 (units a hidden layer)")
        require(
            is_int(n_geometry_features) and n_geometry_features >= 1, "n_geometry_features", n_geometry_features,
            "an integer >= 1 (density outputs passed to the colour MLP)",
        )
        require(
            density_activation in NGP_DENSITY_ACTIVATIONS, "density_activation", density_activation,
            f"one of {', '.join(NGP_DENSITY_ACTIVATIONS)}",
        )
        require(
            getattr(position_encoding, "in_dim", 3) == 3 and hasattr(position_encoding, "out_dim"),
            "position_encoding", type(position_encoding).__name__, "an encoding of 3-D positions with an out_dim",
        )
        require(
            direction_encoding is not None and getattr(direction_encoding, "in_dim", 3) == 3, "direction_encoding",
            direction_encoding, "an encoding of view directions (the colour MLP of model=ngp reads one)",
        )
        assert direction_encoding is not None
        self.position_encoding, self.direction_encoding = position_encoding, direction_encoding
        self.density_activation, self.density_bias = density_activation, float(density_bias)
        self.width = width
        self.density_mlp = nn.Sequential(
            nn.Linear(position_encoding.out_dim, width), nn.ReLU(), nn.Linear(width, 1 + n_geometry_features)
        )
        self.color_mlp = nn.Sequential(
            nn.Linear(n_geometry_features + direction_encoding.out_dim, width), nn.ReLU(),
            nn.Linear(width, width), nn.ReLU(),
            nn.Linear(width, 3),
        )

    def _density(self, raw: Float[Tensor, "*batch"]) -> Float[Tensor, "*batch"]:
        raw = raw.float() + self.density_bias
        return trunc_exp(raw) if self.density_activation == "trunc_exp" else F.softplus(raw)

    def forward(
        self,
        positions: Float[Tensor, "*batch 3"],
        directions: Float[Tensor, "*#batch 3"] | None = None,
    ) -> tuple[Float[Tensor, "*batch 3"], Float[Tensor, "*batch"]]:
        """Colour in [0, 1] and density ≥ 0 at `positions`; `directions` (unit) may broadcast
        against them."""
        if directions is None:
            raise ValueError("model=ngp's field needs view directions")
        encoded = self.position_encoding(positions)
        out = self.density_mlp(encoded)
        density = self._density(out[..., 0])
        encoded_dir = self.direction_encoding(directions).to(out.dtype)
        encoded_dir = encoded_dir.expand(*out.shape[:-1], encoded_dir.shape[-1])
        rgb = torch.sigmoid(self.color_mlp(torch.cat([out[..., 1:], encoded_dir], dim=-1)))
        return rgb, density

    def density_only(self, positions: Float[Tensor, "n 3"]) -> Float[Tensor, "n"]:
        """σ alone (the colour MLP skipped): what the occupancy grid is refreshed from."""
        return self._density(self.density_mlp(self.position_encoding(positions))[..., 0])

    def training_flops_per_point(self) -> int:
        """FLOPs of the linear layers for one point in a training step (forward 2·in·out a
        layer, backward twice that; the first layer's input gradient is counted too, since it
        reaches the grid's table). The grid's reads are not counted."""
        linears = [m for m in self.modules() if isinstance(m, nn.Linear)]
        return 3 * sum(2 * layer.in_features * layer.out_features for layer in linears)

    def activation_bytes_per_point(self) -> int:
        """Float32 bytes a point holds at once: the encodings and a few `width` activations."""
        return 4 * (self.position_encoding.out_dim + self.direction_encoding.out_dim + 4 * self.width)
