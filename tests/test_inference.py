"""gcc_jax.inference: the peak settings a checkpoint is used with (stored choice taken whole,
config, defaults, the caller's flags), and the evaluate entry point storing / reusing the
chosen threshold."""

import argparse
import json
import logging
import math
import pathlib

import ml_collections
import pytest
from absl import flags

from gcc_jax.evaluate import output_name
from gcc_jax.inference import (
    THRESHOLD_FILE,
    define_peak_flags,
    evaluate_checkpoint,
    given_peak_flags,
    read_threshold_choice,
    resolve_peak_settings,
)
from gcc_jax.localization import DEFAULT_THRESHOLD, PeakSettings
from gcc_jax.models import VGG19Density, save_variables
from gcc_jax.runtime import load_config_module
from gcc_jax.runtime.config import upgrade_saved_config
from random_model import random_variables

SYNTHETIC_CONFIG = pathlib.Path(__file__).resolve().parents[1] / "configs" / "synthetic.py"


def _config(**localization):
    config = load_config_module(SYNTHETIC_CONFIG).get_config()
    config.localization.update(localization)
    return config


def _store(folder: pathlib.Path, **choice) -> str:
    folder.mkdir()
    (folder / THRESHOLD_FILE).write_text(json.dumps({"split": "val", "step": 9, **choice}))
    return str(folder)


def test_peak_settings_without_a_stored_choice_come_from_the_config_else_the_defaults(tmp_path):
    assert resolve_peak_settings(str(tmp_path)) == (PeakSettings(), "default")
    assert PeakSettings().threshold == DEFAULT_THRESHOLD
    config = _config(threshold=0.2, pixel_offset=4.0, one_per_plateau=True)
    assert resolve_peak_settings(str(tmp_path), config=config) == (PeakSettings(0.2, 4.0, True), "config")
    given = resolve_peak_settings(str(tmp_path), config=config, given={"threshold": 0.3, "pixel_offset": None})
    assert given == (PeakSettings(0.3, 4.0, True), "argument")
    with pytest.raises(ValueError, match="window: not a peak setting"):
        resolve_peak_settings(str(tmp_path), given={"window": 5})
    with pytest.raises(ValueError, match="threshold"):
        resolve_peak_settings(str(tmp_path), given={"threshold": -1.0})


@pytest.mark.parametrize("stored_rule", [True, False])
def test_a_stored_threshold_comes_with_the_detector_it_was_chosen_for(tmp_path, caplog, stored_rule):
    # The config says the other detector: absent flags take the stored choice whole, never the
    # stored threshold with the config's plateau rule or offset.
    config = _config(threshold=0.2, pixel_offset=0.0, one_per_plateau=not stored_rule)
    stored = _store(tmp_path / "model", threshold=0.07, pixel_offset=1.0, one_per_plateau=stored_rule)
    peaks = resolve_peak_settings(stored, config=config, step=9)
    assert peaks == (PeakSettings(0.07, 1.0, stored_rule), "chosen on val (step 9)")
    assert not caplog.records
    # A given setting replaces the stored one; the others stay the stored choice's.
    assert resolve_peak_settings(stored, config=config, given={"threshold": 0.3}, step=9) == (
        PeakSettings(0.3, 1.0, stored_rule), "argument"
    )
    # Asking for the other detector with the stored threshold is done, and said.
    with caplog.at_level(logging.WARNING, logger="gcc_jax.inference"):
        other = resolve_peak_settings(stored, config=config, given={"one_per_plateau": not stored_rule}, step=9)
    assert other.settings == PeakSettings(0.07, 1.0, not stored_rule)
    assert f"chosen with one_per_plateau={stored_rule}" in caplog.text
    # While a new threshold is chosen the stored one is not read.
    assert resolve_peak_settings(stored, config=config, use_stored=False).settings == PeakSettings(0.2, 0.0, not stored_rule)


def test_a_choice_stored_before_its_detector_was_recorded_keeps_the_configs(tmp_path):
    stored = _store(tmp_path / "model", threshold=0.07)
    peaks = resolve_peak_settings(stored, config=_config(pixel_offset=4.0, one_per_plateau=True), step=9)
    assert peaks.settings == PeakSettings(0.07, 4.0, True)


