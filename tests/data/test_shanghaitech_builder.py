"""ShanghaiTech builder: real sample files (with their stray files) and written raw layouts."""

import numpy as np
import pytest
import scipy.io
import tensorflow_datasets as tfds
from PIL import Image
from raw_layouts import SAMPLE_DIR, make_shanghaitech_raw, write_shanghaitech_mat

from gcc_jax.data import LOADERS, BadExampleError, build_dataset, make_eval_dataset, make_train_dataset
from gcc_jax.data.shanghaitech import read_shanghaitech_mat


def records(builder, split):
    source = builder.as_data_source(split=split)
    return {source[i]["image/filename"].decode(): source[i] for i in range(len(source))}


def real_points(part, split, stem):
    mat = scipy.io.loadmat(SAMPLE_DIR / part / f"{split}_data" / "ground-truth" / f"GT_{stem}.mat")
    return mat["image_info"][0, 0][0, 0]["location"].astype(np.float32)


def test_real_sample_both_parts(tmp_path, warnings_log):
    builder_a = build_dataset("shanghaitech/part_a", manual_dir=SAMPLE_DIR, data_dir=tmp_path)
    builder_b = build_dataset("shanghaitech/part_b", manual_dir=SAMPLE_DIR, data_dir=tmp_path)
    assert {s: i.num_examples for s, i in builder_a.info.splits.items()} == {"train": 2, "test": 1}
    assert {s: i.num_examples for s, i in builder_b.info.splits.items()} == {"train": 1, "test": 1}
    for builder, part, expected in (
        (builder_a, "part_A", {"train": ["IMG_3", "IMG_4"], "test": ["IMG_3"]}),
        (builder_b, "part_B", {"train": ["IMG_3"], "test": ["IMG_1"]}),
    ):
        for split, stems in expected.items():
            found = records(builder, split)
            assert sorted(found) == sorted(f"{stem}.jpg" for stem in stems)
            for stem in stems:
                record = found[f"{stem}.jpg"]
                np.testing.assert_array_equal(record["points"], real_points(part, split, stem))
                with Image.open(SAMPLE_DIR / part / f"{split}_data" / "images" / f"{stem}.jpg") as image:
                    assert record["image"].shape == (image.size[1], image.size[0], 3)
    # Head counts of the copied files (the .mat 'number' fields): see tests/data/shanghaitech_sample/README.md.
    assert len(records(builder_a, "train")["IMG_4.jpg"]["points"]) == 413
    # IMG_4 of part A is a greyscale JPEG: decoded to three equal channels.
    grey = records(builder_a, "train")["IMG_4.jpg"]["image"]
    assert np.array_equal(grey[..., 0], grey[..., 2])
    # The stray Thumbs.db and 000.png are ignored, logged and listed.
    ignored = [entry["file"] for entry in builder_a.info.metadata["ignored_files"]]
    assert sorted(name.rsplit("/", 1)[-1] for name in ignored) == ["000.png", "Thumbs.db"]
    assert "Thumbs.db" in warnings_log.text and "000.png" in warnings_log.text
    assert builder_b.info.metadata["ignored_files"] == []
    # Reloading from data_dir gives back the recorded metadata.
    reloaded = tfds.builder("shanghaitech/part_a", data_dir=tmp_path)
    assert reloaded.is_prepared() and len(reloaded.info.metadata["ignored_files"]) == 2


def test_written_mat_has_the_real_nesting(tmp_path):
    real = scipy.io.loadmat(SAMPLE_DIR / "part_B" / "test_data" / "ground-truth" / "GT_IMG_1.mat")
    path = tmp_path / "GT_IMG_1.mat"
    write_shanghaitech_mat(path, real["image_info"][0, 0][0, 0]["location"])
    ours = scipy.io.loadmat(path)
    for mat in (real, ours):
        cell = mat["image_info"]
        assert cell.dtype == object and cell.shape == (1, 1)
        struct = cell[0, 0]
        assert struct.shape == (1, 1) and struct.dtype.names == ("location", "number")
    np.testing.assert_array_equal(ours["image_info"][0, 0][0, 0]["location"], real["image_info"][0, 0][0, 0]["location"])
    np.testing.assert_array_equal(read_shanghaitech_mat(path), read_shanghaitech_mat(SAMPLE_DIR / "part_B/test_data/ground-truth/GT_IMG_1.mat"))


@pytest.mark.parametrize("part_dir, gt_dir, extra_level", [("part_A", "ground-truth", ""), ("part_A_final", "ground_truth", "ShanghaiTech")])
def test_written_layout_variants(tmp_path, part_dir, gt_dir, extra_level):
    raw = tmp_path / "raw" / extra_level if extra_level else tmp_path / "raw"
    expected = make_shanghaitech_raw(raw, part_dir=part_dir, gt_dir=gt_dir)
    builder = build_dataset("shanghaitech/part_a", manual_dir=tmp_path / "raw", data_dir=tmp_path / "tfds")
    for split, files in expected.items():
        found = records(builder, split)
        assert sorted(found) == sorted(files)
        for name, points in files.items():
            # float32 points stored as float64 in the .mat file and read back into float32: exact.
            np.testing.assert_array_equal(found[name]["points"], points)
            assert found[name]["image"].shape == (48, 64, 3)


