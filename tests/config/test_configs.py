"""Every option of every config group composes and builds; bad values fail with the key named."""

import pytest
import pytorch_lightning as pl
from hydra.utils import instantiate

from nerf_lab.cli import unknown_option_error
from nerf_lab.errors import ConfigError
from nerf_lab.config.build import build_datamodule, build_module, validate_config
from nerf_lab.config.compose import CONF_DIR
from nerf_lab.nerf.ray_samplers import OccupancyGridSampler, StratifiedSampler

GROUPS = ["data", "model", "encoding", "sampling", "optim", "module", "trainer", "logger", "callbacks", "experiment"]


def options(group: str) -> list[str]:
    return sorted(path.stem for path in (CONF_DIR / group).glob("*.yaml"))


@pytest.mark.parametrize(("group", "option"), [(g, o) for g in GROUPS for o in options(g)])
def test_every_option_composes_validates_and_builds(make_cfg, group, option):
    cfg = make_cfg(f"{group}={option}", fast=False)
    validate_config(cfg)
    module = build_module(cfg)
    assert module.renderer.sampler.n_coarse == cfg.sampling.n_c
    build_datamodule(cfg)
    if cfg.trainer.precision != "auto":
        instantiate(cfg.trainer, logger=False, enable_checkpointing=False)
    instantiate(cfg.logger)
    for callback in cfg.callbacks.values():
        instantiate(callback)


def test_groups_have_the_promised_options():
    assert options("model") == ["ngp", "original", "original_lite", "tiny"]
    assert options("encoding") == ["hashgrid", "none", "pe", "pe_raw", "tiny"]
    assert {"builtin", "blender"} <= set(options("data"))
    assert {"tiny_lego", "paper_lego"} <= set(options("experiment"))


def schedule(module, max_steps: int) -> tuple[str, float, float]:
    """The module's optimizer and the rates it trains with at step 0 and after max_steps."""
    module.trainer = pl.Trainer(max_steps=max_steps, logger=False, enable_checkpointing=False)
    configured = module.configure_optimizers()
    optimizer, scheduler = configured["optimizer"], configured["lr_scheduler"]["scheduler"]
    first = optimizer.param_groups[0]["lr"]
    for _ in range(max_steps):
        optimizer.step()
        scheduler.step()
    return type(optimizer).__name__, first, optimizer.param_groups[0]["lr"]


def widths(model) -> tuple[int, int | None]:
    field = model.coarse_field
    direction = field.direction_encoding
    return field.position_encoding.out_dim, None if direction is None else direction.out_dim


def test_default_builds_tiny_nerf_with_its_short_schedule(make_cfg):
    module = build_module(make_cfg(fast=False))
    model = module.renderer
    assert model.fine_field is None and (model.sampler.n_coarse, model.sampler.n_fine) == (64, 0)
    assert type(model.sampler) is OccupancyGridSampler  # one pass that skips empty space
    assert len(model.coarse_field.trunk) == 4 and model.coarse_field.trunk[0].out_features == 128
    assert widths(model) == (63, None)  # γ(p) at L = 10 plus raw xyz; colour from position only
    name, first, last = schedule(module, max_steps=20)
    assert name == "Adam" and first == 5e-3 and last == pytest.approx(5e-4, rel=1e-6)


def test_model_original_builds_the_papers_network_sampling_and_schedule(make_cfg):
    module = build_module(make_cfg("model=original", fast=False))
    model = module.renderer
    assert model.fine_field is not None and (model.sampler.n_coarse, model.sampler.n_fine) == (64, 128)
    field = model.coarse_field
    assert len(field.trunk) == 8 and field.trunk[0].out_features == 256 and field.view_dependent
    assert field.trunk[5].in_features == 256 + 63  # the skip after layer 4
    # pe_raw: the raw position is added, not the raw direction (the study's arm).
    assert widths(model) == (63, 24)
    # The paper's MLP (63 + 24 inputs, skip at layer 4) has 595,460 weights a network.
    assert sum(p.numel() for p in field.parameters()) == 595_460
    assert sum(p.numel() for p in model.parameters()) == 2 * 595_460
    name, first, last = schedule(module, max_steps=20)
    assert name == "Adam" and first == 5e-4 and last == pytest.approx(5e-5, rel=1e-6)


