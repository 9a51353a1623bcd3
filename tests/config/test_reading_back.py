"""Every value a run records can be read back: a key whose default is null and whose recorded
value is a mapping or a list (a normalised run's data.scene_transform, a user's
trainer.max_time={minutes: …}) is taken from the checkpoint with its type checked, for every
command that rebuilds a run from it (eval, render, resume, the report's figures)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from conftest import FAST_OVERRIDES, compose_config
from omegaconf import DictConfig, ListConfig, OmegaConf

from nerf_lab.errors import ConfigError


def _null_keys(node: DictConfig, prefix: str = "") -> set[str]:
    """Dotted keys of `node` whose value is a plain null (not an interpolation)."""
    found: set[str] = set()
    for key in node.keys():
        child = node._get_node(key)
        path = f"{prefix}{key}"
        if isinstance(child, DictConfig):
            found |= _null_keys(child, path + ".")
        elif not isinstance(child, ListConfig) and not child._is_interpolation() and child._value() is None:
            found.add(path)
    return found


def test_every_key_whose_default_is_null_has_a_type_check():
    """Walking the schema (every option of every group): a null default says nothing of the
    key's type, so each such key has a check of its own, which a recorded mapping or list
    passes through when it is read back."""
    from nerf_lab.config.checks import checked_keys
    from nerf_lab.config.compose import GROUPS, compose, options

    checked = checked_keys()
    null_keys: set[str] = set()
    for overrides in [[]] + [[f"{group}={option}"] for group in GROUPS for option in options(group)]:
        cfg = compose("train", overrides)
        null_keys |= {key for key in _null_keys(cfg) if not key.startswith("hydra.")}
    assert {"data.scene_transform", "trainer.max_time"} <= null_keys  # the walk sees them
    assert sorted(null_keys - checked) == []


def _checkpoint(tmp_path: Path, *overrides: str, choices: bool = True) -> dict:
    from nerf_lab.config.build import build_module

    cfg = compose_config([*FAST_OVERRIDES, *overrides], tmp_path / "run")
    hyper = {"config": OmegaConf.to_container(cfg, resolve=True)}
    if choices:
        hyper["choices"] = {"data": "builtin", "model": "tiny", "sampling": "tiny", "optim": "tiny", "encoding": "pe_raw"}
    return {"state_dict": build_module(cfg).state_dict(), "hyper_parameters": hyper}


def _recorded(checkpoint: dict, key: str, value) -> dict:
    changed = copy.deepcopy(checkpoint)
    *parents, leaf = key.split(".")
    node = changed["hyper_parameters"]["config"]
    for parent in parents:
        node = node[parent]
    node[leaf] = value
    return changed


def _save(checkpoint: dict, folder: Path) -> Path:
    path = folder / "recorded.ckpt"
    torch.save(checkpoint, path)
    return path


NORMALISED = {"centre": [2.5, 0.0, -0.25], "scale": 0.5}
READ_BACK = [
    ("data.scene_transform", NORMALISED),
    ("data.scene_box", [[-0.9, -1.0, -1.1], [0.9, 1.0, 1.1]]),  # derived by a normalised run
    ("trainer.max_time", {"minutes": 9}),
    ("data.background_color", [0.5, 0.5, 0.5]),  # a grey backdrop's
]


@pytest.mark.parametrize("choices", [True, False], ids=["choices", "inferred"])
@pytest.mark.parametrize(("key", "value"), READ_BACK)
def test_a_recorded_mapping_or_list_is_read_back(tmp_path, key, value, choices):
    from nerf_lab.runs.checkpoints import load_trained

    trained = load_trained(_save(_recorded(_checkpoint(tmp_path, choices=choices), key, value), tmp_path))
    read = OmegaConf.select(trained.run_config, key)
    assert OmegaConf.to_container(read) == value


def test_a_checkpoint_whose_option_changed_since_is_rebuilt_as_it_trained(tmp_path):
    """`sampling=tiny` was one dense pass before it skipped empty space: a default run of then
    stored that choice with a StratifiedSampler's config, and is rebuilt with that sampler
    (the option its values fit), not refused for naming another class than today's tiny."""
    from nerf_lab.runs.checkpoints import load_trained

    checkpoint = _checkpoint(tmp_path, "sampling=coarse")
    assert checkpoint["hyper_parameters"]["choices"]["sampling"] == "tiny"
    trained = load_trained(_save(checkpoint, tmp_path))
    assert type(trained.module.renderer.sampler).__name__ == "StratifiedSampler"
    assert "grid" not in trained.run_config.sampling
    for name, value in trained.module.state_dict().items():
        torch.testing.assert_close(value, checkpoint["state_dict"][name], msg=name)


