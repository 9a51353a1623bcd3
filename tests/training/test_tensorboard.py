"""What TensorBoard shows of runs: curves, HPARAMS, Custom Scalars and labelled view panels,
read from the event files, and (slow) from a real TensorBoard server on a real sweep."""

import json
import re
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FAST_OVERRIDES
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.custom_scalar import layout_pb2
from tensorboard.plugins.hparams import plugin_data_pb2
from user_commands import run_command

from nerf_lab.train import train
from nerf_lab.visuals.panels import LABEL_HEIGHT, MIN_TILE, view_panel
from nerf_lab.training.tensorboard import METRICS, swept_keys, trial_name

METRIC_TAGS = {tag for tag, _ in METRICS}


def events(run_dir: Path) -> EventAccumulator:
    accumulator = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"images": 0, "scalars": 0, "tensors": 0})
    accumulator.Reload()
    return accumulator


def test_a_run_writes_grouped_curves_one_hparams_entry_and_every_view(make_cfg):
    cfg = make_cfg("model.depth=2", "data.val_views=2")
    metrics = train(cfg)
    logged = events(Path(cfg.paths.output_dir))

    scalars = set(logged.Tags()["scalars"])
    assert {"train/loss", "train/psnr", "train/lr", "val/psnr", "val/ssim", "val/psnr_best", "test/psnr_blank_image"} <= scalars
    # Every curve in the train/val/test groups: no `epoch`, no `lr-Adam`, no `hparams/*` copies.
    assert {tag.split("/")[0] for tag in scalars} == {"train", "val", "test"}
    assert [e.step for e in logged.Scalars("train/psnr")] == [2, 5, 8, 11]  # every log_every_n_steps=3
    assert [e.step for e in logged.Scalars("val/psnr")] == [6, 12]

    # Both validation views at each validation, both test views once, at the last step.
    assert set(logged.Tags()["images"]) == {"val/view_0", "val/view_7", "test/view_0", "test/view_1"}
    assert [image.step for image in logged.Images("val/view_7")] == [6, 12]
    assert [image.step for image in logged.Images("test/view_1")] == [12]

    content = logged.PluginTagToContent("hparams")
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    session = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    # The metric columns are tags the run writes, each with the run's final value.
    assert [info.name.tag for info in experiment.metric_infos] == [tag for tag, _ in METRICS]
    assert METRIC_TAGS <= scalars
    assert logged.Scalars("val/psnr_best")[-1].value == pytest.approx(metrics["val/psnr_best"])
    assert logged.Scalars("train/steps_per_s")[-1].value == pytest.approx(metrics["steps_per_s"])
    assert logged.Scalars("train/parameters")[-1].value == metrics["parameters"]
    # The study's knobs, typed: numbers, booleans as booleans, lists as text, precision as used.
    declared = {info.name for info in experiment.hparam_infos}
    assert {"model.depth", "model.width", "model.skips", "model.view_dependent", "encoding.position.n_freqs", "sampling.n_c", "optim.lr", "seed"} <= declared
    assert set(session.hparams) == declared
    assert session.hparams["model.depth"].number_value == 2
    assert session.hparams["model.view_dependent"].WhichOneof("kind") == "bool_value"
    assert session.hparams["model.skips"].string_value == "[]"
    assert session.hparams["trainer.precision"].string_value == "32-true"

    (config,) = logged.Tensors("custom_scalars__config__")
    layout = layout_pb2.Layout.FromString(config.tensor_proto.string_val[0])
    charts = [chart for category in layout.category for chart in category.chart]
    # Each chart's tags are regular expressions: they must pick exactly the curves meant.
    (psnr,) = [chart for chart in charts if "PSNR" in chart.title]
    assert {tag for tag in scalars if any(re.search(pattern, tag) for pattern in psnr.multiline.tag)} == {"train/psnr", "val/psnr"}


def test_the_swept_keys_name_the_trial():
    varied = swept_keys(["model.depth=2,4", "data.resolution=32", "seed=range(0,3)", "model=tiny,original", "paths.output_dir=x,y"])
    assert varied == ["model.depth", "seed", "model"]  # paths say where, not what
    job = ["model.depth=4", "data.resolution=32", "seed=1", "model=original"]
    assert trial_name(varied, job, "07-31-02/5") == "depth=4 seed=1 model=original (07-31-02/5)"
    # Keys that end alike stay whole.
    assert trial_name(["model.depth", "field.depth"], ["model.depth=4", "field.depth=2"], "x/0") == "model.depth=4 field.depth=2 (x/0)"
    assert trial_name([], [], "2026-11-26/07-31-02") == "defaults (2026-11-26/07-31-02)"


def test_a_sweep_job_folder_leads_with_the_swept_keys(tmp_path):
    from nerf_lab.config.resolvers import job_dir_name

    (tmp_path / "multirun.yaml").write_text(
        "hydra:\n  overrides:\n    task: ['data.resolution=64', 'model.skips=[2,3]', 'sampling.n_c=16,32', 'model.depth=2,4']\n"
    )
    dirname = "data.resolution=64,model.depth=2,model.skips=[2,3],sampling.n_c=32"  # Hydra sorts the keys
    assert job_dir_name(3, dirname, str(tmp_path)) == "3_model.depth=2,sampling.n_c=32,data.resolution=64,model.skips=[2,3]"
    assert job_dir_name(3, dirname, str(tmp_path / "elsewhere")) == f"3_{dirname}"  # no record: as Hydra names it