def test_encoding_pe_is_the_papers_formula_without_raw_inputs(make_cfg):
    assert widths(build_module(make_cfg("model=original", "encoding=pe", fast=False)).renderer) == (60, 24)
    model = build_module(make_cfg("model=original", "encoding.direction.include_input=true", fast=False)).renderer
    assert widths(model) == (63, 27)  # each encoding has its own settings


def test_model_original_lite_is_one_pass_of_128_samples(make_cfg):
    model = build_module(make_cfg("model=original_lite", fast=False)).renderer
    assert model.fine_field is None and model.sampler.n_coarse == 128
    assert len(model.coarse_field.trunk) == 8 and model.coarse_field.trunk[0].out_features == 128


def test_the_command_line_wins_over_a_models_companions(make_cfg):
    assert build_module(make_cfg("model=original", "sampling=coarse", fast=False)).renderer.fine_field is None
    assert build_module(make_cfg("model=original", "sampling.n_f=0", fast=False)).renderer.fine_field is None
    assert schedule(build_module(make_cfg("model=tiny", "optim=adam", fast=False)), 10)[1] == 5e-4
    assert schedule(build_module(make_cfg("model=original", "optim=adam_5e-3", fast=False)), 10)[1] == 5e-3
    assert schedule(build_module(make_cfg("optim.lr=1e-3", "optim.lr_final=1e-5", fast=False)), 10)[1:] == pytest.approx((1e-3, 1e-5))
    model = build_module(make_cfg("model=original", "model.depth=4", "model.skips=[2]", "sampling.n_c=32", fast=False)).renderer
    assert len(model.coarse_field.trunk) == 4 and (model.sampler.n_coarse, model.sampler.n_fine) == (32, 128)


def test_paper_recipe_on_lego(make_cfg):
    """The paper's recipe, its two passes on occupied space by default (256 coarse steps through
    the occupancy grid, 32 fine intervals of their own); sampling=hierarchical is the paper's
    64 + 128 dense samples, and the presets that reproduce the paper or the original study keep them."""
    cfg = make_cfg("experiment=paper_lego", fast=False)
    module, datamodule = build_module(cfg), build_datamodule(cfg)
    sampler = module.renderer.sampler
    assert module.renderer.fine_field is not None and (sampler.n_coarse, sampler.n_fine, sampler.fine_union) == (256, 32, False)
    assert isinstance(sampler, OccupancyGridSampler) and sampler.fine_samples_per_ray == 32
    for overrides in (["experiment=paper_lego", "sampling=hierarchical"], ["experiment=original_800_pe_only"],
                      ["experiment=paper_table2_800"]):
        dense = build_module(make_cfg(*overrides, fast=False)).renderer.sampler
        assert type(dense) is StratifiedSampler and (dense.n_coarse, dense.n_fine, dense.fine_union) == (64, 128, True)
    assert widths(module.renderer) == (63, 24)
    assert (datamodule.batch_rays, datamodule.resolution, datamodule.precrop_steps) == (4096, 800, 500)
    assert schedule(module, max_steps=10)[1:] == pytest.approx((5e-4, 5e-5))


def test_tiny_recipe_on_lego(make_cfg):
    cfg = make_cfg("experiment=tiny_lego", fast=False)
    module, datamodule = build_module(cfg), build_datamodule(cfg)
    assert module.renderer.fine_field is None and module.renderer.sampler.n_coarse == 64
    assert widths(module.renderer) == (39, None)  # L = 6 position bands plus raw xyz
    assert (datamodule.batch_rays, datamodule.resolution) == (1024, 100) and datamodule.scene_dir.endswith("lego")
    assert schedule(module, max_steps=10)[1:] == pytest.approx((5e-3, 5e-4))


@pytest.mark.parametrize("experiment", ["tiny_lego", "ablation_depth", "ablation_encoding", "ablation_lr", "ablation_samples"])
def test_the_studys_presets_sample_densely_as_the_original_study_did(make_cfg, experiment):
    """The default command skips empty space; the Tiny NeRF study's presets keep one dense pass."""
    assert type(build_module(make_cfg(f"experiment={experiment}", fast=False)).renderer.sampler) is StratifiedSampler


