"""Model directories: save_variables / load_variables."""

import json

import jax
import numpy as np
import pytest

from gcc_jax.models import VGG19Density, load_variables, save_variables

NARROW = 1 / 16


def test_round_trip_rebuilds_the_model(tmp_path, random_variables):
    options = {"width": NARROW, "upsample": "bilinear", "output": "relu"}
    model = VGG19Density(**options)
    variables = random_variables(model)
    save_variables(tmp_path / "m", variables, options, metadata={"source": "x.pth", "head": "keep"})

    loaded, loaded_options = load_variables(tmp_path / "m")
    assert loaded_options == options
    for a, b in zip(jax.tree.leaves(variables), jax.tree.leaves(loaded)):
        np.testing.assert_array_equal(a, b)
    images = np.random.default_rng(0).standard_normal((1, 32, 32, 3)).astype(np.float32)
    np.testing.assert_array_equal(model.apply(variables, images), VGG19Density(**loaded_options).apply(loaded, images))
    record = json.loads((tmp_path / "m" / "model.json").read_text())
    assert record["source"] == "x.pth" and record["head"] == "keep"


def test_defaults_are_written_and_existing_model_protected(tmp_path, random_variables):
    variables = random_variables(VGG19Density(width=NARROW))
    save_variables(tmp_path, variables, {"width": NARROW})
    assert load_variables(tmp_path)[1] == {"width": NARROW, "upsample": "nearest", "output": "abs"}
    with pytest.raises(FileExistsError, match="overwrite=True"):
        save_variables(tmp_path, variables, {"width": NARROW})
    save_variables(tmp_path, variables, {"width": NARROW, "output": "relu"}, overwrite=True)
    assert load_variables(tmp_path)[1]["output"] == "relu"


def test_save_refuses_mismatched_variables_and_options(tmp_path, random_variables):
    variables = random_variables(VGG19Density(width=NARROW))
    with pytest.raises(ValueError, match=r"\['features'\]\['conv1_1'\]\['bias'\] has shape \(4,\).*needs \(8,\)"):
        save_variables(tmp_path / "a", variables, {"width": 2 * NARROW})
    with pytest.raises(ValueError, match="unknown option"):
        save_variables(tmp_path / "b", variables, {"width": NARROW, "dtype": "float32"})
    with pytest.raises(ValueError, match="reserved"):
        save_variables(tmp_path / "c", variables, {"width": NARROW}, metadata={"model_options": {}})
    del variables["params"]["head"]["conv3"]
    with pytest.raises(ValueError, match="variables hold 36 arrays"):
        save_variables(tmp_path / "d", variables, {"width": NARROW})


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no model.json"):
        load_variables(tmp_path)
    (tmp_path / "model.json").write_text('{"format": "something else"}')
    with pytest.raises(ValueError, match="not a gcc_jax.VGG19Density record"):
        load_variables(tmp_path)
