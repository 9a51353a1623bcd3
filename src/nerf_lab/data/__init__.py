"""Scenes: Blender-layout data sets and the built-in scene."""

from nerf_lab.data.datamodule import BlenderDataModule, BuiltinSceneDataModule

__all__ = ["BlenderDataModule", "BuiltinSceneDataModule"]