def test_trainer_takes_the_arguments_lightning_users_set(make_cfg):
    cfg = make_cfg(
        "trainer.strategy=ddp", "trainer.devices=2", "trainer.accelerator=cpu", "trainer.num_nodes=1",
        "trainer.accumulate_grad_batches=2", "trainer.gradient_clip_val=0.5", "trainer.limit_val_batches=1",
    )
    trainer = instantiate(cfg.trainer, logger=False, enable_checkpointing=False)
    assert type(trainer.strategy).__name__ == "DDPStrategy" and trainer.num_devices == 2
    assert (trainer.accumulate_grad_batches, trainer.gradient_clip_val, trainer.limit_val_batches) == (2, 0.5, 1)


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
        ("data.resolution=10", r"data.resolution=10 is not allowed: expected a positive integer of at least 11"),
        ("data.test_views=0", r"data.test_views=0 is not allowed: expected a positive integer, or null"),
        ("data.ray_sampling=random", r"data.ray_sampling='random' is not allowed: expected one of all_images, one_image"),
        ("data.far=1.0", r"data.far=1.0 is not allowed: expected a depth > near=2.0"),
        ("data.precrop_frac=0.0", r"data.precrop_frac=0.0 is not allowed: expected a fraction in \(0, 1\]"),
    ],
)
def test_bad_values_name_the_key_and_what_is_allowed(make_cfg, override, message):
    with pytest.raises(ConfigError, match=message) as caught:
        validate_config(make_cfg(override))
    assert "\n" not in str(caught.value)


def test_model_ngp_builds_the_papers_small_field_sampling_and_optimiser(make_cfg):
    module = build_module(make_cfg("model=ngp", "encoding=hashgrid", fast=False))
    field, sampler = module.renderer.coarse_field, module.renderer.sampler
    assert module.renderer.fine_field is None
    assert [layer.out_features for layer in field.density_mlp if hasattr(layer, "out_features")] == [64, 16]
    assert [layer.out_features for layer in field.color_mlp if hasattr(layer, "out_features")] == [64, 64, 3]
    assert field.color_mlp[0].in_features == 15 + 24  # geometry features + γ(d) at L = 4
    assert field.density_mlp[0].in_features == field.position_encoding.out_dim == 8 * 2
    assert type(sampler).__name__ == "OccupancyGridSampler" and sampler.n_coarse == 256
    optimizer = module.make_optimizer(module.renderer.parameters())
    assert optimizer.defaults["betas"] == (0.9, 0.99) and optimizer.defaults["eps"] == 1e-15 and optimizer.defaults["lr"] == 1e-2
    assert optimizer.defaults["weight_decay"] == 0


@pytest.mark.parametrize(("model", "encoding"), [("ngp", "pe_raw"), ("tiny", "hashgrid"), ("original", "hashgrid")])
def test_any_encoding_builds_with_any_field(make_cfg, model, encoding):
    module = build_module(make_cfg(f"model={model}", f"encoding={encoding}"))
    assert module.renderer.coarse_field.position_encoding.out_dim == (16 if encoding == "hashgrid" else 63)


def test_a_combination_that_cannot_work_is_refused_naming_the_key(make_cfg):
    with pytest.raises(ConfigError, match=r"^data.scene_box=None is not allowed: expected .*\(the hash grid covers it\)$") as caught:
        validate_config(make_cfg("model=ngp", "encoding=hashgrid", "data.scene_box=null"))
    assert "\n" not in str(caught.value)


def test_the_default_without_a_scene_box_is_refused_naming_the_sampling_that_needs_none(make_cfg):
    with pytest.raises(ConfigError, match=r"^data.scene_box=None is not allowed: .*sampling=coarse needs no box\)$"):
        validate_config(make_cfg("data.scene_box=null"))
    validate_config(make_cfg("data.scene_box=null", "sampling=coarse"))


def test_empty_encoding_is_refused(make_cfg):
    with pytest.raises(ConfigError, match=r"encoding.position.n_freqs=0 is not allowed: expected n_freqs >= 1 or include_input=true"):
        validate_config(make_cfg("encoding=pe", "encoding.position.n_freqs=0"))


def test_unknown_option_lists_the_allowed_ones():
    assert unknown_option_error(["model=huge"]) == (
        "model=huge: no such option in conf/model/; expected one of: ngp, original, original_lite, tiny"
    )
    assert "encoding=fourier" in unknown_option_error(["-m", "encoding=pe,fourier"])
    assert unknown_option_error(["model=original", "model.depth=4", "hydra/launcher=joblib"]) is None


def test_job_folder_names_stay_short_and_unique():
    from nerf_lab.config.resolvers import job_dir_name

    assert job_dir_name(3, "model.depth=2,seed=1") == "3_model.depth=2,seed=1"
    assert job_dir_name(0, "") == "0"
    assert job_dir_name(1, "data.scene_dir=/a/b") == "1_data.scene_dir=_a_b"
    long_a, long_b = job_dir_name(5, "x=" + "a" * 300), job_dir_name(5, "x=" + "a" * 299 + "b")
    assert len(long_a) == 120 and long_a != long_b


