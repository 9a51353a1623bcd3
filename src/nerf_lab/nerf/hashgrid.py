"""The multiresolution hash encoding of Müller et al. 2022 ("Instant Neural Graphics Primitives
with a Multiresolution Hash Encoding", section 3), in plain PyTorch.

L levels, each a grid of N_l cells along every axis over the scene's box, with
N_l = ⌊N_min · b^l⌋ and b = exp((ln N_max − ln N_min) / (L − 1)) (eq. 2-3). Each level keeps a
table of feature vectors (F features each) for its grid's vertices:

* a level whose (N_l + 1)³ vertices fit in T entries stores every vertex once (dense: vertex
  (i, j, k) at i + j·(N_l + 1) + k·(N_l + 1)², no collisions, and a table of (N_l + 1)³ rows);
* a finer level stores T entries and finds a vertex's by the paper's spatial hash (eq. 4):
  h(i, j, k) = (i·1 ⊕ j·2654435761 ⊕ k·805459861) mod T, T a power of two, so the mod is the
  low bits and the products may be taken in 64 bits.

A point's features at level l are the trilinear interpolation of its cell's 8 corners, and the
encoding is the L levels' features side by side: width L·F (`out_dim`). Points are normalised
to [0, 1]³ by `scene_box` and clamped there (points outside read the box's faces; the sampler
keeps them from the field). The tables start U(−1e-4, 1e-4), as the paper's.

`dense_lookup` chooses how the dense levels are read (the hashed ones are always gathered):
* "gather": the 8 corners of every level gathered in one `index_select` and weighted by hand;
* "embedding_bag": the 8 corners' gather and weighted sum in one fused operator
  (`F.embedding_bag`), all levels at once;
* "grid_sample": the dense levels as 3-D volumes read by `F.grid_sample` (trilinear).
All three compute the same function of the same parameters; benchmarks/hashgrid_speed.py times
them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor, nn

from nerf_lab.nerf.parameters import BOX_EXPECTED, is_box, is_int, require

# The paper's primes for the spatial hash (section 3, eq. 4); π1 = 1 keeps the first axis's
# bits as they are, for cache coherence.
HASH_PRIMES = (1, 2654435761, 805459861)
DENSE_LOOKUPS = ("gather", "embedding_bag", "grid_sample")


def level_resolutions(n_levels: int, min_resolution: int, max_resolution: int) -> list[int]:
    """N_l = ⌊N_min · b^l⌋ for l = 0 … L−1, b = exp((ln N_max − ln N_min) / (L − 1)) (eq. 2-3);
    e.g. L = 3, N_min = 16, N_max = 64 → [16, 32, 64]. The last is N_max up to rounding (a
    tiny epsilon keeps ⌊64.0000…⌋ from falling to 63)."""
    if n_levels == 1:
        return [min_resolution]
    growth = math.exp((math.log(max_resolution) - math.log(min_resolution)) / (n_levels - 1))
    return [int(math.floor(min_resolution * growth**level + 1e-6)) for level in range(n_levels)]


def spatial_hash(ijk: Int[Tensor, "*n 3"], table_size: int) -> Int[Tensor, "*n"]:
    """(i·1 ⊕ j·2654435761 ⊕ k·805459861) mod `table_size` (a power of two): eq. 4 of the paper.
    E.g. (1, 1, 0), T = 2^19: (1 ⊕ 2654435761) mod 2^19 = 2654435760 mod 524288 = 489904."""
    i, j, k = (ijk[..., axis] * prime for axis, prime in enumerate(HASH_PRIMES))
    return (i ^ j ^ k) & (table_size - 1)


def dense_index(ijk: Int[Tensor, "*n 3"], resolution: int) -> Int[Tensor, "*n"]:
    """Vertex (i, j, k) of a grid of `resolution` cells a side at i + j·(N + 1) + k·(N + 1)²."""
    side = resolution + 1
    return ijk[..., 0] + side * (ijk[..., 1] + side * ijk[..., 2])


class HashGridEncoding(nn.Module):
    """Multiresolution hash encoding of positions in `scene_box` (module docstring): input
    (*batch, 3) in scene units, output (*batch, n_levels · n_features).

    Parameters: `n_levels` L, `n_features` F a level, `log2_table_size` log₂ T, `min_resolution`
    and `max_resolution` N_min, N_max (cells a side at the coarsest and finest level), and
    `dense_lookup`. One parameter, `table` (Σ_l T_l, F), holds the levels' tables one after the
    other (`offsets`), so the optimiser sees the whole table as one tensor.

    Raises `ParameterError` naming the parameter that does not fit.
    """

    def __init__(
        self,
        scene_box: Sequence[Sequence[float]] | None,
        n_levels: int = 16,
        n_features: int = 2,
        log2_table_size: int = 19,
        min_resolution: int = 16,
        max_resolution: int = 2048,
        dense_lookup: str = "embedding_bag",
        in_dim: int = 3,
    ) -> None:
        super().__init__()
        require(is_box(scene_box), "scene_box", scene_box, BOX_EXPECTED + " (the hash grid covers it)")
        require(in_dim == 3, "in_dim", in_dim, "3 (the hash grid encodes 3-D positions)")
        require(is_int(n_levels) and 1 <= n_levels <= 64, "n_levels", n_levels, "an integer in [1, 64] (grid levels)")
        require(is_int(n_features) and 1 <= n_features <= 64, "n_features", n_features, "an integer in [1, 64] (features a level)")
        require(
            is_int(log2_table_size) and 4 <= log2_table_size <= 30, "log2_table_size", log2_table_size,
            "an integer in [4, 30] (log2 of the entries a level's table)",
        )
        require(is_int(min_resolution) and min_resolution >= 1, "min_resolution", min_resolution, "an integer >= 1 (cells a side, coarsest level)")
        require(
            is_int(max_resolution) and max_resolution >= min_resolution and max_resolution <= 2**20, "max_resolution", max_resolution,
            f"an integer in [min_resolution={min_resolution}, 2^20] (cells a side, finest level)",
        )
        require(dense_lookup in DENSE_LOOKUPS, "dense_lookup", dense_lookup, f"one of {', '.join(DENSE_LOOKUPS)}")
        self.in_dim = 3
        self.n_levels, self.n_features = n_levels, n_features
        self.table_size = 2**log2_table_size
        self.dense_lookup = dense_lookup
        self.resolutions = level_resolutions(n_levels, min_resolution, max_resolution)
        self.dense = [(n + 1) ** 3 <= self.table_size for n in self.resolutions]
        sizes = [(n + 1) ** 3 if dense else self.table_size for n, dense in zip(self.resolutions, self.dense)]
        self.offsets = [0, *torch.tensor(sizes).cumsum(0).tolist()]
        self.register_buffer("scene_box", torch.tensor(scene_box, dtype=torch.float32), persistent=False)
        self.table = nn.Parameter(torch.empty(self.offsets[-1], n_features).uniform_(-1e-4, 1e-4))

    @property
    def out_dim(self) -> int:
        return self.n_levels * self.n_features

    def normalise(self, positions: Float[Tensor, "*batch 3"]) -> Float[Tensor, "*batch 3"]:
        """Positions mapped from the box to [0, 1]³ and clamped there."""
        return ((positions.float() - self.scene_box[0]) / (self.scene_box[1] - self.scene_box[0])).clamp(0.0, 1.0)

    def corner_indices_and_weights(
        self, unit: Float[Tensor, "n 3"], levels: range
    ) -> tuple[Int[Tensor, "n levels 8"], Float[Tensor, "n levels 8"]]:
        """Rows of `table` (offsets included) of the 8 corners of each point's cell at each of
        `levels` (all dense or all hashed), and their trilinear weights (which sum to 1); corner
        c = di + 2·dj + 4·dk. A point on the box's far face lies in the last cell with fraction
        1, so it reads that face's vertices.

        The corners are combined from per-axis parts, (n, levels, 2) each: i and i + 1 times
        1, (N + 1), (N + 1)² for a dense level, times the hash primes for a hashed one; then
        summed (dense) or XOR-ed (hashed) over the 2·2·2 choices, which is
        `dense_index`/`spatial_hash` of the corner, with one broadcast instead of 8 gathers."""
        resolutions = unit.new_tensor([self.resolutions[level] for level in levels])  # (levels,)
        scaled = unit[:, None, :] * resolutions[:, None]  # (n, levels, 3)
        cell = torch.minimum(scaled.floor(), (resolutions - 1)[:, None])
        fraction = scaled - cell
        vertex = cell.long()[..., None] + torch.arange(2, device=unit.device)  # (n, levels, 3, 2)
        dense = self.dense[levels[0]]
        if dense:
            side = resolutions.long() + 1
            strides = torch.stack([torch.ones_like(side), side, side * side], dim=-1)  # (levels, 3)
        else:
            strides = vertex.new_tensor(HASH_PRIMES).expand(len(levels), 3)
        part = vertex * strides[..., None]  # (n, levels, 3, 2)
        x, y, z = part[..., 0, None, None, :], part[..., 1, None, :, None], part[..., 2, :, None, None]
        # (n, levels, dk, dj, di): flattening gives corner c = di + 2·dj + 4·dk
        index = (x + y + z) if dense else (x ^ y ^ z) & (self.table_size - 1)
        offsets = vertex.new_tensor([self.offsets[level] for level in levels])
        weights = torch.stack([1.0 - fraction, fraction], dim=-1)  # (n, levels, 3, 2)
        wx, wy, wz = weights[..., 0, None, None, :], weights[..., 1, None, :, None], weights[..., 2, :, None, None]
        n = unit.shape[0]
        return (index.reshape(n, len(levels), 8) + offsets[:, None]), (wx * wy * wz).reshape(n, len(levels), 8)

    def forward(self, positions: Float[Tensor, "*batch 3"]) -> Float[Tensor, "*batch out_dim"]:
        batch = positions.shape[:-1]
        unit = self.normalise(positions.reshape(-1, 3))
        n_dense = sum(self.dense)  # the dense levels are the coarsest ones
        groups = [range(0, n_dense), range(n_dense, self.n_levels)]
        features = []
        for levels in groups:
            if len(levels) == 0:
                continue
            if self.dense_lookup == "grid_sample" and self.dense[levels[0]]:
                features += [self._grid_sample(unit, level) for level in levels]
                continue
            index, weight = self.corner_indices_and_weights(unit, levels)
            if self.dense_lookup == "embedding_bag":
                mixed = F.embedding_bag(index.reshape(-1, 8), self.table, per_sample_weights=weight.reshape(-1, 8), mode="sum")
            else:
                rows = self.table.index_select(0, index.reshape(-1)).reshape(*index.shape, self.n_features)
                mixed = (rows * weight[..., None]).sum(dim=2)
            features.append(mixed.reshape(unit.shape[0], len(levels) * self.n_features))
        return torch.cat(features, dim=-1).reshape(*batch, self.out_dim)

    def _grid_sample(self, unit: Float[Tensor, "n 3"], level: int) -> Float[Tensor, "n F"]:
        # The dense table as a volume (1, F, D=k, H=j, W=i): grid_sample's (x, y, z) index
        # (W, H, D), i.e. (i, j, k), and align_corners puts −1 and 1 on the end vertices.
        side = self.resolutions[level] + 1
        rows = self.table[self.offsets[level] : self.offsets[level + 1]]
        volume = rows.t().reshape(1, self.n_features, side, side, side)
        grid = (unit * 2.0 - 1.0).reshape(1, -1, 1, 1, 3)
        out = F.grid_sample(volume, grid, mode="bilinear", padding_mode="border", align_corners=True)
        return out.reshape(self.n_features, -1).t()

    def extra_repr(self) -> str:
        dense = sum(self.dense)
        return (
            f"levels={self.n_levels} ({dense} dense), features={self.n_features}, table_size={self.table_size}, "
            f"resolutions={self.resolutions[0]}..{self.resolutions[-1]}, entries={self.offsets[-1]}, out_dim={self.out_dim}"
        )
