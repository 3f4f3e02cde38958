"""Predictor: counts = density sums, points inside the image and equal to the whole-map peaks,
buckets without recompilation, tiles equal to the whole image, the peak settings of a workdir."""

import contextlib
import json
import pathlib

import jax
import numpy as np
import pytest
from PIL import Image

from gcc_jax.inference import THRESHOLD_FILE
from gcc_jax.imagenet import normalize_images
from gcc_jax.localization import PeakSettings, density_to_point_list
from gcc_jax.models import output_shape
from gcc_jax.predict import Predictor, count, load_image
from tolerances import vgg_rtol

REPO = pathlib.Path(__file__).resolve().parents[2]
# The event JAX records for every backend compilation (jax._src.dispatch.BACKEND_COMPILE_EVENT).
_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


@contextlib.contextmanager
def count_compilations():
    """Counts XLA compilations of anything in the block."""
    events = []

    def listener(name, *args, **kwargs):
        if name == _COMPILE_EVENT:
            events.append(name)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield events
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


def _sorted(points):
    points = np.asarray(points, np.float64).reshape(-1, 2)
    return points[np.lexsort((points[:, 0], points[:, 1]))]


def _check(prediction, h, w, threshold, one_per_plateau=False):
    assert prediction.image_hw == (h, w)
    assert prediction.density.shape == output_shape(h, w)
    assert prediction.count == float(prediction.density.sum(dtype=np.float64))  # the same float64 sum
    points = prediction.points
    assert len(points) == len(prediction.scores) > 0
    assert (points >= 0).all() and (points[:, 0] <= w - 1).all() and (points[:, 1] <= h - 1).all()
    assert (np.diff(prediction.scores) <= 0).all()  # by decreasing score
    # The windowed peak search finds exactly the peaks of the whole map.
    whole = density_to_point_list(
        prediction.density, stride=8, threshold=threshold, image_hw=(h, w), one_per_plateau=one_per_plateau
    )[0]
    np.testing.assert_array_equal(_sorted(points), _sorted(whole))


def test_real_images_in_one_bucket_compile_once(model_dir, tiny_model, sample_images):
    predictor = Predictor.from_checkpoint(model_dir, threshold=0.02)
    assert predictor.step is None and predictor.peaks_source == "argument"
    first = predictor.predict(sample_images["a"])
    assert first.name == "IMG_3" and first.num_tiles == 1
    _check(first, 427, 640, 0.02)
    assert predictor.num_compilations == 2  # the network at 512 x 640, the peak search
    with count_compilations() as compiled:
        second = predictor.predict(sample_images["b"])
    assert compiled == [] and predictor.num_compilations == 2
    _check(second, 480, 640, 0.02)

    # The density is the network's on the image padded with the mean colour to the bucket.
    model, variables = tiny_model
    image = normalize_images(load_image(sample_images["a"]))
    padded = np.pad(image, ((0, 512 - 427), (0, 0), (0, 0)))[None]
    expected = np.asarray(model.apply(variables, padded))[0, : first.density.shape[0]]
    # Another compiled program on the same input: the network's round-off (tolerances.vgg_rtol).
    np.testing.assert_allclose(first.density, expected, rtol=0, atol=vgg_rtol(model.width) * np.abs(expected).max())

    # A greyscale JPEG of another size: RGB, a new bucket.
    grey = predictor.predict(sample_images["grey"])
    _check(grey, 746, 1024, 0.02)
    assert predictor.num_compilations == 4


