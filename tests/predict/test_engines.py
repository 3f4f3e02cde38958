"""Predict's engines: ONNX Runtime gives jax.jit's density (within float32 round-off) and the
same head points, through the Predictor and the command line; unknown or missing engines fail
in one line."""

import json

import numpy as np
import pytest

from gcc_jax.localization import PeakSettings
from gcc_jax.predict import Predictor
from gcc_jax.predict import _engines
from gcc_jax.predict.__main__ import main
from gcc_jax.runtime.evaluation import local_eval_mesh
from tolerances import sum_rtol, vgg_rtol

WIDTH = 1 / 16


def _count_allowance(expected):
    """The count sums the map: each cell's allowance, plus the sum's own reordering."""
    cells = expected.density.size
    return vgg_rtol(WIDTH) * float(np.abs(expected.density).max()) * cells + sum_rtol(cells) * abs(expected.count)


def _assert_same_prediction(found, expected):
    assert found.density.shape == expected.density.shape
    scale = float(np.abs(expected.density).max())
    np.testing.assert_allclose(found.density, expected.density, rtol=0, atol=vgg_rtol(WIDTH) * scale)
    assert abs(found.count - expected.count) <= _count_allowance(expected)
    assert len(expected.points) > 0
    np.testing.assert_array_equal(found.points, expected.points)


def test_onnxruntime_engine_equals_jax_on_tiles(tiny_model, sample_images):
    """A 427 x 640 photo in 256-pixel tiles: six runs of one tile shape, one ONNX conversion."""
    pytest.importorskip("jax2onnx")
    pytest.importorskip("onnxruntime")
    model, variables = tiny_model
    mesh = local_eval_mesh(1)
    settings = {"tile_size": 256, "overlap": 64, "bucket": 128, "peaks": PeakSettings(threshold=0.05, one_per_plateau=True)}
    on_jax = Predictor(model, variables, mesh, engine="jax", **settings)
    on_ort = Predictor(model, variables, mesh, engine="onnxruntime", **settings)
    expected = on_jax.predict(sample_images["a"])
    found = on_ort.predict(sample_images["a"])
    assert found.num_tiles == expected.num_tiles == 6
    _assert_same_prediction(found, expected)
    assert on_ort.engine == "onnxruntime" and len(on_ort._engine._sessions) == 1


def test_command_line_engine_onnxruntime(model_dir, sample_images, tmp_path, capsys):
    pytest.importorskip("jax2onnx")
    pytest.importorskip("onnxruntime")
    image = sample_images["b"]
    assert main(["--checkpoint", str(model_dir), str(image), "--out", str(tmp_path), "--engine", "onnxruntime"]) == 0
    assert "engine onnxruntime" in capsys.readouterr().out
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["settings"]["engine"] == "onnxruntime"
    expected = Predictor.from_checkpoint(model_dir).predict(image)  # the peak settings the command resolves
    row = summary["images"][0]
    assert abs(row["count"] - expected.count) <= _count_allowance(expected)
    written = np.loadtxt(tmp_path / f"{image.stem}_points.csv", delimiter=",", skiprows=1, ndmin=2)
    assert row["num_points"] == len(expected.points) > 0
    np.testing.assert_array_equal(written[:, :2], expected.points)


def test_unknown_engine_is_named(tiny_model):
    model, variables = tiny_model
    with pytest.raises(ValueError, match="engine must be one of jax, onnxruntime, got 'tensorrt'"):
        Predictor(model, variables, local_eval_mesh(1), engine="tensorrt")


def test_missing_runtime_fails_in_one_line(model_dir, sample_images, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(_engines, "_importable", lambda module: module != "onnxruntime")
    args = ["--checkpoint", str(model_dir), str(sample_images["a"]), "--out", str(tmp_path), "--engine", "onnxruntime"]
    assert main(args) == 1
    error = capsys.readouterr().err.splitlines()[0]
    assert error == "error: --engine onnxruntime needs onnxruntime: pip install 'gcc_jax[export]'"