def test_a_new_model_is_one_yaml_file_and_gets_the_default_sampling_and_schedule(tmp_path):
    """A model option without a sampling or optim option of its name composes with
    sampling/coarse.yaml and optim/adam.yaml; the models that have them keep theirs."""
    import shutil

    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict

    from nerf_lab.config import resolvers  # noqa: F401 (registers the config's resolvers)
    from nerf_lab.config.build import build_module
    from nerf_lab.config.compose import CONF_DIR

    conf = tmp_path / "conf"
    shutil.copytree(CONF_DIR, conf)
    (conf / "model" / "wide.yaml").write_text(
        "defaults:\n  - tiny\n  - _self_\nwidth: 32\ndepth: 2\n"
    )
    with initialize_config_dir(str(conf), version_base="1.3"):
        cfg = compose("train", overrides=["model=wide", "paths.output_dir=."], return_hydra_config=True)
        tiny = compose("train", overrides=["model=tiny"], return_hydra_config=True)
    assert (cfg.hydra.runtime.choices.sampling, cfg.hydra.runtime.choices.optim) == ("coarse", "adam")
    assert (tiny.hydra.runtime.choices.sampling, tiny.hydra.runtime.choices.optim) == ("tiny", "tiny")
    assert (cfg.sampling.n_c, cfg.sampling.n_f, cfg.optim.lr, cfg.optim.lr_final) == (64, 0, 5.0e-4, 5.0e-5)
    with open_dict(cfg):
        del cfg["hydra"]
    field = build_module(cfg).renderer.coarse_field
    assert len(field.trunk) == 2 and field.trunk[0].out_features == 32


def _leaves(node, prefix=""):
    """{dotted key: value} of a plain config tree."""
    if isinstance(node, dict):
        return {k: v for key, child in node.items() for k, v in _leaves(child, f"{prefix}{key}.").items()}
    return {prefix[:-1]: node}


# The paper's Table 2: each row against the complete model, the keys it changes and to what.
NO_PE = {"encoding.position.n_freqs": 0, "encoding.direction.n_freqs": 0, "encoding.direction.include_input": True}
TABLE2_ROWS = {
    "no_pe": NO_PE,
    "no_view_dependence": {"model.view_dependent": False},
    "no_hierarchical": {"sampling.n_c": 256, "sampling.n_f": 0},
    "no_pe_no_view_no_hierarchical": {**NO_PE, "model.view_dependent": False, "sampling.n_c": 256, "sampling.n_f": 0},
    "images_25": {"data.train_views": 25},
    "images_50": {"data.train_views": 50},
    "l_5": {"encoding.position.n_freqs": 5},
    "l_15": {"encoding.position.n_freqs": 15},
}


@pytest.mark.parametrize("experiment", ["paper_table2", "paper_table2_800"])
def test_table2_rows_change_the_complete_model_in_what_they_name_only(experiment):
    """Every row of experiment=paper_table2 is the complete model (L = 10 and 4 plus the raw
    position, view-dependent colour, 64 + 128 samples, every training image) with only the
    row's own keys changed; and the sweep runs every row over three seeds."""
    from omegaconf import OmegaConf

    from conftest import compose_config

    def leaves(row):
        cfg = compose_config([f"experiment={experiment}", f"table2={row}"])
        return _leaves(OmegaConf.to_container(cfg, resolve=False))

    complete = leaves("complete")
    assert (complete["encoding.position.n_freqs"], complete["encoding.position.include_input"]) == (10, True)
    assert (complete["encoding.direction.n_freqs"], complete["encoding.direction.include_input"]) == (4, False)
    assert complete["model.view_dependent"] is True and complete["data.train_views"] is None
    assert (complete["sampling.n_c"], complete["sampling.n_f"]) == (64, 128)
    for row, changes in TABLE2_ROWS.items():
        config = leaves(row)
        changed = {key: config[key] for key in config if config[key] != complete.get(key)}
        assert changed == changes, row
    params = OmegaConf.load(CONF_DIR / "experiment" / f"{experiment}.yaml").hydra.sweeper.params
    assert sorted(params["table2"].split(",")) == sorted(["complete", *TABLE2_ROWS])
    assert params["seed"] == "0,1,2"