def test_a_recorded_transform_reaches_the_data_module(tmp_path):
    from nerf_lab.runs.checkpoints import load_trained

    trained = load_trained(_save(_recorded(_checkpoint(tmp_path), "data.scene_transform", NORMALISED), tmp_path))
    transform = trained.datamodule().scene_geometry()["scene_transform"]
    assert transform.to_config() == NORMALISED


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("data.scene_transform", {"centre": [1.0, 2.0], "scale": 1.0}, "data.scene_transform="),
        ("data.scene_transform", {"centre": [0.0, 0.0, 0.0], "scale": -1.0}, "scale: s > 0"),
        ("data.scene_transform", [1.0, 2.0, 3.0], "data.scene_transform="),
        ("trainer.max_time", {"minutes": "soon"}, "trainer.max_time="),
        ("data.scene_transform", {"centre": [0, 0, 0], "scale": "${oc.env:HOME}"}, "expected a resolved value"),
        ("trainer.gradient_clip_val", {"norm": 1.0}, "trainer.gradient_clip_val={"),
    ],
)
def test_a_recorded_value_of_the_wrong_type_is_refused_in_one_line(tmp_path, key, value, expected):
    from nerf_lab.runs.checkpoints import load_trained

    path = _save(_recorded(_checkpoint(tmp_path), key, value), tmp_path)
    with pytest.raises(ConfigError) as caught:
        load_trained(path)
    message = str(caught.value)
    assert expected in message and str(path) in message and "\n" not in message, message


@pytest.mark.parametrize("stored", [True, False], ids=["choices", "inferred"])
@pytest.mark.parametrize("direction", ["sh", "pe"])
def test_the_direction_encodings_choice_is_stored_and_rebuilt(tmp_path, direction, stored):
    # encoding/direction is a group of its own inside the encoding options: a run's checkpoint
    # stores its choice, and the run is rebuilt with it (the colour layer's width follows:
    # 16 spherical harmonics against 24 values of γ(d), so the weights load only into the
    # right one). A checkpoint without choices (`train(cfg)` outside a Hydra app) has it
    # inferred from the stored tree.
    from hydra import compose, initialize_config_dir

    from nerf_lab.config.compose import CONF_DIR
    from nerf_lab.config.compose import run_choices
    from nerf_lab.nerf.encoding import PositionalEncoding, SphericalHarmonicsEncoding
    from nerf_lab.runs.checkpoints import load_trained

    overrides = ["model.view_dependent=true", f"encoding/direction={direction}"]
    checkpoint = _checkpoint(tmp_path, *overrides, choices=False)
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        checkpoint["hyper_parameters"]["choices"] = run_choices(compose("train", [*FAST_OVERRIDES, *overrides], return_hydra_config=True))
    assert checkpoint["hyper_parameters"]["choices"]["encoding/direction"] == direction
    if not stored:
        del checkpoint["hyper_parameters"]["choices"]
    field = load_trained(_save(checkpoint, tmp_path)).module.renderer.coarse_field
    expected = SphericalHarmonicsEncoding if direction == "sh" else PositionalEncoding
    assert type(field.direction_encoding) is expected
    assert field.direction_encoding.out_dim == (16 if direction == "sh" else 24)
