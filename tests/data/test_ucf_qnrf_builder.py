"""UCF-QNRF builder on a written raw layout: splits (incl. the 120-image val list), points."""

import numpy as np
import pytest
from raw_layouts import make_qnrf_raw, write_ann_mat

from gcc_jax.data import BadExampleError, build_dataset
from gcc_jax.data.ucf_qnrf import QNRF_VAL_IMAGES


def records(builder, split):
    source = builder.as_data_source(split=split)
    return {source[i]["image/filename"].decode(): source[i] for i in range(len(source))}


def test_val_list_is_the_customary_120_images():
    assert len(QNRF_VAL_IMAGES) == 120 and {7, 12, 1199} <= QNRF_VAL_IMAGES and 1 not in QNRF_VAL_IMAGES


@pytest.mark.parametrize("extra_level", ["", "UCF-QNRF_ECCV18"])
def test_splits_and_points(tmp_path, extra_level):
    expected = make_qnrf_raw(tmp_path / "raw" / extra_level)
    builder = build_dataset("ucf_qnrf", manual_dir=tmp_path / "raw", data_dir=tmp_path / "tfds")
    assert {s: i.num_examples for s, i in builder.info.splits.items()} == {"train": 1, "val": 2, "test": 1}
    for split, files in expected.items():
        found = records(builder, split)
        assert sorted(found) == sorted(files)
        for name, points in files.items():
            # float32 points stored as float64 in the .mat file and read back into float32: exact.
            np.testing.assert_array_equal(found[name]["points"], points.reshape(-1, 2))
            assert found[name]["image"].shape == (40, 56, 3)
    assert len(records(builder, "train+val")) == 3


def test_points_outside_the_image_are_dropped_clipped_or_fail(tmp_path, warnings_log):
    make_qnrf_raw(tmp_path / "raw")
    # Image is 56 wide, 40 high: (60, 10) and (-1, 5) are outside, (56, 40) is on the border (kept).
    points = np.array([[10.0, 10.0], [60.0, 10.0], [-1.0, 5.0], [56.0, 40.0]])
    write_ann_mat(tmp_path / "raw/Test/img_0001_ann.mat", points)
    dropped = build_dataset("ucf_qnrf", manual_dir=tmp_path / "raw", data_dir=tmp_path / "drop")
    np.testing.assert_allclose(records(dropped, "test")["img_0001.jpg"]["points"], points[[0, 3]])
    entry = dropped.info.metadata["out_of_image"]
    assert len(entry) == 1 and entry[0]["count"] == 2 and entry[0]["file"].endswith("img_0001_ann.mat")
    assert "2 of 4 points lie outside" in warnings_log.text
    clipped = build_dataset("ucf_qnrf", manual_dir=tmp_path / "raw", data_dir=tmp_path / "clip", out_of_image="clip")
    np.testing.assert_allclose(
        records(clipped, "test")["img_0001.jpg"]["points"], [[10, 10], [56, 10], [0, 5], [56, 40]]
    )
    with pytest.raises(BadExampleError, match=r"img_0001_ann\.mat: 2 of 4 points lie outside"):
        build_dataset("ucf_qnrf", manual_dir=tmp_path / "raw", data_dir=tmp_path / "raise", out_of_image="raise")
