"""Per-image evaluation results: CSV rows from known density maps and head positions, the
localization pictures' marks at known pixels, and ``python -m gcc_jax.evaluate`` writing both."""

import csv
import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from gcc_jax.image_results import ImageResults
from gcc_jax.imagenet import denormalize_images
from gcc_jax.localization_pictures import (
    FALSE_POSITIVE_COLOUR,
    MISS_COLOUR,
    TRUE_POSITIVE_COLOUR,
    localization_picture,
)
from gcc_jax.localization import PeakSettings
from gcc_jax.localization_scoring import ImageMatches, LocalizationOptions
from gcc_jax.metrics import match_points
from gcc_jax.runtime.evaluation import evaluate_records
from known_peaks import blob, peak

REPO = pathlib.Path(__file__).resolve().parents[1]


def _record(name, density, points, *, scale=1.0, count=None):
    h, w = density.shape
    return {
        "density": density,
        "points": np.asarray(points, np.float32).reshape(-1, 2),
        "boxes": None,
        "count": float(len(points)) if count is None else count,
        "image": np.zeros((h * 8, w * 8, 3), np.float32),
        "image_hw": (h * 8, w * 8),
        "scale": scale,
        "scale_xy": (scale, scale),
        "filename": name,
    }


def _known_records():
    """Four images whose rows are known from the geometry alone (radii 4 and 8 original px)."""
    a = blob((8, 8), (1, 2))
    b = blob((8, 10), (4, 4))
    far = [[3.0, 3.0]]
    return [
        # One head 2 px from the only detection: found at both radii. Predicted 2, error +1.
        _record("b/a.jpg", a, [peak(a) + [2.0, 0.0]]),
        # Evaluated at scale 2 (radii 8 and 16 px): a head 12 px away is matched at r8 only;
        # a far head is missed at both. Predicted 2, error 0.
        _record("c.jpg", b, [peak(b) + [0.0, 12.0], *far], scale=2.0),
        # Nothing detected: three misses. Predicted 0, error -3.
        _record("a.jpg", np.zeros((8, 8), np.float32), [[10.0, 10.0], [40.0, 40.0], [50.0, 20.0]]),
        # Unannotated: a predicted count and detections only.
        _record("d.jpg", a, [], count=float("nan")),
    ]


def _read_csv(path):
    with open(path, newline="") as stream:
        return list(csv.DictReader(stream))


def test_rows_hold_the_counts_and_matches_of_each_image(tmp_path):
    options = LocalizationOptions(peaks=PeakSettings(threshold=0.05), radii=(4.0, 8.0))
    results = ImageResults(options, num_worst=2, files=["c.jpg"])
    metrics = evaluate_records(_known_records(), localization=results.localization, on_image=results).metrics
    rows = _read_csv(results.write_csv(tmp_path / "rows.csv"))

    expected = {
        #            true  pred   error   det  r4 (tp, fp, fn)  r8 (tp, fp, fn)
        "a.jpg": ("3", "0.0000", "-3.0000", "0", (0, 0, 3), (0, 0, 3)),
        "b/a.jpg": ("1", "2.0000", "1.0000", "1", (1, 0, 0), (1, 0, 0)),
        "c.jpg": ("2", "2.0000", "0.0000", "1", (0, 1, 2), (1, 0, 1)),
        "d.jpg": ("", "2.0000", "", "1", ("", "", ""), ("", "", "")),
    }
    assert [row["file"] for row in rows] == sorted(expected)  # sorted by file
    assert list(rows[0]) == [
        "file", "true_count", "predicted_count", "error", "detected",
        "tp_r4", "fp_r4", "fn_r4", "tp_r8", "fp_r8", "fn_r8",
    ]  # fmt: skip
    for row in rows:
        true, predicted, error, detected, r4, r8 = expected[row["file"]]
        assert (row["true_count"], row["predicted_count"], row["error"], row["detected"]) == (true, predicted, error, detected)
        assert tuple(row[f"{k}_r4"] for k in ("tp", "fp", "fn")) == tuple(map(str, r4))
        assert tuple(row[f"{k}_r8"] for k in ("tp", "fp", "fn")) == tuple(map(str, r8))

    # The rows add up to the split's metrics (unannotated images are not scored).
    assert metrics["num_images"] == 3
    assert metrics["mae"] == pytest.approx((3 + 1 + 0) / 3, abs=1e-12)
    assert metrics["loc/precision_r8"] == pytest.approx(2 / 2) and metrics["loc/recall_r8"] == pytest.approx(2 / 6)
    assert metrics["loc/precision_r4"] == pytest.approx(1 / 2) and metrics["loc/recall_r4"] == pytest.approx(1 / 6)

    # Worst two by absolute count error (ties by file name), then the chosen one.
    written = results.write_pictures(tmp_path / "pictures")
    assert [path.name for path in written] == ["worst_01_a.png", "worst_02_b_a.png", "c.png"]
    (tmp_path / "pictures" / "worst_09_old.png").write_bytes(b"")
    assert len(ImageResults(None).write_pictures(tmp_path / "pictures")) == 0
    assert sorted(p.name for p in (tmp_path / "pictures").iterdir()) == ["c.png"]  # stale worst_* removed


