"""The renderer: a ray sampler, coarse and fine fields and the volume-rendering quadrature, put together."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import torch
from jaxtyping import Float
from torch import Tensor, nn
from torch.profiler import record_function

from nerf_lab.nerf.marching import RenderOutputs, march, query_where
from nerf_lab.nerf.parameters import ParameterError, is_number, require
from nerf_lab.nerf.rays import RayBundle
from nerf_lab.nerf.rendering import (
    accumulate,
    composite_onto_background,
    expected_depth,
    opacity,
    render_weights,
)
from nerf_lab.nerf.ray_samplers import RaySampler
from nerf_lab.nerf.sampling import midpoints

# The farthest sample depth accepted, in scene units: float32 positions o + t·d keep about
# 2^-23·t of resolution, 1e-3 scene units at t = 1e4, the scale of a unit scene's detail; and
# beyond it the (far − near)/n_c sample spacing leaves no sample near any scene of that scale.
MAX_FAR = 1.0e4


class NeRFRenderer(nn.Module):
    """Renders rays through a radiance field: a sampler's samples, one or two fields, and the
    volume-rendering quadrature (the renderer node of the config: `module.renderer`).

    `field` builds a field (a `RadianceField`, such as a `_partial_` `NeRFField` from config):
    called once for the coarse field and, when `sampler.n_fine > 0`, once more for the fine
    field (the paper's second network). The renderer knows nothing of networks.

    Coarse pass: `sampler.coarse_edges` in [near, far] through `coarse_field`. Fine pass:
    `sampler.fine_edges` from the coarse weights, all of them through `fine_field`. In each pass
    only the samples `sampler.reaching_field` keeps are evaluated (`query_where`); the others
    have density 0 (empty space, or outside the scene's box). `sampler` is any `RaySampler`.

    Early ray termination when rendering views (eval mode, not training): each pass marches its
    samples front to back and stops evaluating a ray once its transmittance is below
    `stop_transmittance` (`nerf_lab.nerf.marching.march`; 0 turns it off). It lives here, not in the sampler: it needs
    the densities of the samples before, which only the renderer has.

    `forward` returns `rgb` (composited onto `background`), `depth`, `opacity` and `weights`
    of the last pass, plus `rgb_coarse` when there is a fine pass (both are supervised), and
    `field_evals_per_ray` (0-d: points sent to the fields, both passes, a ray on average).

    Raises `ParameterError` naming `near`, `far`, `background` or `field.<parameter>`.
    """

    def __init__(
        self,
        field: Callable[[], nn.Module],
        sampler: RaySampler,
        near: float,
        far: float,
        background: Sequence[float] = (1.0, 1.0, 1.0),
        stop_transmittance: float = 1e-4,
    ) -> None:
        super().__init__()
        require(
            is_number(stop_transmittance) and 0 <= stop_transmittance < 1, "stop_transmittance", stop_transmittance,
            "a transmittance in [0, 1) below which a ray stops when rendering views (0: never)",
        )
        self.stop_transmittance = float(stop_transmittance)
        require(is_number(near) and near >= 0, "near", near, "a depth >= 0")
        require(is_number(far) and near < far <= MAX_FAR, "far", far, f"a depth > near={near} and at most {MAX_FAR:g} (scene units)")
        require(
            len(background) == 3 and all(is_number(c) and 0 <= c <= 1 for c in background),
            "background", background, "an RGB colour in [0, 1]",
        )
        try:
            self.coarse_field = field()
            self.fine_field = field() if sampler.n_fine > 0 else None
        except ParameterError as error:
            raise error.within("field") from None
        self.sampler = sampler
        self.near, self.far = float(near), float(far)
        self.register_buffer("background", torch.tensor(background, dtype=torch.float32))

    @property
    def fields(self) -> list[nn.Module]:
        return [field for field in (self.coarse_field, self.fine_field) if field is not None]

    def compile_fields(self) -> None:
        """torch.compile the fields (the network work); sampling and compositing stay eager."""
        for field in self.fields:
            field.compile()

    @property
    def hidden_width(self) -> int:
        """Units of the coarse field's widest linear layer: the (points × width) @ (width × width)
        product whose rate bounds a step (`nerf_lab.analysis.benchmarking.matmul_throughput`);
        0 for a field without one (a grid read directly)."""
        return max((layer.out_features for layer in self.coarse_field.modules() if isinstance(layer, nn.Linear)), default=0)

    def training_flops_per_ray(self, field_evals_per_ray: float | None = None) -> int | float:
        """The fields' floating-point work for one ray in a training step: `n_coarse` points
        through the coarse field, and the fine pass's (`sampler.fine_samples_per_ray`) through
        the fine one (`RadianceField.training_flops_per_point`). When fewer points reach the fields, give
        the measured `field_evals_per_ray` (both passes), counted at the coarse field's cost
        (the two fields are built alike)."""
        if field_evals_per_ray is not None:
            return field_evals_per_ray * self.coarse_field.training_flops_per_point()
        total = self.sampler.n_coarse * self.coarse_field.training_flops_per_point()
        if self.fine_field is not None:
            total += self.sampler.fine_samples_per_ray * self.fine_field.training_flops_per_point()
        return total

    def activation_bytes_per_ray(self) -> int:
        """Memory of one ray's points in its largest pass (for sizing render chunks)."""
        return self.sampler.samples_per_ray * max(field.activation_bytes_per_point() for field in self.fields)

    def forward(self, rays: RayBundle) -> RenderOutputs:
        with record_function("nerf.sampling"):
            coarse_edges = self.sampler.coarse_edges(rays, self.near, self.far)
        coarse = self.render_samples(self.coarse_field, rays, coarse_edges)
        if self.fine_field is None:
            return coarse
        with record_function("nerf.sampling"):
            fine_edges = self.sampler.fine_edges(coarse_edges, coarse.weights)
        fine = self.render_samples(self.fine_field, rays, fine_edges)
        return dataclasses.replace(
            fine, rgb_coarse=coarse.rgb, field_evals_per_ray=fine.field_evals_per_ray + coarse.field_evals_per_ray
        )

    def update(self, step: int) -> bool:
        """A training step's sampler bookkeeping (the occupancy grid's refresh from the coarse
        field's density); True when the sampler reset itself (a collapsed grid re-opened)."""
        return self.sampler.update(self.density, step)

    def density(self, positions: Float[Tensor, "n 3"]) -> Float[Tensor, "n"]:
        """The coarse field's density (it does not depend on the view direction): what the
        occupancy grid is refreshed from."""
        density_only = getattr(self.coarse_field, "density_only", None)
        if density_only is not None:  # a field whose density skips its colour network
            return density_only(positions)
        directions = positions.new_tensor([0.0, 0.0, 1.0]).expand_as(positions)
        return self.coarse_field(positions, directions)[1]

    def render_samples(
        self,
        field: nn.Module,
        rays: RayBundle,
        edges: Float[Tensor, "rays edges"],
    ) -> RenderOutputs:
        """Query `field` at the centres of the intervals bounded by `edges` and composite.

        The stages are labelled for `torch.profiler` (`nerf.sampling`, `nerf.field`,
        `nerf.compositing`): `nerf_lab.bench bench.profile_steps=N` reports their share of a step.
        """
        with record_function("nerf.sampling"):
            depths = midpoints(edges)
            positions = rays.origins[:, None, :] + rays.directions[:, None, :] * depths[..., None]
            direction_norm = rays.directions.norm(dim=-1, keepdim=True)
            view_directions = (rays.directions / direction_norm)[:, None, :]
        with torch.autocast(device_type=edges.device.type, enabled=False):
            deltas = (edges[:, 1:] - edges[:, :-1]) * direction_norm
        with record_function("nerf.field"):
            keep = self.sampler.reaching_field(positions, edges)
            if not self.training and self.stop_transmittance > 0:
                rgb, density, keep = march(field, positions, view_directions, deltas, keep, self.stop_transmittance)
                evals = keep.sum() / keep.shape[0]
            elif keep is None:
                rgb, density = field(positions, view_directions)
                evals = depths.new_full((), float(depths.shape[-1]))
            else:
                rgb, density = query_where(field, positions, view_directions, keep)
                evals = keep.sum() / keep.shape[0]

        # The compositing sums stay in float32 under autocast (see nerf_lab.nerf.rendering).
        with record_function("nerf.compositing"), torch.autocast(device_type=edges.device.type, enabled=False):
            weights, _, _ = render_weights(density, deltas)
            ray_opacity = opacity(weights)
            return RenderOutputs(
                rgb=composite_onto_background(accumulate(weights, rgb), ray_opacity, self.background),
                depth=expected_depth(weights, depths),
                opacity=ray_opacity,
                weights=weights,
                field_evals_per_ray=evals,
            )
