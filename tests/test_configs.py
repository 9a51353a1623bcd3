"""Every option of every config group composes and builds; bad values fail with the key named."""

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from nerf_lab.cli import unknown_option_error
from nerf_lab.errors import ConfigError
from nerf_lab.training.config import CONF_DIR, build_datamodule, build_nerf, validate_config

GROUPS = ["data", "model", "encoding", "sampling", "optim", "trainer", "logger", "callbacks", "experiment"]


def options(group: str) -> list[str]:
    return sorted(path.stem for path in (CONF_DIR / group).glob("*.yaml"))


@pytest.mark.parametrize(("group", "option"), [(g, o) for g in GROUPS for o in options(g)])
def test_every_option_composes_validates_and_builds(make_cfg, group, option):
    cfg = make_cfg(f"{group}={option}", fast=False)
    validate_config(cfg)
    model = build_nerf(cfg)
    assert model.n_coarse == cfg.sampling.n_c
    build_datamodule(cfg)
    if cfg.trainer.precision != "auto":
        instantiate(cfg.trainer, logger=False, enable_checkpointing=False)
    instantiate(cfg.logger)
    for callback in cfg.callbacks.values():
        instantiate(callback)


def test_groups_have_the_promised_options():
    assert options("model") == ["original", "original_lite", "tiny"]
    assert options("encoding") == ["pe", "pe_raw"]
    assert {"builtin", "blender"} <= set(options("data"))
    assert {"tiny_lego", "paper_lego"} <= set(options("experiment"))


def test_default_is_tiny_nerf_on_the_builtin_scene(make_cfg):
    cfg = make_cfg(fast=False)
    assert cfg.data._target_.endswith("BuiltinSceneDataModule")
    assert (cfg.model.depth, cfg.model.width, cfg.model.view_dependent) == (4, 128, False)
    assert (cfg.sampling.n_c, cfg.sampling.n_f, cfg.data.batch_rays) == (64, 0, 1024)
    assert (cfg.encoding.position.n_freqs, cfg.encoding.position.include_input) == (10, True)
    assert (cfg.optim.lr, cfg.optim.lr_final) == (5e-3, 5e-4)  # Tiny NeRF's short schedule


def test_each_model_brings_its_schedule_and_the_command_line_wins(make_cfg):
    assert make_cfg("model=original", fast=False).optim.lr == 5e-4  # the paper's
    assert make_cfg("model=original_lite", fast=False).optim.lr == 5e-4
    assert make_cfg("model=tiny", "optim=adam", fast=False).optim.lr == 5e-4
    assert make_cfg("model=original", "optim=adam_5e-3", fast=False).optim.lr == 5e-3


def test_model_original_alone_is_the_papers_network(make_cfg):
    cfg = make_cfg("model=original", fast=False)
    model = build_nerf(cfg)
    assert (cfg.sampling.n_c, cfg.sampling.n_f) == (64, 128)
    assert model.fine_field is not None
    field = model.coarse_field
    assert len(field.trunk) == 8 and field.trunk[0].out_features == 256 and field.view_dependent
    # The paper's MLP (63 + 24 inputs, skip at layer 4) has 595,460 weights a network.
    assert sum(p.numel() for p in field.parameters()) == 595_460
    assert sum(p.numel() for p in model.parameters()) == 2 * 595_460


def test_original_lite_and_command_line_overrides_of_its_sampling(make_cfg):
    lite = make_cfg("model=original_lite", fast=False)
    assert (lite.model.depth, lite.model.width, lite.sampling.n_c, lite.sampling.n_f) == (8, 128, 128, 0)
    assert make_cfg("model=original", "sampling.n_f=0", fast=False).sampling.n_f == 0
    assert make_cfg("model=original", "sampling=coarse", fast=False).sampling.n_f == 0


