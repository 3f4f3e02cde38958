"""JHU-Crowd++ builder on a written raw layout: gt txt rows, empty files, image labels."""

import numpy as np
import pytest
from raw_layouts import make_jhu_raw

from gcc_jax.data import BadExampleError, build_dataset, make_eval_dataset


def records(builder, split):
    source = builder.as_data_source(split=split)
    return {source[i]["image/filename"].decode(): source[i] for i in range(len(source))}


def test_splits_rows_and_labels(tmp_path):
    expected = make_jhu_raw(tmp_path / "raw" / "jhu_crowd_v2.0")
    builder = build_dataset("jhu_crowd", manual_dir=tmp_path / "raw", data_dir=tmp_path / "tfds")
    assert {s: i.num_examples for s, i in builder.info.splits.items()} == {"train": 2, "val": 1, "test": 1}
    everything = {**records(builder, "train"), **records(builder, "val"), **records(builder, "test")}
    for stem, (points, wh, occlusion, blur, weather) in expected.items():
        record = everything[f"{stem}.jpg"]
        np.testing.assert_allclose(record["points"], points.reshape(-1, 2))
        np.testing.assert_allclose(record["box_size"], wh.reshape(-1, 2))
        np.testing.assert_array_equal(record["occlusion"], occlusion)
        np.testing.assert_array_equal(record["blur"], blur)
        assert record["weather"] == weather and record["scene"] == b"street"
    empty = everything["0002.jpg"]  # an empty gt file: no heads, labelled as a distractor
    assert empty["points"].shape == (0, 2) and empty["distractor"] == 1


def test_eval_boxes_come_from_box_sizes(tmp_path):
    expected = make_jhu_raw(tmp_path / "raw")
    batch = next(iter(make_eval_dataset("jhu_crowd", split="val", data_dir=tmp_path / "tfds", manual_dir=tmp_path / "raw", resize=None)))
    points, wh = expected["0003"][:2]
    np.testing.assert_allclose(batch["boxes"][0], np.concatenate([points - wh / 2, points + wh / 2], axis=1))
    np.testing.assert_allclose(batch["count"], [2.0])


@pytest.mark.parametrize("line, problem", [("1 2 3", "expected 6 numbers"), ("1 2 3 4 x 0", "not numeric")])
def test_malformed_gt_line_names_file_and_line(tmp_path, line, problem):
    make_jhu_raw(tmp_path / "raw")
    path = tmp_path / "raw/train/gt/0001.txt"
    path.write_text(path.read_text() + line + "\n")
    with pytest.raises(BadExampleError, match=rf"0001\.txt: line 4: {problem}"):
        build_dataset("jhu_crowd", manual_dir=tmp_path / "raw", data_dir=tmp_path / "tfds")


def test_missing_gt_file_and_missing_label_line(tmp_path):
    make_jhu_raw(tmp_path / "raw")
    (tmp_path / "raw/val/gt/0003.txt").unlink()
    with pytest.raises(BadExampleError, match=r"0003\.txt: annotation file is missing"):
        build_dataset("jhu_crowd", manual_dir=tmp_path / "raw", data_dir=tmp_path / "a")
    make_jhu_raw(tmp_path / "raw2")
    (tmp_path / "raw2/test/image_labels.txt").write_text("")
    with pytest.raises(BadExampleError, match=r"0004\.jpg: no line for 0004"):
        build_dataset("jhu_crowd", manual_dir=tmp_path / "raw2", data_dir=tmp_path / "b")


def test_count_mismatch_with_labels_is_a_recorded_warning(tmp_path, warnings_log):
    make_jhu_raw(tmp_path / "raw")
    labels = tmp_path / "raw/val/image_labels.txt"
    labels.write_text(labels.read_text().replace("0003,2,", "0003,5,"))
    builder = build_dataset("jhu_crowd", manual_dir=tmp_path / "raw", data_dir=tmp_path / "tfds")
    assert builder.info.metadata["warnings"][0]["file"].endswith("0003.txt")
    assert "says 5 heads" in warnings_log.text
