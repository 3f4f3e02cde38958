"""Training pipeline, both backends: shapes, determinism, resuming, process sharding, padding,
the min-size policies, normalisation, and reporting of dropped points."""

import numpy as np
import pytest

from gcc_jax.data import make_train_dataset, train_steps_per_epoch
from gcc_jax.data.synthetic import SyntheticCrowdOptions, generate_example
from gcc_jax.imagenet import normalize_images

OPTIONS = {"height": 64, "width": 64, "num_train": 12, "num_val": 3, "num_test": 3, "max_people": 40}


def epoch_batches(loader, **kwargs):
    args = dict(crop_size=32, batch_size=4, max_points=64, seed=5, synthetic=OPTIONS, loader=loader)
    args.update(kwargs)
    return list(make_train_dataset("synthetic_crowd", **args))


def assert_same(batches_a, batches_b):
    assert len(batches_a) == len(batches_b)
    for a, b in zip(batches_a, batches_b):
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_batch_shapes_dtypes_and_length(loader):
    epoch = make_train_dataset("synthetic_crowd", crop_size=32, batch_size=4, max_points=64, seed=0, synthetic=OPTIONS,
                               loader=loader)
    assert len(epoch) == 3 == train_steps_per_epoch("synthetic_crowd", batch_size=4, synthetic=OPTIONS)
    batches = list(epoch)
    assert len(batches) == 3
    expected = {
        "image": ((4, 32, 32, 3), np.float32),
        "points": ((4, 64, 2), np.float32),
        "point_mask": ((4, 64), np.bool_),
        "targets": ((4, 64), np.float32),
        "st_size": ((4,), np.float32),
        "num_points": ((4,), np.int32),
        "num_dropped": ((4,), np.int32),
    }
    for batch in batches:
        assert {k: (v.shape, v.dtype) for k, v in batch.items()} == expected
        np.testing.assert_array_equal(batch["point_mask"].sum(axis=1), batch["num_points"])
        kept = batch["targets"][batch["point_mask"]]
        assert np.all((kept >= 0.3) & (kept <= 1.0)) and not batch["targets"][~batch["point_mask"]].any()
        assert not batch["points"][~batch["point_mask"]].any()
        np.testing.assert_array_equal(batch["st_size"], 64.0)
    assert train_steps_per_epoch("synthetic_crowd", batch_size=5, drop_remainder=False, synthetic=OPTIONS) == 3
    with pytest.raises(ValueError, match="fewer than one batch"):
        epoch_batches(loader, batch_size=16)


def test_same_seed_and_epoch_give_the_same_batches_and_epochs_differ(loader):
    first = epoch_batches(loader, epoch=1)
    assert_same(first, epoch_batches(loader, epoch=1, num_parallel_calls=1))
    other = epoch_batches(loader, epoch=2)
    assert not np.array_equal(first[0]["image"], other[0]["image"])


def test_skip_batches_resumes_the_same_epoch(loader):
    full = epoch_batches(loader, epoch=3)
    assert_same(full[1:], epoch_batches(loader, epoch=3, skip_batches=1))
    assert len(make_train_dataset("synthetic_crowd", crop_size=32, batch_size=4, max_points=8, seed=5, epoch=3,
                                  skip_batches=2, synthetic=OPTIONS, loader=loader)) == 1


def test_processes_read_disjoint_slices_of_the_global_batch(loader):
    single = epoch_batches(loader, batch_size=4)
    shards = [epoch_batches(loader, batch_size=4, process_index=p, process_count=2) for p in range(2)]
    for step, batch in enumerate(single):
        for key in batch:
            joined = np.concatenate([shards[0][step][key], shards[1][step][key]])
            np.testing.assert_array_equal(joined, batch[key], err_msg=key)
    with pytest.raises(ValueError, match="multiple of process_count"):
        epoch_batches(loader, batch_size=3, process_count=2)
    with pytest.raises(ValueError, match="process_index"):
        epoch_batches(loader, process_index=2, process_count=2)