def test_paper_recipe_on_lego(make_cfg):
    cfg = make_cfg("experiment=paper_lego", fast=False)
    assert cfg.data._target_.endswith(".BlenderDataModule") and cfg.data.scene_dir.endswith("lego")
    assert (cfg.model.depth, cfg.model.width, list(cfg.model.skips)) == (8, 256, [4])
    assert (cfg.sampling.n_c, cfg.sampling.n_f) == (64, 128)
    assert (cfg.data.batch_rays, cfg.data.resolution) == (4096, 800)
    assert (cfg.optim.lr, cfg.optim.lr_final) == (5e-4, 5e-5)


def test_tiny_recipe_on_lego(make_cfg):
    cfg = make_cfg("experiment=tiny_lego", fast=False)
    assert cfg.data.scene_dir.endswith("lego") and cfg.data.resolution == 100
    assert (cfg.model.depth, cfg.model.width, cfg.sampling.n_c, cfg.data.batch_rays) == (4, 128, 64, 1024)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.depth=0", r"model.depth=0 is not allowed: expected an integer >= 1"),
        ("model.width=1", r"model.width=1 is not allowed"),
        ("model.skips=[7]", r"model.skips=\[7\] is not allowed: expected layer indices in \[0, 2\]"),
        ("model.density_activation=tanh", r"expected one of relu, softplus"),
        ("sampling.n_c=-1", r"sampling.n_c=-1 is not allowed: expected an integer >= 1"),
        ("sampling.n_f=-2", r"sampling.n_f=-2 is not allowed"),
        ("sampling.chunk=0", r"sampling.chunk=0 is not allowed"),
        ("encoding.position.n_freqs=-1", r"encoding.position.n_freqs=-1 is not allowed"),
        ("optim.lr=0", r"optim.lr=0 is not allowed: expected a learning rate > 0"),
        ("optim.lr_final=1", r"optim.lr_final=1.* expected at most optim.lr"),
        ("trainer.max_steps=0", r"trainer.max_steps=0 is not allowed"),
        ("trainer.precision=fp8", r"trainer.precision='fp8' is not allowed: expected one of auto, 32-true"),
        ("data.batch_rays=0", r"data.batch_rays=0 is not allowed: expected a positive integer"),
        ("data.resolution=2.5", r"data.resolution=2.5 is not allowed: expected a positive integer"),
        ("data.ray_sampling=random", r"data.ray_sampling='random' is not allowed: expected one of all_images, one_image"),
        ("data.far=1.0", r"data.far=1.0 is not allowed: expected more than data.near=2.0"),
        ("data.precrop_frac=0", r"data.precrop_frac=0 is not allowed"),
    ],
)
def test_bad_values_name_the_key_and_what_is_allowed(make_cfg, override, message):
    with pytest.raises(ConfigError, match=message) as caught:
        validate_config(make_cfg(override))
    assert "\n" not in str(caught.value)


def test_empty_encoding_is_refused(make_cfg):
    with pytest.raises(ConfigError, match="encoding.position.n_freqs=0 with encoding.position.include_input=false"):
        validate_config(make_cfg("encoding=pe", "encoding.position.n_freqs=0"))


def test_unknown_option_lists_the_allowed_ones():
    assert unknown_option_error(["model=huge"]) == (
        "model=huge: no such option in conf/model/; expected one of: original, original_lite, tiny"
    )
    assert "encoding=fourier" in unknown_option_error(["-m", "encoding=pe,fourier"])
    assert unknown_option_error(["model=original", "model.depth=4", "hydra/launcher=joblib"]) is None


def test_job_folder_names_stay_short_and_unique():
    from nerf_lab.cli import job_dir_name

    assert job_dir_name(3, "model.depth=2,seed=1") == "3_model.depth=2,seed=1"
    assert job_dir_name(0, "") == "0"
    assert job_dir_name(1, "data.scene_dir=/a/b") == "1_data.scene_dir=_a_b"
    long_a, long_b = job_dir_name(5, "x=" + "a" * 300), job_dir_name(5, "x=" + "a" * 299 + "b")
    assert len(long_a) == 120 and long_a != long_b
