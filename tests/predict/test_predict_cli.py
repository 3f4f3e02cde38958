"""python -m gcc_jax.predict: the files per image, the summary, the console table; pictures."""

import csv
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from gcc_jax.inference import THRESHOLD_FILE, given_peak_flags
from gcc_jax.localization import PeakSettings
from gcc_jax.predict import Predictor, density_overlay, expand_inputs, load_image, points_picture
from gcc_jax.predict._run import _parser, main

PER_IMAGE = ("_density.png", "_points.png", "_points.csv", "_points.json")


def test_cli_writes_every_output(model_dir, sample_images, tmp_path, capsys):
    # A folder (with a stray Thumbs.db) and a file of the same stem as one in the folder.
    folder = tmp_path / "inputs"
    folder.mkdir()
    shutil.copy(sample_images["a"], folder / "IMG_3.jpg")
    shutil.copy(sample_images["b"], folder / "000.png")
    (folder / "Thumbs.db").write_bytes(b"not an image")
    duplicate = tmp_path / "other" / "IMG_3.jpg"
    duplicate.parent.mkdir()
    shutil.copy(sample_images["a"], duplicate)
    out = tmp_path / "out"

    assert main([str(folder), str(duplicate), "--checkpoint", str(model_dir), "--out", str(out), "--threshold", "0.03"]) == 0
    rows = json.loads((out / "summary.json").read_text())["images"]

    assert [r["name"] for r in rows] == ["000", "IMG_3", "IMG_3_2"]
    for name in ("000", "IMG_3", "IMG_3_2"):
        for suffix in PER_IMAGE:
            assert (out / f"{name}{suffix}").is_file(), name + suffix
    record = json.loads((out / "IMG_3_points.json").read_text())
    assert (record["height"], record["width"], record["threshold"]) == (427, 640, 0.03)
    assert record["num_points"] == len(record["points"]) == len(record["scores"])
    with open(out / "IMG_3_points.csv") as f:
        table = list(csv.DictReader(f))
    np.testing.assert_allclose([[float(r["x"]), float(r["y"])] for r in table], record["points"], atol=0.006)
    # The same image twice gives the same results.
    assert json.loads((out / "IMG_3_2_points.json").read_text())["points"] == record["points"]
    width, height = Image.open(out / "IMG_3_density.png").size
    assert width == 640 and 427 < height < 427 + 40  # the image below the banner strip

    summary = json.loads((out / "summary.json").read_text())
    assert summary["settings"]["checkpoint"] == str(model_dir)
    assert summary["settings"]["threshold"] == 0.03 and summary["settings"]["num_compilations"] == 2
    assert [r["count"] for r in summary["images"]] == pytest.approx([r["count"] for r in rows])
    assert record["count"] == pytest.approx(rows[1]["count"])
    with open(out / "summary.csv") as f:
        assert [r["name"] for r in csv.DictReader(f)] == ["000", "IMG_3", "IMG_3_2"]

    console = capsys.readouterr().out
    assert "total (3)" in console and "2 compiled program(s) for 3 image(s)" in console
    assert "threshold 0.03 (argument)" in console


def test_inputs_must_exist_and_hold_images(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        expand_inputs([tmp_path / "missing.jpg"])
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="no image or video files"):
        expand_inputs([tmp_path])


def test_pictures_show_density_and_points():
    image = np.full((40, 64, 3), 100, np.uint8)
    density = np.zeros((5, 8), np.float32)
    density[2, 6] = 1.0  # pixels x 48..55, y 16..23
    overlay = density_overlay(image, density)
    strip = overlay.shape[0] - 40  # the banner above the image
    assert overlay.shape[1:] == (64, 3) and strip > 0
    overlay = overlay[strip:]
    # The hot cell is coloured, an empty corner keeps the image's grey.
    assert not np.array_equal(overlay[20, 52], [100, 100, 100])
    np.testing.assert_array_equal(overlay[36, 4], [100, 100, 100])

    marked = points_picture(image, np.array([[30.0, 30.0]]), label="1 head")
    marked = marked[marked.shape[0] - 40 :]
    assert (marked[30 - 4 : 30 + 5, 30 - 4 : 30 + 5] != 100).any()
    np.testing.assert_array_equal(marked[5, 60], [100, 100, 100])
    # Shrunk to max_side, points scaled with the picture.
    big = points_picture(np.full((400, 1000, 3), 100, np.uint8), np.array([[500.0, 200.0]]), max_side=500)
    big = big[big.shape[0] - 200 :]
    assert big.shape == (200, 500, 3)
    assert (big[95:106, 245:256] != 100).any()


