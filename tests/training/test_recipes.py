"""Switching the loss switches the training recipe; values a config or the command line set win;
the run saves the resolved values."""

import json
import pathlib

import pytest
from absl import flags
from ml_collections import config_flags

from gcc_jax.training import RECIPE_FIELDS, check_config, loop, resolve_recipe, train_and_evaluate

CONFIG_DIR = pathlib.Path(__file__).resolve().parents[2] / "configs"

# What each official trainer sets, read off its code (train.py / trainer / dataset_cfg.json).
OFFICIAL = {
    "gl": {"optimizer.learning_rate": 1e-5, "optimizer.weight_decay": 1e-5, "optimizer.warmup_epochs": 10,
           "batch_size": 1, "num_epochs": 500, "eval_every_epochs": 5, "dataset.min_size_policy": "pad"},
    "bl": {"optimizer.learning_rate": 1e-5, "optimizer.weight_decay": 1e-4, "optimizer.warmup_epochs": 0,
           "batch_size": 1, "num_epochs": 1000, "eval_every_epochs": 5, "dataset.min_size_policy": "pad"},
    "dm_count": {"optimizer.learning_rate": 1e-5, "optimizer.weight_decay": 1e-4, "optimizer.warmup_epochs": 0,
                 "batch_size": 10, "num_epochs": 1000, "eval_every_epochs": 5,
                 "dataset.min_size_policy": "upscale"},
}  # fmt: skip
OFFICIAL["l2"] = OFFICIAL["gl"]  # no official trainer: GL's recipe


def _parse(config_file, *overrides):
    """The config ``train.py`` would receive from this command line."""
    values = flags.FlagValues()
    argv = ["train.py", f"--config={CONFIG_DIR / config_file}", *overrides]
    config_flags.DEFINE_config_file("config", None, "config", flag_values=values, lock_config=True, sys_argv=argv)
    values(argv)
    return values.config


def _fields(config):
    flat = {}
    for path in RECIPE_FIELDS:
        value = config
        for name in path.split("."):
            value = value[name]
        flat[path] = value
    return flat


@pytest.mark.parametrize("loss", ["gl", "bl", "dm_count", "l2"])
def test_switching_the_loss_switches_the_recipe(loss):
    config = _parse("sha.py", f"--config.loss.name={loss}")
    assert all(value is None for value in _fields(config).values())  # left to the recipe
    resolved = resolve_recipe(config)
    assert _fields(resolved) == OFFICIAL[loss]
    check_config(resolved)
    assert resolved.is_locked and config.optimizer.weight_decay is None  # a copy, still locked
    assert _fields(resolve_recipe(resolved)) == OFFICIAL[loss]  # resolving twice changes nothing


def test_an_explicit_value_wins_over_the_recipe():
    config = _parse(
        "sha.py", "--config.loss.name=bl", "--config.optimizer.learning_rate=1e-6", "--config.batch_size=4"
    )
    resolved = resolve_recipe(config)
    assert resolved.optimizer.learning_rate == 1e-6 and resolved.batch_size == 4
    assert resolved.optimizer.weight_decay == 1e-4 and resolved.num_epochs == 1000  # BL's recipe otherwise


def test_per_dataset_settings():
    assert resolve_recipe(_parse("nwpu.py", "--config.loss.name=dm_count")).eval_every_epochs == 50
    assert resolve_recipe(_parse("nwpu.py")).eval_every_epochs == 5
    # A config file's own choices are explicit values too: synthetic.py trains its narrow
    # random-start network with lr 1e-3 and batch 8 whatever the loss.
    synthetic = resolve_recipe(_parse("synthetic.py", "--config.loss.name=dm_count"))
    assert synthetic.optimizer.learning_rate == 1e-3 and synthetic.batch_size == 8
    assert synthetic.optimizer.weight_decay == 1e-4 and synthetic.dataset.min_size_policy == "upscale"


def test_check_config_names_unresolved_fields():
    with pytest.raises(ValueError, match="config.optimizer.weight_decay.*resolve_recipe"):
        check_config(_parse("sha.py"))


def test_the_run_saves_the_resolved_recipe(tmp_path, monkeypatch):
    """train_and_evaluate resolves the recipe before it checks and saves the config."""

    class Stop(Exception):
        pass

    def stop(*args, **kwargs):
        raise Stop

    monkeypatch.setattr(loop, "RunCheckpoints", stop)  # the first step after config.json is written
    config = _parse("synthetic.py", "--config.loss.name=bl", "--config.optimizer.warmup_epochs=3")
    with pytest.raises(Stop):
        train_and_evaluate(config, tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["loss"]["name"] == "bl"
    assert saved["optimizer"]["weight_decay"] == 1e-4 and saved["optimizer"]["warmup_epochs"] == 3
    assert saved["num_epochs"] == 10 and saved["dataset"]["min_size_policy"] == "pad"