def test_missing_part_names_the_expected_layout(tmp_path):
    make_shanghaitech_raw(tmp_path / "raw", part_dir="part_A")
    with pytest.raises(ValueError, match="part_B"):
        build_dataset("shanghaitech/part_b", manual_dir=tmp_path / "raw", data_dir=tmp_path / "tfds")
    with pytest.raises(ValueError, match="does not exist"):
        build_dataset("shanghaitech/part_a", manual_dir=tmp_path / "nowhere", data_dir=tmp_path / "tfds")


def test_image_without_annotation_fails_or_is_skipped(tmp_path, warnings_log):
    make_shanghaitech_raw(tmp_path / "raw")
    (tmp_path / "raw/part_A/train_data/ground-truth/GT_IMG_2.mat").unlink()
    with pytest.raises(BadExampleError, match=r"IMG_2\.jpg.*GT_IMG_2\.mat is missing"):
        build_dataset("shanghaitech/part_a", manual_dir=tmp_path / "raw", data_dir=tmp_path / "tfds")
    builder = build_dataset(
        "shanghaitech/part_a", manual_dir=tmp_path / "raw", data_dir=tmp_path / "tfds2", on_bad_example="skip"
    )
    assert builder.info.splits["train"].num_examples == 2
    skipped = builder.info.metadata["skipped"]
    assert len(skipped) == 1 and skipped[0]["file"].endswith("IMG_2.jpg") and skipped[0]["split"] == "train"
    assert "IMG_2.jpg" in warnings_log.text


def test_how_tfds_users_read_the_prepared_data(tmp_path):
    """The README's recipes: the default ArrayRecord build is read by index with
    tfds.data_source (tfds.load cannot stream it); a tfrecord build is read by tfds.load."""
    build_dataset("shanghaitech/part_a", manual_dir=SAMPLE_DIR, data_dir=tmp_path / "array_record")
    source = tfds.data_source("shanghaitech/part_a", split="train", data_dir=tmp_path / "array_record")
    by_name = {source[i]["image/filename"].decode(): source[i] for i in range(len(source))}
    np.testing.assert_array_equal(by_name["IMG_4.jpg"]["points"], real_points("part_A", "train", "IMG_4"))
    with pytest.raises(NotImplementedError, match="as_data_source"):
        tfds.load("shanghaitech/part_a", split="train", data_dir=tmp_path / "array_record")

    build_dataset("shanghaitech/part_a", manual_dir=SAMPLE_DIR, data_dir=tmp_path / "tfrecord", file_format="tfrecord")
    streamed = tfds.load(
        "shanghaitech/part_a", split="train", data_dir=tmp_path / "tfrecord", builder_kwargs={"file_format": "tfrecord"}
    )
    by_name = {ex["image/filename"].decode(): ex for ex in tfds.as_numpy(streamed)}
    assert sorted(by_name) == ["IMG_3.jpg", "IMG_4.jpg"]
    np.testing.assert_array_equal(by_name["IMG_4.jpg"]["points"], real_points("part_A", "train", "IMG_4"))
    with pytest.raises(ValueError, match="file_format must be one of"):
        build_dataset("shanghaitech/part_a", manual_dir=SAMPLE_DIR, data_dir=tmp_path / "x", file_format="parquet")


def test_pipelines_refuse_a_tfrecord_build_in_one_line(tmp_path):
    """The pipelines read by index, which a TFRecord build does not allow: they say so, naming
    the data dir and the format, and how to build what they read; and a data dir holds one
    format of a data set, so the other format is refused there too."""
    data_dir = tmp_path / "tfrecord"
    build_dataset("shanghaitech/part_a", manual_dir=SAMPLE_DIR, data_dir=data_dir, file_format="tfrecord")
    opens = [
        lambda loader: make_eval_dataset("shanghaitech/part_a", split="test", data_dir=data_dir, loader=loader),
        lambda loader: make_train_dataset("shanghaitech/part_a", crop_size=64, batch_size=1, max_points=8, seed=0,
                                          data_dir=data_dir, manual_dir=SAMPLE_DIR, loader=loader),
    ]  # fmt: skip
    for open_pipeline in opens:
        for loader in LOADERS:
            with pytest.raises(ValueError) as error:
                open_pipeline(loader)
            message = str(error.value)
            assert "\n" not in message and str(data_dir) in message and "tfrecord files" in message
            assert "without --file_format tfrecord" in message
    with pytest.raises(ValueError) as error:
        build_dataset("shanghaitech/part_a", manual_dir=SAMPLE_DIR, data_dir=data_dir)
    assert "\n" not in str(error.value) and "already prepared in" in str(error.value)
    assert str(data_dir) in str(error.value) and "another data dir" in str(error.value)
    assert not list(data_dir.rglob("*.array_record*"))
