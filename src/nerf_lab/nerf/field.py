"""The radiance field: an MLP from encoded position (and view direction) to colour and density."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn

from nerf_lab.nerf.parameters import is_int, require

DENSITY_ACTIVATIONS = ("relu", "softplus")


class RadianceField(Protocol):
    """What the renderer and the tools around it need of a field; `NeRFField` is one.

    Called as `field(positions (*b, 3), unit directions (*b, 3) or broadcastable)` it returns
    `(rgb (*b, 3) in [0, 1], density (*b) >= 0 per unit length)`. The two counts size the work:
    `training_flops_per_point` for the FLOP model of a step (bench), and
    `activation_bytes_per_point` for the rays a chunk when rendering a view on a GPU.
    """

    def __call__(self, positions: Tensor, directions: Tensor | None = None) -> tuple[Tensor, Tensor]: ...

    def training_flops_per_point(self) -> int: ...

    def activation_bytes_per_point(self) -> int: ...


class NeRFField(nn.Module):
    """F_Θ : (γ(x), γ(d)) → (c, σ), the network of Mildenhall et al. 2020, figure 7.

    Trunk: `depth` layers of `width` units with ReLU. For each index i in `skips` the encoded
    position is concatenated to the activation of layer i (0-based), so layer i + 1 takes
    `width + position_encoding.out_dim` inputs: the paper's "skip at layer 4 of 8" is
    `skips=[4]`, as in the authors' code.

    Heads:
      * density σ = act(linear(h)) from the trunk alone, so geometry cannot depend on the
        viewing direction;
      * `view_dependent=True` (the paper): c = sigmoid(linear(relu(linear([feature(h), γ(d)]))))
        with a hidden layer of `width // 2`;
      * `view_dependent=False` (Tiny NeRF): c = sigmoid(linear(h)), position only.

    Layer widths are derived from the encodings' `out_dim`, never written by hand: any encoding
    module with an `out_dim` (`PositionalEncoding`, `HashGridEncoding`) fits.
    `initial_density` (per unit length) is what every point starts at: 0.5 makes a ray that
    crosses 4 units of a fresh field about 86 % opaque.
    """

    def __init__(
        self,
        position_encoding: nn.Module,
        direction_encoding: nn.Module | None = None,
        depth: int = 8,
        width: int = 256,
        skips: Sequence[int] = (4,),
        view_dependent: bool = True,
        density_activation: str = "relu",
        initial_density: float = 0.5,
    ) -> None:
        super().__init__()
        require(is_int(depth) and depth >= 1, "depth", depth, "an integer >= 1 (layers in the trunk)")
        require(is_int(width) and width >= 2, "width", width, "an integer >= 2 (units a layer)")
        skips = list(skips)
        require(all(is_int(s) for s in skips), "skips", skips, "a list of layer indices, e.g. [4] or []")
        require(
            all(0 <= s <= depth - 2 for s in skips), "skips", skips,
            f"layer indices in [0, {depth - 2}] for depth={depth}",
        )
        require(isinstance(view_dependent, bool), "view_dependent", view_dependent, "true or false")
        require(
            density_activation in DENSITY_ACTIVATIONS, "density_activation", density_activation,
            f"one of {', '.join(DENSITY_ACTIVATIONS)}",
        )
        require(
            not view_dependent or direction_encoding is not None, "direction_encoding", direction_encoding,
            "an encoding of view directions (a view-dependent field needs one)",
        )

        self.position_encoding = position_encoding
        self.direction_encoding = direction_encoding if view_dependent else None
        self.skips = frozenset(skips)
        self.view_dependent = view_dependent
        self.density_activation = density_activation

        position_dim = position_encoding.out_dim
        layers, in_dim = [], position_dim
        for index in range(depth):
            layers.append(nn.Linear(in_dim, width))
            in_dim = width + position_dim if index in self.skips else width
        self.trunk = nn.ModuleList(layers)

        if view_dependent:
            assert self.direction_encoding is not None
            self.density_head = nn.Linear(width, 1)
            self.feature = nn.Linear(width, width)
            self.color_hidden = nn.Linear(width + self.direction_encoding.out_dim, width // 2)
            self.color_head = nn.Linear(width // 2, 3)
        else:
            # One layer for (rgb, σ): the Tiny NeRF head, and one matrix product instead of two.
            self.head = nn.Linear(width, 4)
        self._initialise(initial_density)

    def _initialise(self, initial_density: float) -> None:
        # He initialisation keeps the activations' scale through the ReLU trunk; the colour
        # head gets Xavier (a sigmoid follows it), so a fresh field is grey, not saturated.
        for layer in self.modules():
            if isinstance(layer, nn.Linear):
                nn.init.zeros_(layer.bias)
                nn.init.kaiming_uniform_(layer.weight, nonlinearity="relu")
        color_head = self.color_head if self.view_dependent else self.head
        nn.init.xavier_uniform_(color_head.weight)

        # Density: the trunk's activations are non-negative and alike from point to point, so a
        # random density head outputs nearly the same sign everywhere. When that sign is
        # negative, ReLU(σ) is 0 at every sample with no gradient: the field starts, and stays,
        # in the white local minimum. Small weights and a positive bias start every sample at
        # σ ≈ initial_density, partly opaque, with gradient flowing from the first step.
        density_weight, density_bias = (
            (self.density_head.weight, self.density_head.bias)
            if self.view_dependent
            else (self.head.weight[3:], self.head.bias[3:])
        )
        with torch.no_grad():
            density_weight.normal_(0.0, 0.01 / math.sqrt(density_weight.shape[-1]))
            bias = initial_density if self.density_activation == "relu" else math.log(math.expm1(initial_density))
            density_bias.fill_(bias)

    def training_flops_per_point(self) -> int:
        """Floating-point operations of the linear layers for one point in a training step.

        A layer of `in → out` units costs 2·in·out forward (a multiply and an add a weight) and
        twice that backward (the gradients of its weights and of its input), except the first
        layer, whose input is the encoding (no parameters to reach, so no input gradient):
        3·Σ 2·in·out − 2·in₀·out₀. E.g. Tiny NeRF (L = 6 with the raw input: 39 wide, 4 × 128,
        head 4): forward 2·(39·128 + 3·128·128 + 128·4) = 109,312, in a step 317,952.
        """
        linears = [module for module in self.modules() if isinstance(module, nn.Linear)]
        forward = sum(2 * layer.in_features * layer.out_features for layer in linears)
        first = self.trunk[0]
        return 3 * forward - 2 * first.in_features * first.out_features

    def activation_bytes_per_point(self) -> int:
        """Bytes of float32 activations a point holds at once in a forward pass: the encoded
        input and four activations of the widest layer (a skip concatenation's peak)."""
        width = max(layer.out_features for layer in self.trunk)
        return 4 * (self.position_encoding.out_dim + 4 * width)

    def forward(
        self,
        positions: Float[Tensor, "*batch 3"],
        directions: Float[Tensor, "*#batch 3"] | None = None,
    ) -> tuple[Float[Tensor, "*batch 3"], Float[Tensor, "*batch"]]:
        """Colour in [0, 1] and density ≥ 0 at `positions`.

        `directions` are unit view directions; they may broadcast against `positions`
        (one per ray, shape (rays, 1, 3), for samples of shape (rays, samples, 3)), so each is
        encoded once per ray rather than once per sample.
        """
        encoded = self.position_encoding(positions)
        hidden = encoded
        for index, layer in enumerate(self.trunk):
            hidden = F.relu(layer(hidden))
            if index in self.skips:
                hidden = torch.cat([encoded, hidden], dim=-1)

        if self.view_dependent:
            if directions is None:
                raise ValueError("a view-dependent field needs directions")
            assert self.direction_encoding is not None
            raw_density = self.density_head(hidden)[..., 0]
            encoded_dir = self.direction_encoding(directions).to(hidden.dtype)
            encoded_dir = encoded_dir.expand(*hidden.shape[:-1], encoded_dir.shape[-1])
            color_in = torch.cat([self.feature(hidden), encoded_dir], dim=-1)
            raw_rgb = self.color_head(F.relu(self.color_hidden(color_in)))
        else:
            out = self.head(hidden)
            raw_rgb, raw_density = out[..., :3], out[..., 3]

        if self.density_activation == "relu":
            density = F.relu(raw_density)
        else:
            density = F.softplus(raw_density)
        return torch.sigmoid(raw_rgb), density
