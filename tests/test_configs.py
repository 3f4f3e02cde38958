"""Every shipped config loads, checks, shrinks with :runlocal, and rejects unknown overrides."""

import dataclasses
import json
import pathlib

import ml_collections
import pytest
from absl import flags
from ml_collections import config_flags

from gcc_jax import losses
from gcc_jax.data import SyntheticCrowdOptions
from gcc_jax.runtime import check_config, load_config_module, load_workdir_config, resolve_recipe
from gcc_jax.runtime.config import upgrade_saved_config

CONFIG_DIR = pathlib.Path(__file__).resolve().parents[1] / "configs"
CONFIG_FILES = sorted(CONFIG_DIR.glob("*.py"))
# The crops the references use per data set (DM-Count's dataset_cfg.json; GL's default 512).
EXPECTED_CROPS = {"sha": 256, "shb": 512, "qnrf": 512, "nwpu": 384, "jhu": 512}


def _config(path, arg=None):
    return load_config_module(path).get_config(arg)


def test_all_configs_are_there():
    names = {path.stem for path in CONFIG_FILES}
    assert {"default", "synthetic", "sha", "shb", "qnrf", "nwpu", "jhu"} <= names


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: p.stem)
def test_config_loads_and_checks(path):
    config = resolve_recipe(_config(path))
    assert isinstance(config, ml_collections.ConfigDict)
    check_config(config)
    if path.stem in EXPECTED_CROPS:
        assert config.crop_size == EXPECTED_CROPS[path.stem]
        assert config.loss.name == "gl"
        # The data set configs leave the optimiser to the loss's recipe (GL's here).
        assert _config(path).optimizer.learning_rate is None
        assert config.optimizer.learning_rate == 1e-5
        assert config.optimizer.warmup_epochs == 10
        # Every dataset config's docstring gives the command and the paper's numbers.
        doc = load_config_module(path).__doc__
        assert "python train.py --config configs/" + path.name in doc
        assert "MAE" in doc and "RMSE" in doc


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: p.stem)
def test_runlocal_shrinks(path):
    full, small = _config(path), _config(path, "runlocal")
    check_config(resolve_recipe(small))
    assert small.model.width < full.model.width or full.model.width <= small.model.width == 1 / 16
    assert small.crop_size <= full.crop_size and small.crop_size == 64
    assert 0 < small.num_train_steps <= 10
    if small.dataset.name == "synthetic_crowd":
        assert small.dataset.synthetic.num_train <= 8
    else:
        assert small.dataset.train_split.endswith("[:8]") and small.dataset.eval_split.endswith("[:2]")


def test_unknown_config_argument_fails():
    with pytest.raises(ValueError, match="runlocal"):
        _config(CONFIG_DIR / "sha.py", "runlcoal")


def _parse(argv):
    values = flags.FlagValues()
    argv = ["train.py", *argv]
    config_flags.DEFINE_config_file("config", None, "config", flag_values=values, lock_config=True, sys_argv=argv)
    values(argv)
    return values.config


def test_command_line_overrides():
    config = _parse([f"--config={CONFIG_DIR / 'sha.py'}", "--config.batch_size=8", "--config.loss.name=bl"])
    assert config.batch_size == 8 and config.loss.name == "bl" and config.crop_size == 256


def test_unknown_override_fails():
    # ml_collections names the closest existing field in the error.
    with pytest.raises(AttributeError, match="batch_size"):
        _parse([f"--config={CONFIG_DIR / 'sha.py'}", "--config.bacth_size=8"])


def test_runlocal_through_the_flag():
    config = _parse([f"--config={CONFIG_DIR / 'synthetic.py'}:runlocal"])
    assert config.num_train_steps == 4


def test_check_config_names_the_field():
    config = resolve_recipe(_config(CONFIG_DIR / "default.py"))
    config.loss.name = "gll"
    with pytest.raises(ValueError, match="config.loss.name"):
        check_config(config)
    config = resolve_recipe(_config(CONFIG_DIR / "default.py"))
    config.crop_size = 100
    with pytest.raises(ValueError, match="crop_size"):
        check_config(config)
    config = resolve_recipe(_config(CONFIG_DIR / "default.py"))
    config.dataset.loader = "torch"
    with pytest.raises(ValueError, match="config.dataset.loader"):
        check_config(config)


def _defaults(hyper_parameters_type):
    """The hyper-parameter defaults a loss carries, but the stride (the model's, not the loss's)."""
    return {
        field.name: field.default
        for field in dataclasses.fields(hyper_parameters_type)
        if field.default is not dataclasses.MISSING and field.name != "stride"
    }


@pytest.mark.parametrize("name", losses.LOSS_NAMES)
def test_loss_blocks_hold_the_losses_defaults(name):
    """The config's loss blocks are the references' defaults, which the loss functions carry."""
    block = _config(CONFIG_DIR / "default.py").loss[name].to_dict()
    assert block == _defaults(losses.get_loss(name).hyper_parameters_type)


def test_synthetic_block_matches_the_options():
    block = _config(CONFIG_DIR / "default.py").dataset.synthetic.to_dict()
    assert SyntheticCrowdOptions.from_value(block) == SyntheticCrowdOptions()


def test_a_workdir_saved_before_the_schedule_rename_loads(tmp_path):
    """Workdirs written before ``optimizer.decay`` was renamed ``optimizer.schedule`` still load
    (evaluation and prediction read their config.json), with the value under the new name."""
    config = resolve_recipe(_config(CONFIG_DIR / "synthetic.py")).to_dict()
    config["optimizer"]["decay"] = config["optimizer"].pop("schedule")
    (tmp_path / "config.json").write_text(json.dumps(config))
    loaded = load_workdir_config(tmp_path)
    assert loaded.optimizer.schedule == "cosine" and "decay" not in loaded.optimizer
    check_config(loaded)
    upgraded = upgrade_saved_config(config)
    assert upgraded["optimizer"]["schedule"] == "cosine" and "decay" not in upgraded["optimizer"]
    assert config["optimizer"]["decay"] == "cosine"  # the argument is left as it was


def test_a_workdir_saved_before_the_loader_and_the_image_cache_loads(tmp_path):
    """Fields added since a run was saved get the value that run used without them (tf.data,
    no image cache, a constant rate), so code reads every field directly."""
    config = resolve_recipe(_config(CONFIG_DIR / "synthetic.py")).to_dict()
    del config["dataset"]["loader"], config["dataset"]["image_cache_mib"], config["optimizer"]["schedule"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    loaded = load_workdir_config(tmp_path)
    assert (loaded.dataset.loader, loaded.dataset.image_cache_mib, loaded.optimizer.schedule) == ("tf.data", 0, "constant")
    check_config(loaded)
    # A field that is there is kept.
    config["dataset"]["loader"] = "grain"
    assert upgrade_saved_config(config)["dataset"]["loader"] == "grain"
