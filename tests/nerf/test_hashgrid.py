"""The multiresolution hash encoding against values computed by hand (nerf_lab.nerf.hashgrid)."""

import pytest
import torch

from nerf_lab.nerf.hashgrid import DENSE_LOOKUPS, HashGridEncoding, dense_index, level_resolutions, spatial_hash
from nerf_lab.nerf.parameters import ParameterError

# A box of side 2 with 2 cells a side: vertices at integer coordinates 0, 1, 2.
BOX = [[0.0, 0.0, 0.0], [2.0, 2.0, 2.0]]


def numbered(encoding: HashGridEncoding) -> HashGridEncoding:
    """Row r of the table holds (r, −r): every read says which rows it mixed."""
    rows = torch.arange(encoding.table.shape[0], dtype=torch.float32)
    with torch.no_grad():
        encoding.table.copy_(torch.stack([rows, -rows], dim=-1))
    return encoding


def one_dense_level(lookup: str) -> HashGridEncoding:
    return numbered(HashGridEncoding(BOX, n_levels=1, n_features=2, log2_table_size=5, min_resolution=2, max_resolution=2, dense_lookup=lookup))


def test_resolutions_grow_geometrically():
    assert level_resolutions(3, 16, 64) == [16, 32, 64]  # b = 2
    assert level_resolutions(5, 16, 256) == [16, 32, 64, 128, 256]
    assert level_resolutions(1, 8, 8) == [8]


@pytest.mark.parametrize("lookup", DENSE_LOOKUPS)
def test_a_point_on_a_vertex_returns_that_vertexs_features(lookup):
    encoding = one_dense_level(lookup)
    # vertex (i, j, k) = (1, 0, 2) is row 1 + 0·3 + 2·9 = 19
    out = encoding(torch.tensor([[1.0, 0.0, 2.0]]))
    torch.testing.assert_close(out, torch.tensor([[19.0, -19.0]]))
    # the far corner (2, 2, 2): row 2 + 2·3 + 2·9 = 26, the last of 27
    torch.testing.assert_close(encoding(torch.tensor([[2.0, 2.0, 2.0]])), torch.tensor([[26.0, -26.0]]))


@pytest.mark.parametrize("lookup", DENSE_LOOKUPS)
def test_along_an_edge_the_features_are_linear(lookup):
    encoding = one_dense_level(lookup)
    # from vertex (1, 0, 2) (row 19) to (2, 0, 2) (row 20): 19 + t
    t = torch.tensor([0.0, 0.25, 0.5, 0.9])
    points = torch.stack([1.0 + t, torch.zeros(4), torch.full((4,), 2.0)], dim=-1)
    torch.testing.assert_close(encoding(points)[:, 0], 19.0 + t)
    # along z from (0, 1, 0) (row 3) to (0, 1, 1) (row 12): 3 + 9t
    points = torch.stack([torch.zeros(4), torch.ones(4), t], dim=-1)
    torch.testing.assert_close(encoding(points)[:, 0], 3.0 + 9.0 * t)


@pytest.mark.parametrize("lookup", DENSE_LOOKUPS)
def test_points_outside_the_box_read_its_faces(lookup):
    encoding = one_dense_level(lookup)
    outside = encoding(torch.tensor([[-5.0, 1.0, 9.0]]))
    torch.testing.assert_close(outside, encoding(torch.tensor([[0.0, 1.0, 2.0]])))  # row 0 + 3 + 18 = 21
    assert outside[0, 0].item() == 21.0


def test_a_dense_level_never_collides():
    resolution = 7  # 8³ = 512 vertices fit in T = 2^9
    encoding = HashGridEncoding(BOX, n_levels=1, n_features=1, log2_table_size=9, min_resolution=resolution, max_resolution=resolution)
    assert encoding.dense == [True] and encoding.table.shape[0] == 512
    axis = torch.arange(resolution + 1)
    ijk = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1).reshape(-1, 3)
    assert dense_index(ijk, resolution).unique().numel() == 512  # one row a vertex
    # one vertex more a side would not fit: that level is hashed into T rows
    hashed = HashGridEncoding(BOX, n_levels=1, n_features=1, log2_table_size=9, min_resolution=8, max_resolution=8)
    assert hashed.dense == [False] and hashed.table.shape[0] == 512


