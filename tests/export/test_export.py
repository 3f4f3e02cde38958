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
from PIL import Image

from gcc_jax.export import export_model
from gcc_jax.export._graph import _peak_map
from gcc_jax.localization import density_to_point_list, upsample_bilinear
from gcc_jax.models import VGG19Density, save_variables
from gcc_jax.predict import Predictor, load_image
from gcc_jax.runtime import RunCheckpoints, create_mesh, create_model, load_workdir_config, save_config
from gcc_jax.training import create_learning_rate_fn, create_optimizer, create_train_state
from random_model import random_variables
from tiny_runs import tiny_config
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


def _assert_same_as_predict(result, predictor, image_file, width=WIDTH):
    image = load_image(image_file)
    expected = predictor.predict(image)
    density = result["density"][0]
    assert density.shape == expected.density.shape
    scale = float(np.abs(expected.density).max())
    np.testing.assert_allclose(density, expected.density, rtol=0, atol=vgg_rtol(width) * scale)
    np.testing.assert_allclose(result["count"][0], expected.count, rtol=vgg_rtol(width) * density.size)
    points = {tuple(p) for p in np.argwhere(result["peaks"][0] > 0)[:, ::-1].tolist()}
    expected_points = {tuple(p) for p in expected.points.astype(int).tolist()}
    assert len(expected_points) > 0
    # The same points, but for a tie within round-off: a pixel whose rule (the maximum of its
    # 3 x 3 neighbourhood, >= threshold) compares values that the two computations may order
    # differently. Each differs by <= atol (the upsampling's weights sum to 1), so a flipped
    # pixel has a neighbour within 2 atol of it or lies within atol of the threshold.
    atol = vgg_rtol(width) * scale
    height, width_px = image.shape[:2]
    values = np.asarray(upsample_bilinear(expected.density[None]))[0, :height, :width_px]
    for x, y in points ^ expected_points:
        window = values[max(y - 1, 0) : y + 2, max(x - 1, 0) : x + 2]
        tie = np.count_nonzero(np.abs(window - values[y, x]) <= 2 * atol) > 1
        assert tie or abs(values[y, x] - predictor.peaks.threshold) <= atol, f"point {(x, y)} differs without a tie"
    assert len(points ^ expected_points) <= len(expected_points) // 20


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


def _needs_runtime(fmt):
    """Skips unless the converter and the runtime of ``fmt`` are installed."""
    pytest.importorskip({"stablehlo": "jax", "onnx": "jax2onnx", "tflite": "tensorflow"}[fmt])
    pytest.importorskip({"stablehlo": "jax", "onnx": "onnxruntime", "tflite": "ai_edge_litert"}[fmt])


def test_onnx_file_takes_any_size_and_equals_predict(model_dir, photos, predictor, tmp_path):
    """One ONNX file, symbolic N, H, W: both photo sizes (neither side a multiple of 16 for the
    smaller one) give predict's density and points."""
    _needs_runtime("onnx")
    path = export_model(model_dir, tmp_path / "out", format="onnx")
    metadata = json.loads((tmp_path / "out" / "metadata.json").read_text())
    assert metadata["inputs"]["images"]["shape"] == ["N", "H", "W", 3]
    for image_file in photos.values():
        _assert_same_as_predict(_run_exported("onnx", path, image_file, tmp_path), predictor, image_file)


@pytest.mark.parametrize("size", [(427, 640), (768, 1024)])
def test_tflite_equals_predict_at_its_size(model_dir, photos, predictor, tmp_path, size):
    _needs_runtime("tflite")
    path = export_model(model_dir, tmp_path / "out", format="tflite", size=size)
    metadata = json.loads((tmp_path / "out" / "metadata.json").read_text())
    assert metadata["inputs"]["images"]["shape"] == [1, *size, 3]
    _assert_same_as_predict(_run_exported("tflite", path, photos[size], tmp_path), predictor, photos[size])


@pytest.fixture(scope="module")
def trained_workdir(tmp_path_factory):
    """A training workdir as a run of the tiny synthetic config leaves it: its config.json and a
    checkpoint at step 2 of its train state, written by the training code. The parameters are
    drawn so that the photos have density peaks (2 real steps leave none, and more cost a
    minute on 2 cores)."""
    workdir = tmp_path_factory.mktemp("trained") / "run"
    config = tiny_config()
    model = create_model(config)
    optimizer = create_optimizer(config.optimizer, create_learning_rate_fn(config.optimizer, 2, 4))
    state = create_train_state(config, model, optimizer, create_mesh(jax.devices()[:1]))
    drawn = random_variables(model, bias_scale=0.0, output_scale=0.02)["params"]
    state = state.replace(params=jax.tree.map(lambda new, old: jax.device_put(new, old.sharding), drawn, state.params))
    save_config(config, workdir)
    checkpoints = RunCheckpoints(workdir)
    checkpoints.save(state, {"step": 2, "epoch": 1, "batch": 0})
    checkpoints.save_best_if_better(2, state.params, {"mae": 3.0, "rmse": 4.0})
    checkpoints.close()
    return workdir


