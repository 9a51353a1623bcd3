"""nerf_lab: study Neural Radiance Fields one change at a time.

Rooms, each importing only those before it (`tests/test_layers.py` holds them to it):

* `nerf_lab.errors`, `nerf_lab.files`: one-line errors for bad input, and atomic writes; they
  import nothing of ours, and every room but `nerf` may use them.
* `nerf_lab.nerf`: the NeRF itself (rays, encodings and the hash grid, fields, ray samplers,
  marching, volume rendering, the occupancy grid, the renderer, PSNR); torch only, no Lightning or Hydra.
* `nerf_lab.data`: scenes (the Blender reader and cache, the images' backgrounds, the built-in scene, own captures) and
  the LightningDataModule that turns them into ray batches.
* `nerf_lab.visuals`: view panels and depth colour maps.
* `nerf_lab.training`: the Lightning loop: the LightningModule, callbacks, schedules, the
  TensorBoard logger, device choices, the per-view test record (and LPIPS where installed).
* `nerf_lab.config`: the run's config: its composition from `conf/`, resolvers, value checks,
  the build of the run's objects, and a checkpoint's stored config read as data.
* `nerf_lab.runs`: a run's record: checkpoints, run folders, metrics, stops, resume, and the
  Hydra callbacks.
* `nerf_lab.analysis`: what a sweep says: arm statistics, curves, figures, the report; the
  bench's timers.
* the commands, each a thin module: `train`, `eval`, `render`, `bench`, `report`, and `cli`,
  what they share.
"""