def test_large_images_are_tiled_and_match_the_whole_image(tiny_model):
    model, variables = tiny_model
    rng = np.random.default_rng(1)
    # Smooth random "images" (a noise field upsampled) so that the density has real peaks.
    def image(h, w):
        coarse = rng.integers(0, 256, (h // 16 + 1, w // 16 + 1, 3), dtype=np.uint8)
        return np.asarray(Image.fromarray(coarse).resize((w, h), Image.BILINEAR))

    big, bigger = image(600, 520), image(700, 610)
    from gcc_jax.runtime.evaluation import local_eval_mesh

    mesh = local_eval_mesh(1)
    # 320 px of overlap leaves 160 px of real context around every core: beyond the network's
    # 142 px receptive-field radius, so the stitched map equals the whole-image one.
    exact = Predictor(model, variables, mesh, peaks=PeakSettings(threshold=0.02), tile_size=512, overlap=320, bucket=128)
    found = exact.predict(big)
    assert found.num_tiles == 4  # 2 x 2 tiles of 512 px
    whole = np.asarray(model.apply(variables, normalize_images(big)[None]))[0]
    # Every core cell sees the same receptive field as in the whole image: the same sums, in
    # another program (tolerances.vgg_rtol).
    np.testing.assert_allclose(found.density, whole, rtol=0, atol=vgg_rtol(model.width) * np.abs(whole).max())
    _check(found, 600, 520, 0.02)

    # Smaller tiles, several per side: one network program and one peak-search program for
    # every image of any size above the tile size.
    peaks = PeakSettings(threshold=0.02, one_per_plateau=True)
    tiled = Predictor(model, variables, mesh, peaks=peaks, tile_size=256, overlap=64, bucket=128)
    small = tiled.predict(big)
    assert small.num_tiles == 9 and tiled.num_compilations == 2
    _check(small, 600, 520, 0.02, one_per_plateau=True)
    # With 32 px of context the cells near the seams differ (a few % of this random model's
    # count); a gap or a doubly counted core would change it by a ninth of the image or more.
    assert small.count == pytest.approx(found.count, rel=0.05)
    with count_compilations() as compiled:
        other = tiled.predict(bigger)
    assert compiled == [] and tiled.num_compilations == 2
    # Rows: origins 0, 192, 384, 448 (the last flush with 704 = 700 padded to 16); columns:
    # 0, 192, 368 (flush with 624).
    assert other.num_tiles == 12
    _check(other, 700, 610, 0.02, one_per_plateau=True)


def test_count_api_takes_paths_and_arrays(model_dir, sample_images):
    array = load_image(sample_images["b"])[:100, :150]
    found = count([sample_images["a"], array], checkpoint=model_dir, threshold=0.03)
    assert [p.name for p in found] == ["IMG_3", "image_1"]
    assert found[1].image_hw == (100, 150) and found[1].density.shape == (13, 19)
    single = count(array, checkpoint=model_dir, threshold=0.03)
    # The same image, model and bucket: the same program, bitwise the same map.
    assert len(single) == 1 and single[0].count == found[1].count


def test_pixel_offset_moves_points_and_keeps_them_inside(tiny_model):
    model, variables = tiny_model
    from gcc_jax.runtime.evaluation import local_eval_mesh

    image = load_image(np.full((64, 80), 128, np.uint8))
    mesh = local_eval_mesh(1)
    plain = Predictor(model, variables, mesh, peaks=PeakSettings(threshold=0.0)).predict(image)
    moved = Predictor(model, variables, mesh, peaks=PeakSettings(threshold=0.0, pixel_offset=5.0)).predict(image)
    np.testing.assert_array_equal(moved.points, np.minimum(plain.points + 5.0, [79, 63]))


def test_bad_arguments(model_dir, tiny_model, tmp_path):
    model, variables = tiny_model
    from gcc_jax.runtime.evaluation import local_eval_mesh

    mesh = local_eval_mesh(1)
    with pytest.raises(ValueError, match="multiple of bucket"):
        Predictor(model, variables, mesh, tile_size=320, bucket=128)
    with pytest.raises(ValueError, match="overlap"):
        Predictor(model, variables, mesh, tile_size=256, overlap=256)
    with pytest.raises(ValueError, match="multiple of 16"):
        Predictor(model, variables, mesh, overlap=100)
    with pytest.raises(ValueError, match="uint8"):
        load_image(np.zeros((8, 8, 3), np.float32))
    with pytest.raises(ValueError, match=r"\[H, W, 3\]"):
        load_image(np.zeros((8, 8, 2), np.uint8))
    with pytest.raises(FileNotFoundError, match="neither a training workdir"):
        Predictor.from_checkpoint(tmp_path)


def test_training_workdir_best_checkpoint_and_stored_threshold(tiny_model, sample_images, tmp_path, caplog):
    from gcc_jax.runtime import RunCheckpoints, load_config_module, save_config

    model, variables = tiny_model
    config = load_config_module(REPO / "configs" / "synthetic.py").get_config()
    config.model.width = 1 / 16
    save_config(config, tmp_path)
    checkpoints = RunCheckpoints(tmp_path)
    checkpoints.save_best_if_better(7, variables["params"], {"mae": 1.0})
    checkpoints.close()
    (tmp_path / THRESHOLD_FILE).write_text(json.dumps({"threshold": 0.04, "split": "val", "step": 6}))

    with caplog.at_level("WARNING"):
        predictor = Predictor.from_checkpoint(tmp_path)
    # A choice stored without its detector keeps the config's (every plateau pixel).
    assert predictor.step == 7 and predictor.peaks == PeakSettings(threshold=0.04)
    assert predictor.peaks_source == "chosen on val (step 6)" and "step 6" in caplog.text
    # GL's head (nearest upsampling, abs): the same network as the model directory's.
    found = predictor.predict(sample_images["b"])
    expected = Predictor(model, variables, predictor.mesh, peaks=PeakSettings(threshold=0.04)).predict(sample_images["b"])
    # The same parameters restored from two places, the same program: bitwise equal.
    np.testing.assert_array_equal(found.density, expected.density)
    np.testing.assert_array_equal(found.points, expected.points)


def _close_pairs(points, radius=1.5):
    distances = np.linalg.norm(points[:, None] - points[None], axis=-1)
    return int(np.sum(np.triu(distances <= radius, k=1)))


def test_one_per_plateau_gives_one_point_per_head(model_dir, sample_images):
    # The bilinear upsampling makes plateaus of equal maxima (along the image borders above
    # all); the reference recipe reports every pixel of one, so one head gets two points. A
    # model directory with nothing stored and no config uses the recipe.
    (single,) = count(sample_images["a"], checkpoint=model_dir, threshold=0.02, one_per_plateau=True)
    (reference,) = count(sample_images["a"], checkpoint=model_dir, threshold=0.02)
    assert _close_pairs(reference.points) > 0
    assert _close_pairs(single.points) == 0
    # The same peaks, each plateau reduced to one of its pixels.
    assert {tuple(p) for p in single.points} < {tuple(p) for p in reference.points}