@pytest.mark.parametrize("fmt", ["stablehlo", "onnx", "tflite"])
def test_a_trained_workdir_exports_and_equals_predict(fmt, trained_workdir, photos, tmp_path):
    _needs_runtime(fmt)
    predictor = Predictor.from_checkpoint(trained_workdir, bucket=16)
    width = load_workdir_config(trained_workdir).model.width
    sizes = [(427, 640)] if fmt == "tflite" else list(photos)
    path = export_model(trained_workdir, tmp_path / "out", format=fmt, size=sizes[0] if fmt == "tflite" else None)
    metadata = json.loads((tmp_path / "out" / "metadata.json").read_text())
    assert metadata["training"]["step"] == 2 and metadata["threshold"] == predictor.peaks.threshold
    for size in sizes:
        _assert_same_as_predict(_run_exported(fmt, path, photos[size], tmp_path), predictor, photos[size], width)


@pytest.fixture(scope="module")
def full_width_crops(photos, tmp_path_factory):
    """Two lossless crops of the real photos, 184 x 136 and 200 x 160 pixels (the first not a
    multiple of 16): the full-width network is slow on a CPU at the photos' own sizes."""
    folder = tmp_path_factory.mktemp("crops")
    crops = []
    for (height, width), image_file in zip(((136, 184), (160, 200)), photos.values()):
        crop = folder / f"{image_file.stem}_{width}x{height}.png"
        Image.open(image_file).convert("RGB").crop((0, 0, width, height)).save(crop)
        crops.append(crop)
    return crops


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["stablehlo", "onnx", "tflite"])
def test_a_full_width_model_exports_and_equals_predict(fmt, full_width_crops, tmp_path):
    _needs_runtime(fmt)
    model = VGG19Density(width=1.0)
    model_path = tmp_path / "model"
    save_variables(model_path, random_variables(model, bias_scale=0.0, output_scale=0.02), {"width": 1.0})
    predictor = Predictor.from_checkpoint(model_path, bucket=16)
    crops = full_width_crops[:1] if fmt == "tflite" else full_width_crops
    size = Image.open(crops[0]).size[::-1] if fmt == "tflite" else None
    path = export_model(model_path, tmp_path / "out", format=fmt, size=size)
    for crop in crops:
        _assert_same_as_predict(_run_exported(fmt, path, crop, tmp_path), predictor, crop, width=1.0)


def test_only_tflite_takes_a_size(model_dir, tmp_path):
    with pytest.raises(ValueError, match="--size"):
        export_model(model_dir, tmp_path, format="tflite")
    with pytest.raises(ValueError, match="--size is for tflite only: a onnx file takes any size"):
        export_model(model_dir, tmp_path, format="onnx", size=(64, 64))
    with pytest.raises(ValueError, match="format"):
        export_model(model_dir, tmp_path, format="savedmodel")


@pytest.mark.parametrize("fmt", ["stablehlo", "onnx"])
def test_a_bilinear_head_exports_at_any_size_and_equals_predict(fmt, photos, tmp_path):
    """BL's and DM-Count's head (×2 bilinear, align_corners) at symbolic sizes: one file, both
    photo sizes."""
    _needs_runtime(fmt)
    model = VGG19Density(width=WIDTH, upsample="bilinear")
    model_dir = tmp_path / "bl"
    save_variables(model_dir, random_variables(model, bias_scale=0.0, output_scale=0.02),
                   {"width": WIDTH, "upsample": "bilinear"})  # fmt: skip
    predictor = Predictor.from_checkpoint(model_dir, bucket=16)
    path = export_model(model_dir, tmp_path / "out", format=fmt)
    for image_file in photos.values():
        _assert_same_as_predict(_run_exported(fmt, path, image_file, tmp_path), predictor, image_file)


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
    export_model(model_dir, tmp_path / "exported", format=fmt, size=size if fmt == "tflite" else None)
    shutil.copy(photos[size], tmp_path / "crowd.jpg")
    script = tmp_path / "snippet.py"
    check = '\nimport sys\nassert not any(m.startswith("gcc_jax") for m in sys.modules)\n'
    script.write_text(_readme_snippets()[fmt] + check)
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    expected = predictor.predict(photos[size])
    people, heads = done.stdout.strip().splitlines()[-1].split(" people, ")
    assert heads.endswith(" heads")
    np.testing.assert_allclose(float(people), expected.count, atol=0.05 + vgg_rtol(WIDTH) * expected.count)
    # Which heads differ by a round-off tie is checked point by point above (the same bound).
    assert abs(int(heads.removesuffix(" heads")) - len(expected.points)) <= len(expected.points) // 20


@pytest.mark.parametrize("upsample", ["nearest", "bilinear"])
def test_model_exports_with_symbolic_sizes_and_still_checks_concrete_ones(upsample):
    model = VGG19Density(width=WIDTH, upsample=upsample)
    variables = random_variables(model)
    spec = jax.ShapeDtypeStruct(jax.export.symbolic_shape("n, h, w, 3"), np.float32)
    exported = jax.export.export(jax.jit(model.apply))(variables, spec)
    for shape in [(2, 37, 50, 3), (1, 8, 8, 3)]:  # 8 x 8: a 1 x 1 map, the bilinear head's n = 1
        images = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        found, expected = exported.call(variables, images), jax.jit(model.apply)(variables, images)
        if upsample == "nearest":  # the same operations as at concrete sizes
            np.testing.assert_array_equal(found, expected)
        else:  # the bilinear weights as a matrix product: round-off through the head's convolutions
            scale = float(np.abs(expected).max())
            np.testing.assert_allclose(found, expected, rtol=0, atol=vgg_rtol(WIDTH) * scale)
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
        peak_map = jax.jit(_peak_map, static_argnums=(1, 2), static_argnames=("threshold", "window", "one_per_plateau"))
        peaks = peak_map(jnp.asarray(density), h, w, threshold=0.05, window=3, one_per_plateau=one_per_plateau)
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
