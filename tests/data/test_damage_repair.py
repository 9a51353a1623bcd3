"""Damage repaired without the user's hand: a truncated or empty image-cache entry is
rebuilt (and said once); a checkpoint write killed halfway leaves no `*.partial` for good."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess

import numpy as np
import pytest
import torch

from nerf_lab.data.blender import load_split
from nerf_lab.training.callbacks import AtomicCheckpointIO


@pytest.mark.parametrize("damage", ["truncated", "empty"])
def test_a_damaged_cache_entry_is_rebuilt_and_said_once(tmp_path, builtin_scene_32px, caplog, damage):
    scene = tmp_path / "scene"
    shutil.copytree(builtin_scene_32px, scene)
    cache = tmp_path / "cache"
    first = load_split(scene, "val", 16, cache_dir=cache)
    (entry,) = cache.glob("*.npy")
    data = entry.read_bytes()
    entry.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"")

    with caplog.at_level(logging.WARNING, logger="nerf_lab"):
        again = load_split(scene, "val", 16, cache_dir=cache)
        third = load_split(scene, "val", 16, cache_dir=cache)
    torch.testing.assert_close(again.images, first.images)
    torch.testing.assert_close(third.images, first.images)
    said = [record.getMessage() for record in caplog.records if "damaged" in record.getMessage()]
    assert len(said) == 1 and str(entry) in said[0] and said[0].endswith("rebuilding it")
    assert entry.read_bytes() == data  # rebuilt whole, in place


def test_a_killed_checkpoint_writes_partial_is_removed_at_the_next_save(tmp_path):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    dead = subprocess.Popen(["true"])
    dead.wait()  # a process that is gone: the one killed while writing
    stale = folder / f".last.ckpt.{dead.pid}.partial"
    stale.write_bytes(b"half a checkpoint")
    running = folder / f".best.ckpt.{os.getpid()}.partial"  # a write still under way is left alone
    running.write_bytes(b"being written")

    AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.ones(2)}}, folder / "last.ckpt")

    assert not stale.exists() and running.exists()
    assert torch.load(folder / "last.ckpt", weights_only=True)["state_dict"]["w"].tolist() == [1.0, 1.0]
    assert sorted(p.name for p in folder.iterdir()) == sorted([running.name, "last.ckpt"])


def test_a_stale_cache_partial_is_removed_when_the_cache_is_next_written(tmp_path, builtin_scene_32px):
    cache = tmp_path / "cache" / "images"
    cache.mkdir(parents=True)
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = cache / f".lego-val-16px-0123.npy.{dead.pid}.partial"
    stale.write_bytes(np.zeros(3).tobytes())
    load_split(builtin_scene_32px, "val", 16, cache_dir=cache)
    assert not stale.exists() and len(list(cache.glob("*.npy"))) == 1