def test_picture_marks_found_missed_and_false_heads_where_they_are():
    height, width = 64, 80
    record = {
        "image": np.zeros((height, width, 3), np.float32),  # the ImageNet mean colour
        "points": np.asarray([[20.0, 20.0], [60.0, 20.0]], np.float32),  # found, missed
        "count": 2.0,
        "predicted_count": 1.5,
        "filename": "x.jpg",
    }
    detected = np.asarray([[22.0, 20.0], [40.0, 50.0]])  # matches the first head; false
    match = match_points(detected, record["points"], 8.0)
    assert (match.tp, match.fp, match.fn) == (1, 1, 1)
    picture = localization_picture(record, ImageMatches(detected, {"r8": 8.0}, {"r8": match}), setting="r8")
    assert picture.dtype == np.uint8 and picture.shape[0] > height and picture.shape[1] >= width
    background = tuple(denormalize_images(np.zeros(3, np.float32)))

    def colour(x, y):
        return tuple(int(v) for v in picture[y, x])

    # Green circle of the matching radius around the found head, its centre untouched.
    assert TRUE_POSITIVE_COLOUR in {colour(x, 20) for x in range(26, 30)}
    assert TRUE_POSITIVE_COLOUR in {colour(20, y) for y in range(10, 15)}
    assert colour(20, 20) == background
    # Red dot on the missed head; yellow cross on the false detection (centre and arms).
    assert colour(60, 20) == colour(61, 21) == MISS_COLOUR
    assert colour(40, 50) == colour(43, 53) == colour(37, 53) == FALSE_POSITIVE_COLOUR
    assert colour(40, 53) == background  # a cross, not a disc
    # Nothing drawn elsewhere in the image.
    assert colour(70, 60) == colour(5, 40) == background
    with pytest.raises(ValueError, match="sigma_l"):
        localization_picture(record, ImageMatches(detected, {"r8": 8.0}, {"r8": match}), setting="sigma_l")


def test_evaluate_command_writes_rows_and_pictures_beside_its_json(tmp_path):
    from gcc_jax.models import VGG19Density, save_variables
    from random_model import random_variables

    variables = random_variables(VGG19Density(width=1 / 16), bias_scale=0.0, output_scale=0.02)
    save_variables(tmp_path / "model", variables, {"width": 1 / 16})
    output = tmp_path / "eval.json"
    result = subprocess.run(
        [
            sys.executable, "-m", "gcc_jax.evaluate", "--config", f"{REPO / 'configs' / 'synthetic.py'}:runlocal",
            "--checkpoint", str(tmp_path / "model"), "--split", "val", "--output", str(output),
            "--config.dataset.synthetic.num_val=3", "--config.dataset.synthetic.height=64",
            "--config.dataset.synthetic.width=96", "--num_pictures=2", "--noprogress",
        ],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads(output.read_text())
    rows = _read_csv(tmp_path / "eval_images.csv")
    assert len(rows) == metrics["num_images"] == 3
    errors = np.asarray([float(row["error"]) for row in rows])
    # The CSV rounds each error to 4 decimals.
    assert np.abs(errors).mean() == pytest.approx(metrics["mae"], abs=5e-5)
    for setting in ("r4", "r8"):
        tp, fp, fn = (sum(int(row[f"{k}_{setting}"]) for row in rows) for k in ("tp", "fp", "fn"))
        assert tp + fp == sum(int(row["detected"]) for row in rows)
        assert metrics[f"loc/precision_{setting}"] == pytest.approx(tp / (tp + fp) if tp + fp else 0.0)
        assert metrics[f"loc/recall_{setting}"] == pytest.approx(tp / (tp + fn))
    worst = sorted(rows, key=lambda row: (-abs(float(row["error"])), row["file"]))[:2]
    pictures = sorted((tmp_path / "eval_pictures").iterdir())
    assert [p.name for p in pictures] == [
        f"worst_{k:02d}_{pathlib.Path(row['file']).stem}.png" for k, row in enumerate(worst, 1)
    ]
    for path in pictures:
        with Image.open(path) as picture:
            assert picture.size[0] >= 96 and picture.size[1] > 64
    assert "per-image results (3 images)" in result.stderr and "2 pictures" in result.stderr


def test_evaluate_command_refuses_conflicting_options_before_any_work(tmp_path):
    from types import SimpleNamespace

    from gcc_jax import evaluate
    from gcc_jax.runtime import load_config_module

    config = load_config_module(REPO / "configs" / "synthetic.py").get_config("runlocal")
    flags_ = SimpleNamespace(config=config, workdir=None, folder=str(tmp_path), split="test", num_pictures=1)
    with pytest.raises(ValueError, match="--split and --folder exclude each other"):
        evaluate._evaluate_command(["evaluate"], flags_)
    flags_.num_pictures = -1
    with pytest.raises(ValueError, match="--num_pictures must be >= 0"):
        evaluate._evaluate_command(["evaluate"], flags_)
