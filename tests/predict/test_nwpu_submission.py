"""NWPU-Crowd result files: the line formats, original-pixel coordinates, the CLI end to end."""

import pathlib
import subprocess
import sys

import numpy as np
import pytest

from gcc_jax.localization import PeakSettings
from gcc_jax.predict.nwpu_submission import (
    COUNTING_FILE,
    LOCALIZATION_FILE,
    counting_line,
    image_id,
    localization_line,
    to_original_pixels,
    write_submission,
)

REPO = pathlib.Path(__file__).resolve().parents[2]


def test_line_formats():
    # The benchmark's guideline examples.
    assert counting_line("3610", 100) == "3610 100.0000"
    assert counting_line("3611", 2.24564) == "3611 2.2456"
    assert localization_line("3612", np.array([[1, 1], [2, 2], [3, 3]])) == "3612 3 1 1 2 2 3 3"
    assert localization_line("3611", np.zeros((0, 2), np.int64)) == "3611 0"
    with pytest.raises(ValueError, match="integers"):
        localization_line("3610", np.array([[1.5, 2.0]]))
    assert image_id("3610.jpg") == "3610" and image_id("images/0001.jpg") == "0001"
    with pytest.raises(ValueError, match="whitespace"):
        image_id("a b.jpg")


def test_points_back_to_original_pixels():
    # Shrunk by half: x / 0.5, truncated.
    np.testing.assert_array_equal(
        to_original_pixels([[10.0, 20.0], [10.9, 3.2]], (0.5, 0.5), (100, 50)), [[20, 40], [21, 6]]
    )
    # Enlarged twice: 5 / 2 = 2.5 -> 2; 7 / 2 = 3.5 -> 3.
    np.testing.assert_array_equal(to_original_pixels([[5.0, 7.0]], (2.0, 2.0), (100, 100)), [[2, 3]])
    # Anisotropic factors, clipping into the 100 x 200 (w x h) original and at 0.
    np.testing.assert_array_equal(
        to_original_pixels([[49.9, 99.9], [-1.0, 0.0]], (0.5, 0.5), (100, 50)), [[99, 199], [0, 0]]
    )
    np.testing.assert_array_equal(to_original_pixels([[30.0, 30.0]], (0.5, 0.25), (50, 50)), [[60, 120]])


def _blob_density():
    # The density_to_points docstring case: one peak at pixel (x, y) = (20, 12).
    density = np.zeros((5, 5), np.float32)
    density[1, 2], density[1, 3], density[2, 2] = 1.0, 0.5, 0.5
    return density


def test_write_submission_sorted_in_original_pixels(tmp_path):
    records = [
        {"filename": "3611.jpg", "density": _blob_density(), "image_hw": (40, 40), "scale": 0.5, "scale_xy": (0.5, 0.5)},
        {"filename": "3610.jpg", "density": _blob_density(), "image_hw": (40, 40), "scale": 1.0},
        {"filename": "3612.jpg", "density": np.zeros((5, 5), np.float32), "image_hw": (40, 40), "scale": 1.0},
    ]
    counting, localization = write_submission(records, tmp_path, peaks=PeakSettings(threshold=0.05))
    assert counting == tmp_path / COUNTING_FILE and localization == tmp_path / LOCALIZATION_FILE
    assert counting.read_text() == "3610 2.0000\n3611 2.0000\n3612 0.0000\n"
    # (20, 12) in 3610 as it is; in 3611 (resized by 0.5) at (40, 24) of the original.
    assert localization.read_text() == "3610 1 20 12\n3611 1 40 24\n3612 0\n"
    # A pixel offset moves the point before the conversion: (24, 16) / 0.5.
    write_submission(records[:1], tmp_path, peaks=PeakSettings(threshold=0.05, pixel_offset=4.0))
    assert localization.read_text() == "3611 1 48 32\n"
    with pytest.raises(ValueError, match="twice"):
        write_submission(records[:2] + records[:1], tmp_path, peaks=PeakSettings(threshold=0.05))


@pytest.mark.slow  # ~20 s, most of it importing TensorFlow and JAX in the subprocess
def test_command_line_on_a_synthetic_split(model_dir, tmp_path):
    out = tmp_path / "submission"
    args = [
        sys.executable, "-m", "gcc_jax.predict.nwpu_submission",
        f"--config={REPO / 'configs' / 'synthetic.py'}:runlocal", "--config.dataset.synthetic.num_test=3",
        f"--checkpoint={model_dir}", "--split=test", f"--out={out}", "--threshold=0.02",
    ]  # fmt: skip
    result = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    counts = (out / COUNTING_FILE).read_text().splitlines()
    points = (out / LOCALIZATION_FILE).read_text().splitlines()
    assert [line.split()[0] for line in counts] == [f"synthetic_test_{k:05d}" for k in range(3)]
    for count_line, point_line in zip(counts, points):
        fields = point_line.split()
        n = int(fields[1])
        assert len(fields) == 2 + 2 * n and float(count_line.split()[1]) >= 0
        xy = np.asarray(fields[2:], np.int64).reshape(-1, 2)
        assert ((xy >= 0) & (xy < 96)).all()  # runlocal synthetic images are 96 x 96