def _exif_rotated_jpeg(path, pixels):
    """``pixels`` stored as is, tagged with EXIF orientation 6 (a viewer turns it 90° clockwise)."""
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(pixels).save(path, exif=exif.tobytes())


def test_cli_processes_every_readable_image_and_names_the_others(model_dir, sample_images, tmp_path, capsys):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    Image.open(sample_images["a"]).convert("L").save(inputs / "gray.jpg")
    data = sample_images["a"].read_bytes()
    (inputs / "trunc.jpg").write_bytes(data[: len(data) // 2])
    Image.open(sample_images["b"]).convert("RGBA").save(inputs / "alpha.png")
    (inputs / "notes.jpg").write_text("not an image\n")
    out = tmp_path / "out"
    status = main([str(inputs), "--checkpoint", str(model_dir), "--out", str(out)])

    assert status == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert lines[0].startswith(f"error: {inputs / 'notes.jpg'}: not a readable image")
    assert lines[1].startswith(f"error: {inputs / 'trunc.jpg'}: not a readable image (image file is truncated")
    assert lines[2] == "error: 2 of 4 image(s) could not be processed (see summary.csv)"
    summary = json.loads((out / "summary.json").read_text())
    by_name = {r["name"]: r for r in summary["images"]}
    assert sorted(by_name) == ["alpha", "gray", "notes", "trunc"]  # the summary is written all the same
    assert by_name["alpha"]["error"] == by_name["gray"]["error"] == ""
    assert "truncated" in by_name["trunc"]["error"] and (out / "alpha_points.json").is_file()
    # Nothing stored with the model directory and no config: GL's recipe, every plateau pixel.
    assert summary["settings"]["one_per_plateau"] is False
    with open(out / "summary.csv") as f:
        assert [r["error"] != "" for r in csv.DictReader(f)] == [False, False, True, True]


def test_exif_orientation_is_applied(tmp_path):
    pixels = np.zeros((20, 50, 3), np.uint8)
    pixels[:, :10] = 255  # a white band on the left of the stored grid
    _exif_rotated_jpeg(tmp_path / "phone.jpg", pixels)
    upright = load_image(tmp_path / "phone.jpg")
    assert upright.shape == (50, 20, 3)  # as a viewer shows it: turned 90° clockwise
    assert upright[:10].mean() > 200 and upright[-10:].mean() < 50  # the band is now on top


def test_bad_out_and_checkpoint_fail_in_one_line(model_dir, sample_images, tmp_path, capsys):
    (tmp_path / "taken").write_text("a file")
    assert main([str(sample_images["a"]), "--checkpoint", str(model_dir), "--out", str(tmp_path / "taken")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: --out {tmp_path / 'taken'} is a file") and "Traceback" not in err
    assert main([str(sample_images["a"]), "--checkpoint", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "nowhere" in err.splitlines()[0] and "Traceback" not in err


def test_cli_takes_the_stored_threshold_with_its_detector(model_dir, tmp_path, capsys):
    # evaluate --choose_threshold stored a threshold chosen for every pixel of a plateau (and an
    # offset): without flags predict uses that threshold with that detector, never with the
    # other one; a flag replaces only its own setting.
    chosen = tmp_path / "model"
    shutil.copytree(model_dir, chosen)
    choice = {"threshold": 0.03, "pixel_offset": 2.0, "one_per_plateau": False}
    (chosen / THRESHOLD_FILE).write_text(json.dumps({**choice, "split": "val", "step": None}))
    Image.fromarray(np.full((64, 96, 3), 128, np.uint8)).save(tmp_path / "small.png")
    out = tmp_path / "out"
    assert main([str(tmp_path / "small.png"), "--checkpoint", str(chosen), "--out", str(out)]) == 0
    settings = json.loads((out / "summary.json").read_text())["settings"]
    assert {k: settings[k] for k in choice} == choice
    assert settings["threshold_source"] == "chosen on val (step None)"
    assert "threshold 0.03 (chosen on val (step None))" in capsys.readouterr().out
    flags = given_peak_flags(_parser().parse_args(["x", "--checkpoint=c", "--out=o", "--one_per_plateau"]))
    assert flags == {"one_per_plateau": True}
    assert Predictor.from_checkpoint(chosen, **flags).peaks == PeakSettings(0.03, 2.0, True)