def test_a_config_saved_before_the_localization_block_gets_its_defaults(tmp_path):
    saved = load_config_module(SYNTHETIC_CONFIG).get_config().to_dict()
    del saved["localization"]
    upgraded = ml_collections.ConfigDict(upgrade_saved_config(saved))
    assert upgraded.localization.to_dict() == {
        "enabled": True, "threshold": 0.05, "radii": [4.0, 8.0], "choose_on": "auto", "pixel_offset": 0.0,
        "one_per_plateau": False,
    }  # fmt: skip
    assert resolve_peak_settings(str(tmp_path), config=upgraded) == (PeakSettings(), "config")
    # A block saved without the newer fields keeps its own values and gets the others.
    saved["localization"] = {"enabled": False, "threshold": 0.1}
    block = upgrade_saved_config(saved)["localization"]
    assert (block["enabled"], block["threshold"], block["one_per_plateau"]) == (False, 0.1, False)


def test_peak_flags_are_absent_unless_given_in_argparse_and_absl():
    parser = argparse.ArgumentParser()
    define_peak_flags(parser)
    assert given_peak_flags(parser.parse_args([])) == {}
    assert given_peak_flags(parser.parse_args(["--no-one_per_plateau", "--threshold=0.1"])) == {
        "threshold": 0.1, "one_per_plateau": False,
    }  # fmt: skip
    values = flags.FlagValues()
    define_peak_flags(flag_values=values)
    values(["prog"])
    assert given_peak_flags(values) == {}
    values(["prog", "--pixel_offset=4", "--noone_per_plateau"])
    assert given_peak_flags(values) == {"pixel_offset": 4.0, "one_per_plateau": False}


def _tiny_config():
    config = load_config_module(SYNTHETIC_CONFIG).get_config("runlocal")
    config.update_from_flattened_dict(
        {
            "dataset.synthetic.height": 64,
            "dataset.synthetic.width": 64,
            "dataset.synthetic.num_val": 3,
            "dataset.synthetic.num_train": 4,
            "eval_batch_size": 2,
        }
    )
    return config


def test_evaluate_entry_point_chooses_stores_and_reuses_the_threshold(tmp_path):
    config = _tiny_config()
    variables = random_variables(VGG19Density(width=1 / 16), bias_scale=0.0, output_scale=0.02)
    model_dir = tmp_path / "model"
    save_variables(model_dir, variables, {"width": 1 / 16})

    chosen = evaluate_checkpoint(config, checkpoint=str(model_dir), split="val", choose_threshold=True)
    stored = read_threshold_choice(str(model_dir))
    assert stored == json.loads((model_dir / THRESHOLD_FILE).read_text())
    assert stored["threshold"] == chosen["loc/threshold"] == chosen["chosen_threshold"]["threshold"]
    assert stored["setting"] == "r8" and stored["split"] == "val" and stored["step"] is None
    assert (stored["pixel_offset"], stored["one_per_plateau"]) == (0.0, False)  # the config's detector
    assert chosen["loc/f1_r8"] == pytest.approx(stored["f1"]) == pytest.approx(max(stored["f1_all"]))
    assert stored["f1"] > 0
    for name in ("mae", "loc/precision_r4", "loc/recall_r4", "loc/f1_r4", "loc/f1_r8"):
        assert math.isfinite(chosen[name])

    # Later evaluations use the stored threshold; an explicit one wins.
    again = evaluate_checkpoint(config, checkpoint=str(model_dir), split="val")
    assert again["loc/threshold"] == stored["threshold"] and again["loc/f1_r8"] == pytest.approx(stored["f1"])
    explicit = evaluate_checkpoint(config, checkpoint=str(model_dir), split="val", peaks={"threshold": 0.5})
    assert explicit["loc/threshold"] == 0.5
    assert explicit["mae"] == pytest.approx(again["mae"])

    with pytest.raises(ValueError, match="--workdir"):
        evaluate_checkpoint(config, checkpoint="best", split="val", choose_threshold=True)


def test_evaluation_shows_progress_and_names_its_output_plainly(tmp_path, capsys):
    config = _tiny_config()
    variables = random_variables(VGG19Density(width=1 / 16), bias_scale=0.0, output_scale=0.02)
    save_variables(tmp_path / "model", variables, {"width": 1 / 16})
    evaluate_checkpoint(config, checkpoint=str(tmp_path / "model"), split="val", progress=True)
    err = capsys.readouterr().err
    assert "evaluating val" in err and f"{config.dataset.synthetic.num_val}/{config.dataset.synthetic.num_val}" in err
    assert output_name("test[:10]", "best") == "eval_test_10_best.json"
    assert output_name("train+val", "latest") == "eval_train+val_latest.json"
    assert output_name("test[50%:]", str(tmp_path / "model")) == "eval_test_50_model.json"
