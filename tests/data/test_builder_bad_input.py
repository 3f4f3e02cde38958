"""Bad raw input fails naming the file and the problem, or is skipped with a recorded warning."""

import numpy as np
import pytest
import scipy.io
import tensorflow_datasets as tfds
from raw_layouts import make_qnrf_raw, make_shanghaitech_raw, write_ann_mat

from gcc_jax.data import BadExampleError, build_dataset
from gcc_jax.data.build import main as build_main


def corrupt_image(path):
    path.write_bytes(b"this is not a JPEG file at all")


def truncate_image(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def empty_file(path):
    path.write_bytes(b"")


@pytest.mark.parametrize(
    "damage, problem",
    [(corrupt_image, "cannot decode image"), (truncate_image, "cannot decode image"), (empty_file, "image file is empty")],
)
def test_unreadable_image(tmp_path, damage, problem, warnings_log):
    make_qnrf_raw(tmp_path / "raw")
    damage(tmp_path / "raw/Train/img_0007.jpg")
    with pytest.raises(BadExampleError, match=rf"img_0007\.jpg: {problem}"):
        build_dataset("ucf_qnrf", manual_dir=tmp_path / "raw", data_dir=tmp_path / "a")
    builder = build_dataset("ucf_qnrf", manual_dir=tmp_path / "raw", data_dir=tmp_path / "b", on_bad_example="skip")
    assert builder.info.splits["val"].num_examples == 1 and builder.info.splits["train"].num_examples == 1
    (entry,) = builder.info.metadata["skipped"]
    assert entry["split"] == "val" and entry["file"].endswith("img_0007.jpg") and problem in entry["problem"]
    assert "Skipping a bad val example" in warnings_log.text


@pytest.mark.parametrize(
    "write, problem",
    [
        (lambda p: p.write_bytes(b""), "annotation file is empty"),
        (lambda p: p.write_bytes(b"MATLAB? no, random bytes" * 10), "cannot read the .mat file"),
        (lambda p: scipy.io.savemat(p, {"points": np.zeros([2, 2])}), "no 'annPoints' variable"),
        (lambda p: scipy.io.savemat(p, {"annPoints": np.zeros([3, 1])}), r"must be an \[m, 2\] array"),
        (lambda p: write_ann_mat(p, [[1.0, np.nan]]), "NaN or inf"),
        (lambda p: p.unlink(), "annotation file img_0001_ann.mat is missing"),
    ],
)
def test_bad_qnrf_annotation(tmp_path, write, problem):
    make_qnrf_raw(tmp_path / "raw")
    write(tmp_path / "raw/Test/img_0001_ann.mat")
    with pytest.raises(BadExampleError, match=rf"img_0001(_ann\.mat|\.jpg): .*{problem}"):
        build_dataset("ucf_qnrf", manual_dir=tmp_path / "raw", data_dir=tmp_path / "tfds")


@pytest.mark.parametrize(
    "write, problem",
    [
        (lambda p: scipy.io.savemat(p, {"annPoints": np.zeros([2, 2])}), "no 'image_info' variable"),
        (lambda p: scipy.io.savemat(p, {"image_info": np.zeros([2, 2])}), "malformed"),
        (lambda p: p.write_bytes(b""), "annotation file is empty"),
    ],
)
def test_bad_shanghaitech_annotation(tmp_path, write, problem):
    make_shanghaitech_raw(tmp_path / "raw")
    write(tmp_path / "raw/part_A/test_data/ground-truth/GT_IMG_1.mat")
    with pytest.raises(BadExampleError, match=rf"GT_IMG_1\.mat: .*{problem}"):
        build_dataset("shanghaitech/part_a", manual_dir=tmp_path / "raw", data_dir=tmp_path / "tfds")


def test_annotation_without_image(tmp_path):
    make_shanghaitech_raw(tmp_path / "raw")
    (tmp_path / "raw/part_A/train_data/images/IMG_3.jpg").unlink()
    with pytest.raises(BadExampleError, match=r"GT_IMG_3\.mat: image IMG_3\.jpg is missing"):
        build_dataset("shanghaitech/part_a", manual_dir=tmp_path / "raw", data_dir=tmp_path / "tfds")


def test_bad_policy_values_are_rejected(tmp_path):
    make_qnrf_raw(tmp_path / "raw")
    with pytest.raises(ValueError, match="on_bad_example"):
        build_dataset("ucf_qnrf", manual_dir=tmp_path / "raw", data_dir=tmp_path / "a", on_bad_example="ignore")
    with pytest.raises(ValueError, match="out_of_image"):
        build_dataset("ucf_qnrf", manual_dir=tmp_path / "raw", data_dir=tmp_path / "a", out_of_image="wrap")


def test_bad_example_message_says_how_to_skip(tmp_path):
    make_qnrf_raw(tmp_path / "raw")
    corrupt_image(tmp_path / "raw/Train/img_0007.jpg")
    with pytest.raises(BadExampleError, match=r"img_0007\.jpg: cannot decode image.*--on_bad_example skip"):
        build_dataset("ucf_qnrf", manual_dir=tmp_path / "raw", data_dir=tmp_path / "tfds")


def _num_examples(data_dir):
    builder = tfds.builder("ucf_qnrf", data_dir=data_dir)
    return {split: info.num_examples for split, info in builder.info.splits.items()}


def test_overwrite_rebuilds_from_changed_raw_files_and_a_failed_rebuild_keeps_the_old(tmp_path):
    make_qnrf_raw(tmp_path / "raw")
    tfds_dir = tmp_path / "tfds"
    build_dataset("ucf_qnrf", manual_dir=tmp_path / "raw", data_dir=tfds_dir)
    assert _num_examples(tfds_dir) == {"train": 1, "val": 2, "test": 1}
    for name in ("img_0012.jpg", "img_0012_ann.mat"):  # a val image removed from the raw files
        (tmp_path / "raw/Train" / name).unlink()
    build_dataset("ucf_qnrf", manual_dir=tmp_path / "raw", data_dir=tfds_dir)
    assert _num_examples(tfds_dir)["val"] == 2  # prepared data are kept unless asked
    build_dataset("ucf_qnrf", manual_dir=tmp_path / "raw", data_dir=tfds_dir, overwrite=True)
    assert _num_examples(tfds_dir) == {"train": 1, "val": 1, "test": 1}
    assert len(list(tfds.data_source("ucf_qnrf", split="val", data_dir=tfds_dir))) == 1

    corrupt_image(tmp_path / "raw/Test/img_0001.jpg")
    with pytest.raises(BadExampleError, match="img_0001.jpg"):
        build_dataset("ucf_qnrf", manual_dir=tmp_path / "raw", data_dir=tfds_dir, overwrite=True)
    assert _num_examples(tfds_dir) == {"train": 1, "val": 1, "test": 1}  # the old copy, intact
    assert len(list(tfds.data_source("ucf_qnrf", split="test", data_dir=tfds_dir))) == 1
    assert sorted(p.name for p in (tfds_dir / "ucf_qnrf").iterdir()) == ["1.0.0"]  # no leftovers


def test_build_command_fails_in_one_line_and_documents_its_options(tmp_path, capsys):
    make_qnrf_raw(tmp_path / "raw")
    corrupt_image(tmp_path / "raw/Train/img_0007.jpg")
    args = ["--dataset", "ucf_qnrf", "--manual_dir", str(tmp_path / "raw"), "--data_dir", str(tmp_path / "tfds")]
    assert build_main(args) == 1
    err = capsys.readouterr().err  # also holds TFDS's progress bars
    (line,) = [line for line in err.splitlines() if line.startswith("error: ")]
    assert "img_0007.jpg: cannot decode image" in line
    assert "--on_bad_example skip" in err and "Traceback" not in err
    assert build_main([*args, "--on_bad_example", "skip"]) == 0
    with pytest.raises(SystemExit):
        build_main(["--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "'skip' leaves that example out" in help_text and "'clip' onto the border" in help_text
    assert "--overwrite" in help_text