def test_full_image_crop_without_flip_is_the_normalised_image(loader):
    batches = epoch_batches(loader, crop_size=64, batch_size=2, flip=False, max_points=128)
    perm = np.random.default_rng([5, 0]).permutation(12)  # the documented epoch order
    for step, batch in enumerate(batches):
        for row in range(2):
            example = generate_example(SyntheticCrowdOptions(**OPTIONS), "train", int(perm[2 * step + row]))
            # No resize: both backends compute normalize_images' float32 subtraction and product,
            # correctly rounded alike on every CPU; the points only move by the crop's corner, 0.
            np.testing.assert_array_equal(batch["image"][row], normalize_images(example["image"]))
            n = len(example["points"])
            assert batch["num_points"][row] == n
            np.testing.assert_array_equal(batch["points"][row, :n], example["points"])


def test_flip_mirrors_image_and_points_together(loader):
    plain = epoch_batches(loader, crop_size=64, batch_size=12, flip=False, max_points=128)[0]
    flipped = epoch_batches(loader, crop_size=64, batch_size=12, flip=True, max_points=128)[0]
    mirrored = 0
    for row in range(12):
        if np.array_equal(flipped["image"][row], plain["image"][row]):
            np.testing.assert_array_equal(flipped["points"][row], plain["points"][row])
            continue
        mirrored += 1
        np.testing.assert_array_equal(flipped["image"][row], plain["image"][row][:, ::-1])
        mask = plain["point_mask"][row]
        # The pipeline's x ↦ 64 − x is the same correctly rounded float32 subtraction as this one.
        np.testing.assert_array_equal(flipped["points"][row][mask, 0], 64 - plain["points"][row][mask, 0])
        np.testing.assert_allclose(flipped["points"][row][mask, 1], plain["points"][row][mask, 1])
    assert 0 < mirrored < 12


def test_empty_images_give_empty_masks(loader):
    options = dict(OPTIONS, empty_fraction=1.0)
    for batch in epoch_batches(loader, synthetic=options):
        assert not batch["point_mask"].any() and not batch["num_points"].any() and not batch["targets"].any()


def test_too_small_max_points_is_reported(warnings_log, loader):
    options = dict(OPTIONS, min_people=30, max_people=40, empty_fraction=0.0)
    batches = epoch_batches(loader, synthetic=options, crop_size=64, max_points=4)
    dropped = np.concatenate([b["num_dropped"] for b in batches])
    points = np.concatenate([b["num_points"] for b in batches])
    np.testing.assert_array_equal(dropped, np.maximum(points - 4, 0))
    assert dropped.sum() > 0 and "max_points=4 is too small" in warnings_log.text


def test_small_images_are_padded_or_upscaled(sha_sample_data_dir, loader):
    # Part A test IMG_3 is 640 x 427: shorter than a 512 crop.
    common = dict(split="test", crop_size=512, batch_size=1, max_points=512, seed=0, data_dir=sha_sample_data_dir,
                  loader=loader)
    padded = next(iter(make_train_dataset("shanghaitech/part_a", min_size_policy="pad", flip=False, **common)))
    assert padded["st_size"][0] == 427 and padded["image"].shape == (1, 512, 512, 3)
    # Rows 427..511 are padding with the ImageNet mean colour: 0 after normalisation, written
    # as 0 (not normalised), so exactly 0.
    assert not padded["image"][0, 427:].any()
    assert np.abs(padded["image"][0, :427]).max() > 0.5
    upscaled = next(iter(make_train_dataset("shanghaitech/part_a", min_size_policy="upscale", **common)))
    assert upscaled["st_size"][0] == 512 and np.abs(upscaled["image"][0, 427:]).max() > 0.5
    with pytest.raises(ValueError, match="min_size_policy"):
        make_train_dataset("shanghaitech/part_a", min_size_policy="crop", **common)


def test_real_sample_crops(sha_sample_data_dir, loader):
    epoch = make_train_dataset("shanghaitech/part_a", crop_size=256, batch_size=2, max_points=1024, seed=1,
                               data_dir=sha_sample_data_dir, loader=loader)
    (batch,) = list(epoch)
    assert batch["image"].shape == (2, 256, 256, 3)
    np.testing.assert_array_equal(np.sort(batch["st_size"]), [664.0, 746.0])
    assert batch["num_points"].min() > 0 and not batch["num_dropped"].any()
    kept = batch["points"][batch["point_mask"]]
    # Kept heads have >= 30 % of a box of side <= 128 inside the crop: at most 0.2 * 128 outside.
    assert kept.min() > -0.2 * 128 and kept.max() < 256 + 0.2 * 128
