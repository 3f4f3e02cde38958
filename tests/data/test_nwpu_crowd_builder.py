"""NWPU-Crowd builder on a written raw layout: JSON points + boxes, split lists, test images."""

import numpy as np
import pytest
from raw_layouts import make_nwpu_raw

from gcc_jax.data import BadExampleError, build_dataset, make_eval_dataset
from tolerances import EPS32


def records(builder, split):
    source = builder.as_data_source(split=split)
    return {source[i]["image/filename"].decode(): source[i] for i in range(len(source))}


def test_splits_points_boxes_and_labels(tmp_path):
    expected = make_nwpu_raw(tmp_path / "raw")
    builder = build_dataset("nwpu_crowd", manual_dir=tmp_path / "raw", data_dir=tmp_path / "tfds")
    assert {s: i.num_examples for s, i in builder.info.splits.items()} == {"train": 2, "val": 1, "test": 1}
    train = records(builder, "train")
    for image_id, (luminance, level) in (("0001", (1, 2)), ("0002", (0, 1))):
        record = train[f"{image_id}.jpg"]
        points, boxes = expected[image_id]
        # float32 values written to JSON by repr and read back into float32: exact.
        np.testing.assert_array_equal(record["points"], points.reshape(-1, 2))
        np.testing.assert_array_equal(record["boxes"], boxes.reshape(-1, 4))
        assert record["annotated"] and (record["luminance"], record["level"]) == (luminance, level)
    assert train["0002.jpg"]["points"].shape == (0, 2)  # an empty image is an ordinary example
    test = records(builder, "test")["0004.jpg"]
    assert not test["annotated"] and test["points"].shape == (0, 2) and test["level"] == 4


def test_images_in_part_folders_are_found(tmp_path):
    make_nwpu_raw(tmp_path / "raw" / "NWPU-Crowd")
    (tmp_path / "raw/NWPU-Crowd/images").rename(tmp_path / "raw/NWPU-Crowd/images_part1")
    builder = build_dataset("nwpu_crowd", manual_dir=tmp_path / "raw", data_dir=tmp_path / "tfds")
    assert builder.info.splits["train"].num_examples == 2


def test_eval_pipeline_carries_boxes_and_nan_count_for_test(tmp_path):
    expected = make_nwpu_raw(tmp_path / "raw")
    kwargs = dict(data_dir=tmp_path / "tfds", manual_dir=tmp_path / "raw")
    # 36 x 52 images go up to shorter side 512 (x 512/36) under the default reference rule.
    batch = next(iter(make_eval_dataset("nwpu_crowd", split="val", **kwargs)))
    scale = 512 / 36
    points, boxes = expected["0003"]
    # Correctly rounded operations (alike on every CPU), u = EPS32 / 2 relatively each: the
    # batch's √(sx·sy) of the float32 ratio is within 2.5u of 512 / 36; a float32 coordinate
    # times the float32 ratio, in the pipeline and in this test's float32 product, within 2u of
    # the exact product.
    np.testing.assert_allclose(batch["scale"], [scale], rtol=2 * EPS32)
    np.testing.assert_allclose(batch["points"][0], points * scale, rtol=2 * EPS32)
    np.testing.assert_allclose(batch["boxes"][0], boxes * scale, rtol=2 * EPS32)
    np.testing.assert_array_equal(batch["image_hw"][0], [512, round(52 * scale)])
    test = next(iter(make_eval_dataset("nwpu_crowd", split="test", **kwargs)))
    assert np.isnan(test["count"][0]) and test["points"].shape == (1, 0, 2) and test["boxes"].shape == (1, 0, 4)


@pytest.mark.parametrize(
    "content, problem",
    [
        ("", "empty"),
        ("{not json", "malformed JSON"),
        ('{"points": [[1, 2]]}', "with 'points' and 'boxes'"),
        ('{"points": [[1, 2]], "boxes": []}', "1 points but 0 boxes"),
        ('{"points": [[1, "a"]], "boxes": [[0, 0, 1, 1]]}', "not numeric"),
    ],
)
def test_bad_json_names_the_file(tmp_path, content, problem):
    make_nwpu_raw(tmp_path / "raw")
    (tmp_path / "raw/jsons/0003.json").write_text(content)
    with pytest.raises(BadExampleError, match=rf"0003\.json: .*{problem}"):
        build_dataset("nwpu_crowd", manual_dir=tmp_path / "raw", data_dir=tmp_path / "tfds")


def test_missing_json_for_a_train_image_can_be_skipped(tmp_path):
    make_nwpu_raw(tmp_path / "raw")
    (tmp_path / "raw/jsons/0001.json").unlink()
    with pytest.raises(BadExampleError, match=r"0001\.json: annotation file is missing"):
        build_dataset("nwpu_crowd", manual_dir=tmp_path / "raw", data_dir=tmp_path / "a")
    builder = build_dataset("nwpu_crowd", manual_dir=tmp_path / "raw", data_dir=tmp_path / "b", on_bad_example="skip")
    assert builder.info.splits["train"].num_examples == 1
    assert builder.info.metadata["skipped"][0]["file"].endswith("0001.json")
