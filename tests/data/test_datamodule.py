from types import SimpleNamespace

import pytest
import torch

from nerf_lab.data.batches import RandomRayBatches, ViewDataset
from nerf_lab.data.blender import load_split
from nerf_lab.data.datamodule import BuiltinSceneDataModule
from nerf_lab.errors import ConfigError


@pytest.fixture
def train_split(builtin_scene_32px, cache_dir):
    return load_split(builtin_scene_32px, "train", 32, cache_dir=cache_dir)


def _batches(split, steps=3, **kwargs):
    return list(RandomRayBatches(split, batch_rays=64, last_step=steps, **kwargs))


def test_batches_hold_rays_and_their_pixels(train_split):
    batch = _batches(train_split, 1)[0]
    assert batch.origins.shape == batch.directions.shape == batch.rgb.shape == (64, 3)
    # Each colour is the pixel its ray goes through: find it again from the ray direction.
    split = train_split
    for i in range(5):
        view = int(torch.argmin((split.poses[:, :3, 3] - batch.origins[i]).norm(dim=-1)))
        camera_dir = split.poses[view, :3, :3].T @ batch.directions[i]
        col = camera_dir[0] * split.focal + 0.5 * split.width - 0.5
        row = -camera_dir[1] * split.focal + 0.5 * split.height - 0.5
        torch.testing.assert_close(batch.rgb[i], split.images[view, round(row.item()), round(col.item())])


def test_draws_depend_only_on_seed_rank_and_step(train_split):
    first = _batches(train_split, 4, seed=1)
    again = _batches(train_split, 4, seed=1)
    resumed = list(RandomRayBatches(train_split, 64, seed=1, first_step=2, last_step=4))
    other_rank = _batches(train_split, 4, seed=1, rank=1)
    for a, b in zip(first, again):
        torch.testing.assert_close(a.rgb, b.rgb)
    torch.testing.assert_close(first[2].directions, resumed[0].directions)
    assert not torch.allclose(first[0].directions, other_rank[0].directions)
    assert not torch.allclose(first[0].directions, first[1].directions)


def test_one_image_mode_draws_a_batch_from_one_view(train_split):
    for batch in _batches(train_split, 3, ray_sampling="one_image"):
        assert (batch.origins == batch.origins[0]).all()
    mixed = _batches(train_split, 1)[0]
    assert len(torch.unique(mixed.origins, dim=0)) > 10


def test_precrop_draws_from_the_centre_then_everywhere(train_split):
    batches = list(RandomRayBatches(train_split, 2048, precrop_steps=2, precrop_frac=0.5, last_step=4))
    split = train_split

    for step, batch in enumerate(batches):
        views = torch.cdist(batch.origins, split.poses[:, :3, 3]).argmin(dim=1)
        camera = torch.einsum("nji,nj->ni", split.poses[views, :3, :3], batch.directions)
        pixel_offset = camera[:, :2].abs() * split.focal  # distance from the image centre
        if step < 2:
            assert pixel_offset.max() <= 8.5  # the central 16 of 32 pixels
        else:
            assert pixel_offset.max() > 12


def test_length_is_the_whole_runs_and_a_resumed_stream_yields_the_steps_left(train_split):
    """Lightning restores the batches done (30) and ends its one epoch at the length: the
    length is the whole run's (100), the stream yields the 70 left."""
    batches = RandomRayBatches(train_split, 8, first_step=30, last_step=100)
    assert len(batches) == 100 and sum(1 for _ in batches) == 70
    with pytest.raises(TypeError):
        len(RandomRayBatches(train_split, 8))


def test_view_dataset_yields_whole_images(train_split):
    item = ViewDataset(train_split, [3, 5])[1]
    assert item.origins.shape == item.rgb.shape == (32, 32, 3)
    assert item.view == 5
    torch.testing.assert_close(item.rgb, train_split.images[5])


def test_datamodule_loads_splits_for_each_stage(cache_dir):
    datamodule = BuiltinSceneDataModule(resolution=32, cache_dir=str(cache_dir), val_views=3, test_views=4, batch_rays=16)
    datamodule.setup("fit")
    assert set(datamodule.splits) == {"train", "val"}
    assert len(datamodule.val_dataloader()) == 3
    datamodule.setup("test")
    assert len(datamodule.test_dataloader()) == 4
    assert datamodule.train_dataloader().dataset.batch_rays == 16


def test_builtin_refuses_a_scene_folder():
    with pytest.raises(ConfigError, match="data=builtin renders its own scene"):
        BuiltinSceneDataModule(scene_dir="/somewhere")


def test_accumulated_steps_draw_fresh_batches_and_resume_where_they_stopped(cache_dir):
    """With accumulate_grad_batches = 2 a step takes two batches: steps 3 to 5 of a resumed run
    draw batches 6 to 9, the ones an uninterrupted run would have drawn."""
    datamodule = BuiltinSceneDataModule(resolution=32, cache_dir=str(cache_dir), batch_rays=16, precrop_steps=4)
    datamodule.setup("fit")
    datamodule.trainer = SimpleNamespace(accumulate_grad_batches=2, global_step=3, max_steps=5, global_rank=0)
    batches = datamodule.train_dataloader().dataset
    assert (batches.first_step, batches.last_step) == (6, 10)
    # The epoch's length counts from batch 0: Lightning restores the 6 batches done and ends the
    # epoch after the 4 this stream yields (a length of 4 ended it 6 batches early).
    assert len(batches) == 10 and sum(1 for _ in batches) == 4
    assert batches.precrop_steps == 8  # 4 optimiser steps' worth of batches


def test_train_views_are_evenly_spaced_over_the_train_split(cache_dir):
    """`data.train_views`: 25 of Lego's 100 views are r_0, r_4, …, r_99 (the paper's Table 2
    row "25 images"); here 3 of the built-in scene's training views are its first, middle and
    last."""
    full = BuiltinSceneDataModule(resolution=32, cache_dir=str(cache_dir))
    full.setup("fit")
    n = len(full.splits["train"])
    some = BuiltinSceneDataModule(resolution=32, cache_dir=str(cache_dir), train_views=3)
    some.setup("fit")
    chosen = [0, round((n - 1) / 2), n - 1]
    assert [p.name for p in some.splits["train"].file_paths] == [full.splits["train"].file_paths[i].name for i in chosen]
    torch.testing.assert_close(some.splits["train"].images, full.splits["train"].images[chosen])
    torch.testing.assert_close(some.splits["train"].poses, full.splits["train"].poses[chosen])
    assert len(some.splits["val"]) == len(full.splits["val"])  # only the train split is thinned
    everything = BuiltinSceneDataModule(resolution=32, cache_dir=str(cache_dir), train_views=n + 5)
    everything.setup("fit")
    assert len(everything.splits["train"]) == n


def test_evenly_spaced_views_of_lego_for_25_images():
    from nerf_lab.data.datamodule import _evenly_spaced

    assert _evenly_spaced(25, 100)[:4] == [0, 4, 8, 12] and _evenly_spaced(25, 100)[-1] == 99
    assert len(set(_evenly_spaced(50, 100))) == 50
