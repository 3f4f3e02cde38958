"""Exported models (StableHLO, ONNX, LiteRT) reproduce ``gcc_jax.predict`` on real photos,
each run by its own runtime in a subprocess that never imports gcc_jax."""

import json
import pathlib
import shutil
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gcc_jax.export import export_model
from gcc_jax.export._graph import _peak_map
from gcc_jax.localization import density_to_point_list
from gcc_jax.models import VGG19Density, save_variables
from gcc_jax.predict import Predictor, load_image
from random_model import random_variables
from tolerances import vgg_rtol

WIDTH = 1 / 16

# Each runtime's script: argv = model file, image, output .npz. It fails if gcc_jax was imported.
_LOAD = """
import sys
import numpy as np
from PIL import Image
model_file, image_file, out_file = sys.argv[1:4]
images = np.asarray(Image.open(image_file).convert("RGB"))[None]
"""
_CHECK = """
assert not any(m.startswith("gcc_jax") for m in sys.modules), "gcc_jax was imported"
np.savez(out_file, density=np.asarray(density), count=np.asarray(count), peaks=np.asarray(peaks))
"""
RUNNERS = {
    "stablehlo": """
import jax
exported = jax.export.deserialize(bytearray(open(model_file, "rb").read()))
density, count, peaks = exported.call(images)
""",
    "onnx": """
import onnxruntime as ort
session = ort.InferenceSession(model_file, providers=["CPUExecutionProvider"])
density, count, peaks = session.run(["density", "count", "peaks"], {"images": images})
""",
    "tflite": """
from ai_edge_litert.interpreter import Interpreter
interpreter = Interpreter(model_path=model_file)
runner = interpreter.get_signature_runner()
outputs = runner(images=images)
density, count, peaks = outputs["density"], outputs["count"], outputs["peaks"]
""",
}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    model = VGG19Density(width=WIDTH)
    path = tmp_path_factory.mktemp("export") / "model"
    save_variables(path, random_variables(model, bias_scale=0.0, output_scale=0.02), {"width": WIDTH})
    return path


@pytest.fixture(scope="module")
def photos(data_dir):
    root = data_dir / "shanghaitech_sample"
    return {
        (427, 640): root / "part_A" / "test_data" / "images" / "IMG_3.jpg",
        (768, 1024): root / "part_B" / "test_data" / "images" / "IMG_1.jpg",
    }


