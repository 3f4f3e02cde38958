"""Switching the loss switches the training recipe; values a config or the command line set win;
the run saves the resolved values."""

import json
import pathlib
import re

import pytest
from absl import flags
from ml_collections import config_flags

# The reference for the optimizer: the official trainers as benchmarks/official_trainers.py
# runs them (what the parity test checks gcc_jax's training step against).
from benchmarks.official_trainers import OFFICIAL_SETTINGS
from gcc_jax.runtime import RECIPE_FIELDS, check_config, resolve_recipe
from gcc_jax.runtime.recipes import RECIPES, recipe
from gcc_jax.training import loop, train_and_evaluate

CONFIG_DIR = pathlib.Path(__file__).resolve().parents[2] / "configs"

# A setting whose source quotes a command-line flag or a JSON key ("train.py: --lr 1e-5",
# "dataset_cfg.json: val_epoch 5") must hold the value quoted.
_QUOTED = re.compile(r"(?:--[\w-]+|val_epoch) (\S+)$")


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
    wanted = {path: setting.value for path, setting in recipe(loss, config.dataset.name).items()}
    assert _fields(resolved) == wanted
    check_config(resolved)
    assert resolved.is_locked and config.optimizer.weight_decay is None  # a copy, still locked
    assert _fields(resolve_recipe(resolved)) == wanted  # resolving twice changes nothing


@pytest.mark.parametrize("loss", ["gl", "bl", "dm_count"])
def test_the_optimizer_is_the_official_trainers(loss):
    settings = RECIPES[loss]
    assert {name: settings[f"optimizer.{name}"].value for name in OFFICIAL_SETTINGS[loss]} == OFFICIAL_SETTINGS[loss]


def test_l2_trains_with_gls_recipe():
    assert RECIPES["l2"] == RECIPES["gl"]


def test_every_quoted_setting_holds_the_value_it_quotes():
    checked = 0
    for loss in RECIPES:
        for dataset in ("shanghaitech/part_a", "nwpu_crowd"):
            for path, setting in recipe(loss, dataset).items():
                quoted = _QUOTED.search(setting.source)
                if quoted:
                    assert setting.value == type(setting.value)(float(quoted.group(1))), (loss, path, setting)
                    checked += 1
    assert checked >= 30  # lr, weight decay, batch, epochs, eval interval of every loss


def test_only_dm_count_upscales_small_images():
    # DM-Count's datasets/crowd.py resizes an image below the crop up to it; GL's and BL's
    # assert that it is large enough, which gcc_jax turns into padding.
    assert {loss: RECIPES[loss]["dataset.min_size_policy"].value for loss in RECIPES} == {
        "gl": "pad", "bl": "pad", "dm_count": "upscale", "l2": "pad"
    }


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
