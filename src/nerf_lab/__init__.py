"""nerf_lab: study Neural Radiance Fields one change at a time.

Layers, each importing only those before it:

* `nerf_lab.nerf`: the NeRF itself (rays, encodings, field, samplers, volume rendering, the
  model); torch only, no Lightning or Hydra.
* `nerf_lab.data`: scenes (the Blender reader and cache, the built-in scene) and the
  LightningDataModule that turns them into ray batches.
* `nerf_lab.training`: the LightningModule, callbacks, builders from config, hardware
  choices, checkpoints, run records.
* `nerf_lab.analysis`: what a sweep says: arm statistics, curves, figures, the report.
* the commands, each a thin module: `train`, `eval`, `render`, `bench`, `report`.
"""