def _run_exported(fmt, model_file, image_file, tmp_path):
    script = tmp_path / f"run_{fmt}.py"
    script.write_text(_LOAD + textwrap.dedent(RUNNERS[fmt]) + _CHECK)
    out = tmp_path / f"{fmt}_{image_file.stem}.npz"
    done = subprocess.run(
        [sys.executable, str(script), str(model_file), str(image_file), str(out)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return dict(np.load(out))


def _assert_same_as_predict(result, predictor, image_file):
    image = load_image(image_file)
    expected = predictor.predict(image)
    density = result["density"][0]
    assert density.shape == expected.density.shape
    scale = float(np.abs(expected.density).max())
    np.testing.assert_allclose(density, expected.density, rtol=0, atol=vgg_rtol(WIDTH) * scale)
    np.testing.assert_allclose(result["count"][0], expected.count, rtol=vgg_rtol(WIDTH) * density.size)
    points = np.argwhere(result["peaks"][0] > 0)[:, ::-1]
    assert len(expected.points) > 0
    assert sorted(map(tuple, points.tolist())) == sorted(map(tuple, expected.points.astype(int).tolist()))


@pytest.fixture(scope="module")
def predictor(model_dir):
    # bucket=16: the network's own padding, which the exported graph applies (see README).
    return Predictor.from_checkpoint(model_dir, bucket=16)


def test_stablehlo_equals_predict_on_two_sizes(model_dir, photos, predictor, tmp_path):
    path = export_model(model_dir, tmp_path / "out", format="stablehlo")
    metadata = json.loads((tmp_path / "out" / "metadata.json").read_text())
    assert metadata["inputs"]["images"]["shape"] == ["N", "H", "W", 3]
    assert metadata["threshold"] == predictor.peaks.threshold and metadata["model"]["width"] == WIDTH
    for image_file in photos.values():
        _assert_same_as_predict(_run_exported("stablehlo", path, image_file, tmp_path), predictor, image_file)


@pytest.mark.parametrize("fmt", ["onnx", "tflite"])
def test_fixed_size_formats_equal_predict(fmt, model_dir, photos, predictor, tmp_path):
    pytest.importorskip({"onnx": "jax2onnx", "tflite": "tensorflow"}[fmt])
    pytest.importorskip({"onnx": "onnxruntime", "tflite": "ai_edge_litert"}[fmt])
    size = (427, 640)
    path = export_model(model_dir, tmp_path / "out", format=fmt, size=size)
    metadata = json.loads((tmp_path / "out" / "metadata.json").read_text())
    assert metadata["inputs"]["images"]["shape"] == [1, *size, 3]
    _assert_same_as_predict(_run_exported(fmt, path, photos[size], tmp_path), predictor, photos[size])


def test_fixed_size_formats_need_a_size(model_dir, tmp_path):
    with pytest.raises(ValueError, match="--size"):
        export_model(model_dir, tmp_path, format="tflite")
    with pytest.raises(ValueError, match="format"):
        export_model(model_dir, tmp_path, format="savedmodel")


def _readme_snippets():
    """The README's "Deploy" code blocks, by the runtime they import."""
    readme = (pathlib.Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("## Deploy:", 1)[1].split("\n## ", 1)[0]
    blocks = [block.split("```", 1)[0] for block in section.split("```python\n")[1:]]
    return {fmt: next(b for b in blocks if key in b) for fmt, key in
            (("stablehlo", "jax.export"), ("onnx", "onnxruntime"), ("tflite", "ai_edge_litert"))}


@pytest.mark.parametrize("fmt", ["stablehlo", "onnx", "tflite"])
def test_readme_deploy_snippets_run(fmt, model_dir, photos, predictor, tmp_path):
    """Each README snippet, run as written in a folder holding exported/ and crowd.jpg,
    prints predict's count and number of heads."""
    pytest.importorskip({"stablehlo": "jax", "onnx": "jax2onnx", "tflite": "ai_edge_litert"}[fmt])
    size = (427, 640)
    export_model(model_dir, tmp_path / "exported", format=fmt, size=None if fmt == "stablehlo" else size)
    shutil.copy(photos[size], tmp_path / "crowd.jpg")
    script = tmp_path / "snippet.py"
    check = '\nimport sys\nassert not any(m.startswith("gcc_jax") for m in sys.modules)\n'
    script.write_text(_readme_snippets()[fmt] + check)
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    expected = predictor.predict(photos[size])
    assert done.stdout.strip().splitlines()[-1] == f"{expected.count:.1f} people, {len(expected.points)} heads"


def test_model_exports_with_symbolic_sizes_and_still_checks_concrete_ones():
    model = VGG19Density(width=WIDTH)
    variables = random_variables(model)
    spec = jax.ShapeDtypeStruct(jax.export.symbolic_shape("n, h, w, 3"), np.float32)
    exported = jax.export.export(jax.jit(model.apply))(variables, spec)
    images = np.random.default_rng(0).standard_normal((2, 37, 50, 3)).astype(np.float32)
    np.testing.assert_array_equal(exported.call(variables, images), jax.jit(model.apply)(variables, images))
    with pytest.raises(ValueError, match="height must be a positive integer"):
        model.apply(variables, np.zeros((1, 0, 16, 3), np.float32))


@pytest.mark.parametrize("one_per_plateau", [True, False])
def test_peak_map_follows_density_to_points(one_per_plateau):
    """The in-graph rule gives density_to_points's pixels, on random maps and on plateaus
    (isolated equal cells, which upsample to 2 x 2 blocks of equal values)."""
    rng = np.random.default_rng(1)
    maps = [rng.random((1, 5, 7)).astype(np.float32), np.zeros((1, 6, 4), np.float32)]
    maps[1][0, 2, 1] = maps[1][0, 4, 3] = 0.5
    for density in maps:
        h, w = density.shape[1] * 8 - 5, density.shape[2] * 8 - 3  # images smaller than the map
        found = density_to_point_list(density, threshold=0.05, image_hw=(h, w), one_per_plateau=one_per_plateau)[0]
        peaks = _peak_map(jnp.asarray(density), h, w, threshold=0.05, window=3, one_per_plateau=one_per_plateau)
        mine = np.argwhere(np.asarray(peaks[0]) > 0)[:, ::-1]
        assert sorted(map(tuple, mine.tolist())) == sorted(map(tuple, found.astype(int).tolist()))
        assert len(mine) > 0


def test_command_line_writes_the_file_or_one_error_line(model_dir, tmp_path, capsys):
    from gcc_jax.export.__main__ import main

    assert main(["--checkpoint", str(model_dir), "--out", str(tmp_path / "x"), "--format", "tflite"]) == 1
    assert capsys.readouterr().err.splitlines()[0] == "error: tflite needs the input size: --size HEIGHT WIDTH (pixels)"
    assert main(["--checkpoint", str(tmp_path), "--out", str(tmp_path / "x"), "--format", "stablehlo"]) == 1
    assert "neither a training workdir" in capsys.readouterr().err
    assert main(["--checkpoint", str(model_dir), "--out", str(tmp_path / "y"), "--format", "stablehlo"]) == 0
    assert (tmp_path / "y" / "model.stablehlo").is_file() and (tmp_path / "y" / "metadata.json").is_file()