def test_a_hashed_level_uses_the_papers_hash():
    # by hand: (1·1 ⊕ 1·2654435761 ⊕ 0) mod 2^19 = 2654435760 mod 524288 = 489904
    # (3·1 ⊕ 5·2654435761 ⊕ 7·805459861) mod 2^19 = 329061
    assert spatial_hash(torch.tensor([[1, 1, 0], [3, 5, 7]]), 2**19).tolist() == [489904, 329061]
    # a level of 100 cells a side (101³ > 2^19) reads vertex (3, 5, 7) from row 329061
    box = [[0.0, 0.0, 0.0], [100.0, 100.0, 100.0]]
    encoding = numbered(HashGridEncoding(box, n_levels=1, n_features=2, log2_table_size=19, min_resolution=100, max_resolution=100))
    assert encoding.dense == [False]
    torch.testing.assert_close(encoding(torch.tensor([[3.0, 5.0, 7.0]])), torch.tensor([[329061.0, -329061.0]]))


@pytest.mark.parametrize("dense", [True, False])
@pytest.mark.parametrize("lookup", DENSE_LOOKUPS)
def test_gradients_reach_only_the_eight_corners(dense, lookup):
    resolution = 2 if dense else 100
    box = [[0.0] * 3, [float(resolution)] * 3]
    encoding = HashGridEncoding(box, n_levels=1, n_features=2, log2_table_size=12, min_resolution=resolution, max_resolution=resolution, dense_lookup=lookup)
    assert encoding.dense == [dense]
    encoding(torch.tensor([[1.25, 0.5, 1.75]])).sum().backward()
    touched = set(encoding.table.grad.abs().sum(dim=-1).nonzero()[:, 0].tolist())
    corners = torch.tensor([[1 + di, dj, 1 + dk] for dk in (0, 1) for dj in (0, 1) for di in (0, 1)])
    expected = dense_index(corners, resolution) if dense else spatial_hash(corners, 2**12)
    assert touched == set(expected.tolist()) and len(touched) == 8
    # each corner's gradient is its trilinear weight: (1 − fx or fx)(…)(…) with f = (.25, .5, .75)
    weights = torch.tensor([(0.75, 0.25)[di] * 0.5 * (0.25, 0.75)[dk] for dk in (0, 1) for dj in (0, 1) for di in (0, 1)])
    torch.testing.assert_close(encoding.table.grad[expected, 0], weights)


def test_the_three_lookups_compute_the_same_function():
    box = [[-1.5] * 3, [1.5] * 3]
    points = torch.rand(500, 4, 3) * 3.4 - 1.7
    outputs = []
    for lookup in DENSE_LOOKUPS:
        torch.manual_seed(0)
        encoding = HashGridEncoding(box, n_levels=5, n_features=2, log2_table_size=10, min_resolution=3, max_resolution=40, dense_lookup=lookup)
        with torch.no_grad():
            encoding.table.normal_()
        outputs.append(encoding(points))
        assert outputs[-1].shape == (500, 4, encoding.out_dim) == (500, 4, 10)
    torch.testing.assert_close(outputs[0], outputs[1])
    torch.testing.assert_close(outputs[0], outputs[2])


def test_the_table_starts_small():
    table = HashGridEncoding(BOX, n_levels=2, log2_table_size=10, min_resolution=4, max_resolution=16).table
    assert table.abs().max() <= 1e-4 and table.std() > 1e-5


@pytest.mark.parametrize(
    ("kwargs", "parameter"),
    [({"scene_box": None}, "scene_box"), ({"n_levels": 0}, "n_levels"), ({"log2_table_size": 40}, "log2_table_size"),
     ({"max_resolution": 4, "min_resolution": 8}, "max_resolution"), ({"dense_lookup": "cuda"}, "dense_lookup")],
)
def test_bad_settings_name_the_parameter(kwargs, parameter):
    with pytest.raises(ParameterError, match=rf"^{parameter}="):
        HashGridEncoding(**{"scene_box": BOX, **kwargs})