def test_a_view_panel_shows_each_pixel_as_a_sharp_block_under_its_label():
    generator = torch.Generator().manual_seed(0)
    target, prediction = torch.rand(10, 10, 3, generator=generator), torch.rand(10, 10, 3, generator=generator)
    depth, opacity = torch.full((10, 10), 4.0), torch.ones(10, 10)
    panel = view_panel(target, prediction, depth, opacity, near=2.0, far=6.0)
    scale = -(-MIN_TILE // 10)  # whole pixels: 26
    tile = panel[LABEL_HEIGHT : LABEL_HEIGHT + 10 * scale, 1 : 1 + 10 * scale]
    expected = (target.numpy() * 255 + 0.5).astype(np.uint8).repeat(scale, axis=0).repeat(scale, axis=1)
    np.testing.assert_array_equal(tile, expected)  # nearest neighbour: no smoothing
    assert (panel[:LABEL_HEIGHT, : 10 * scale] < 128).any()  # a label is written above it
    # Depth 4 is the middle of [2, 6]: the depth tile shows turbo's middle colour.
    depth_top = LABEL_HEIGHT + 10 * scale + LABEL_HEIGHT
    middle = panel[depth_top + 5 * scale, 1 + 5 * scale]
    from matplotlib import colormaps

    np.testing.assert_allclose(middle, np.array(colormaps["turbo"](0.5)[:3]) * 255, atol=1)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _get(url: str, body: dict | None = None) -> object:
    headers = {"Content-Type": "application/json", "X-XSRF-Protected": "1"} if body is not None else {}
    data = json.dumps(body).encode() if body is not None else None
    with urllib.request.urlopen(urllib.request.Request(url, data=data, headers=headers), timeout=10) as response:
        return json.loads(response.read())


@pytest.mark.slow
def test_tensorboard_serves_a_two_job_sweep_as_a_researcher_reads_it(tmp_path, cache_dir):
    overrides = [o for o in FAST_OVERRIDES if not o.startswith("trainer.max_steps")] + ["trainer.max_steps=9", "trainer.val_check_interval=3"]
    result = run_command("nerf_lab.train", "-m", "model.depth=2,4", *overrides, "hydra.sweep.dir=sweep", cwd=tmp_path, cache=cache_dir)
    assert result.returncode == 0, result.stderr[-3000:]

    port = _free_port()
    log = (tmp_path / "tensorboard.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", "--logdir", str(tmp_path / "sweep"), "--host", "127.0.0.1",
         "--port", str(port), "--load_fast", "false", "--reload_interval", "0"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}/data/plugin"
    try:
        deadline, scalar_tags = time.monotonic() + 60, {}
        while time.monotonic() < deadline:  # loaded once at start: wait until both runs are in
            try:
                scalar_tags = _get(f"{base}/scalars/tags")
            except OSError:
                pass
            if len(scalar_tags) == 2 and all("test/psnr" in tags for tags in scalar_tags.values()):
                break
            assert server.poll() is None, (tmp_path / "tensorboard.log").read_text()
            time.sleep(0.5)
        assert len(scalar_tags) == 2, f"TensorBoard did not load both runs within 60 s: {scalar_tags}"

        for run_name, tags in scalar_tags.items():
            assert run_name.split("_", 1)[1].startswith("model.depth=")  # the swept key leads the run's name
            assert {tag.split("/")[0] for tag in tags} == {"train", "val", "test"}
            assert {"train/lr", "train/psnr", "val/psnr", "test/psnr_blank_image"} <= set(tags)
            points = _get(f"{base}/scalars/scalars?run={urllib.parse.quote(run_name)}&tag=val/psnr")
            assert [step for _, step, _ in points] == [3, 6, 9]
            points = _get(f"{base}/scalars/scalars?run={urllib.parse.quote(run_name)}&tag=train/psnr")
            assert [step for _, step, _ in points] == [2, 5, 8]
        image_tags = _get(f"{base}/images/tags")
        assert [set(tags) for tags in image_tags.values()] == [{"val/view_0", "test/view_0", "test/view_1"}] * 2
        for run_name in image_tags:
            shown = _get(f"{base}/images/images?run={urllib.parse.quote(run_name)}&tag=val/view_0")
            assert [image["step"] for image in shown] == [3, 6, 9]

        experiment = _get(f"{base}/hparams/experiment", {"experimentName": ""})
        hparams = [info["name"] for info in experiment["hparamInfos"]]
        assert hparams[0] == "model.depth" and experiment["hparamInfos"][0]["differs"]  # what the sweep varies leads
        assert not any(info["differs"] for info in experiment["hparamInfos"][1:])
        assert {"model", "overrides", "sampling.n_c", "optim.lr", "trainer.precision"} <= set(hparams)
        assert [info["name"]["tag"] for info in experiment["metricInfos"]] == [tag for tag, _ in METRICS]
        groups = _get(
            f"{base}/hparams/session_groups",
            {"experimentName": "", "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"],
             "colParams": [], "startIndex": 0, "sliceSize": 10},
        )["sessionGroups"]
        assert sorted(group["name"] for group in groups) == ["depth=2 (sweep/0)", "depth=4 (sweep/1)"]
        for group in groups:
            assert group["hparams"]["model.depth"] == float(group["name"][len("depth=")])
            assert {value["name"]["tag"] for value in group["metricValues"]} == METRIC_TAGS  # every column filled
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)
        log.close()
