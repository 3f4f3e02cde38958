"""Evaluation pipeline: full images, padding to multiples of 16, counts, sharding, buckets,
the reference resize, and the lazy build / build CLI."""

import numpy as np
import pytest
from PIL import Image
from raw_layouts import SAMPLE_DIR, make_qnrf_raw

from gcc_jax.data import make_eval_dataset, make_train_dataset
from gcc_jax.data.build import main as build_main
from gcc_jax.data.synthetic import SyntheticCrowdOptions, generate_example
from gcc_jax.imagenet import normalize_images
from tolerances import EPS32

OPTIONS = {"height": 40, "width": 56, "num_train": 2, "num_val": 5, "num_test": 2}


def decode(path):
    # PIL decodes JPEGs with libjpeg-turbo's accurate integer IDCT, as both pipelines do.
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def test_real_sample_full_images(sha_sample_data_dir):
    batches = list(make_eval_dataset("shanghaitech/part_a", split="train", data_dir=sha_sample_data_dir))
    assert len(batches) == 2
    for batch in batches:
        name = batch["filename"][0].decode()
        pixels = decode(SAMPLE_DIR / "part_A/train_data/images" / name)
        h, w = pixels.shape[:2]
        np.testing.assert_array_equal(batch["image_hw"][0], [h, w])
        padded_h, padded_w = batch["image"].shape[1:3]
        assert padded_h % 16 == 0 and padded_w % 16 == 0 and padded_h - h < 16 and padded_w - w < 16
        # No resize (scale 1): normalize_images' element-wise float32 operations, equal on every CPU.
        np.testing.assert_array_equal(batch["image"][0, :h, :w], normalize_images(pixels))
        assert not batch["image"][0, h:].any() and not batch["image"][0, :, w:].any()
        expected = {"IMG_3.jpg": 262, "IMG_4.jpg": 413}[name]
        assert batch["count"][0] == expected == batch["point_mask"].sum() == batch["num_points"][0]
        assert batch["scale"][0] == 1.0 and "boxes" not in batch


def test_processes_cover_the_split_once_and_buckets_sort_by_size():
    def names(**kwargs):
        return [n.decode() for b in make_eval_dataset("synthetic_crowd", split="val", synthetic=OPTIONS, **kwargs)
                for n in b["filename"]]

    everything = names()
    shards = [names(process_index=p, process_count=2) for p in range(2)]
    assert sorted(shards[0] + shards[1]) == sorted(everything) and not set(shards[0]) & set(shards[1])
    assert len(make_eval_dataset("synthetic_crowd", split="val", synthetic=OPTIONS, batch_size=2)) == 3
    batches = list(make_eval_dataset("synthetic_crowd", split="val", synthetic=OPTIONS, batch_size=2, max_points=300))
    assert [b["image"].shape[0] for b in batches] == [2, 2, 1]
    for batch in batches:
        assert batch["image"].shape[1:] == (48, 64, 3) and batch["points"].shape[1] == 300
        for row, name in enumerate(batch["filename"]):
            index = int(name.decode().rsplit("_", 1)[1].split(".")[0])
            points = generate_example(SyntheticCrowdOptions(**OPTIONS), "val", index)["points"]
            assert batch["count"][row] == len(points) == batch["point_mask"][row].sum()
            np.testing.assert_allclose(batch["points"][row, : len(points)], points)


def test_buckets_group_images_of_similar_size(sha_sample_data_dir):
    batches = list(make_eval_dataset("shanghaitech/part_a", split="train", batch_size=2, data_dir=sha_sample_data_dir))
    (batch,) = batches
    # 664 x 1000 and 746 x 1024 share one batch padded to the larger: 752 x 1024.
    assert batch["image"].shape == (2, 752, 1024, 3)
    assert sorted(map(tuple, batch["image_hw"])) == [(664, 1000), (746, 1024)]
    assert batch["points"].shape[1] == 413 == batch["point_mask"].sum(axis=1).max()


def test_reference_resize_and_the_lazy_build(tmp_path, warnings_log):
    expected = make_qnrf_raw(tmp_path / "raw")
    with pytest.raises(ValueError, match="python -m gcc_jax.data.build --dataset ucf_qnrf"):
        make_eval_dataset("ucf_qnrf", split="test", data_dir=tmp_path / "tfds")
    with pytest.raises(ValueError, match="build it once before a multi-process run"):
        make_eval_dataset("ucf_qnrf", split="test", data_dir=tmp_path / "tfds", manual_dir=tmp_path / "raw", process_count=2)
    (batch,) = list(make_eval_dataset("ucf_qnrf", split="test", data_dir=tmp_path / "tfds", manual_dir=tmp_path / "raw",
                                      max_points=4))
    # 40 x 56 -> shorter side 512: ratio 12.8, width round(56 * 12.8) = 717, padded to 512 x 720.
    np.testing.assert_array_equal(batch["image_hw"][0], [512, 717])
    assert batch["image"].shape == (1, 512, 720, 3)
    # Correctly rounded operations (alike on every CPU), u = EPS32 / 2 relatively each:
    # scale = √(sx·sy) of the float32 ratio 512 / 40 is within 2.5u of 12.8 (the ratio's
    # rounding, the product's, half of it through the root, the root's); a point times the float32
    # ratio, here and in this test's float32 product, is within 2u of the exact product.
    np.testing.assert_allclose(batch["scale"], [12.8], rtol=2 * EPS32)
    points = expected["test"]["img_0001.jpg"]
    np.testing.assert_allclose(batch["points"][0], points[:4] * 12.8, rtol=2 * EPS32)
    assert batch["count"][0] == 6 and batch["num_points"][0] == 6 and batch["point_mask"].sum() == 4
    assert "2 evaluation points dropped" in warnings_log.text
    (plain,) = list(make_eval_dataset("ucf_qnrf", split="test", data_dir=tmp_path / "tfds", resize=None))
    np.testing.assert_array_equal(plain["image_hw"][0], [40, 56])
    epoch = make_train_dataset("ucf_qnrf", split="train+val", crop_size=32, batch_size=3, max_points=8, seed=0,
                               data_dir=tmp_path / "tfds")
    assert len(epoch) == 1 and next(iter(epoch))["st_size"].tolist() == [512.0] * 3


def test_build_cli(tmp_path, capsys):
    make_qnrf_raw(tmp_path / "raw")
    assert build_main(["--dataset", "ucf_qnrf", "--manual_dir", str(tmp_path / "raw"), "--data_dir", str(tmp_path / "tfds")]) == 0
    out = capsys.readouterr().out
    assert "ucf_qnrf: train: 1, val: 2, test: 1" in out
    assert (tmp_path / "tfds" / "ucf_qnrf" / "1.0.0" / "dataset_info.json").is_file()


def test_unknown_names_and_splits():
    with pytest.raises(ValueError, match="unknown dataset 'mall'"):
        make_eval_dataset("mall", split="test")
    with pytest.raises(ValueError, match="no split 'validation'"):
        make_eval_dataset("synthetic_crowd", split="validation")
    with pytest.raises(ValueError, match="no split 'val'"):
        make_eval_dataset("shanghaitech/part_a", split="val")
    with pytest.raises(ValueError, match="synthetic options were given"):
        make_eval_dataset("ucf_qnrf", split="test", synthetic={"seed": 1})
