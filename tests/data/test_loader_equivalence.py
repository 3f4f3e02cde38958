"""The tf.data and Grain backends give the same batches for the same arguments.

Points, masks, targets, sizes, counts and names must be equal; images may differ only by the
float32 round-off of a resize (JPEG decoding is the same libjpeg-turbo IDCT in both, and the
numpy resize rounds TensorFlow's operations in TensorFlow's order: equal to the bit on every
x86 CPU, within :func:`tolerances.bilinear_atol` for a TensorFlow build that uses FMAs).
"""

import numpy as np
import pytest
from tolerances import bilinear_atol, normalised_atol

from gcc_jax.data import image_cache, make_eval_dataset, make_train_dataset

# The largest resize below: the 800 rule on the sample's 746 × 1024 image (the synthetic
# 64 × 64 images through the 100 rule or the upscale, and the 427 × 640 one upscaled, are smaller).
IMAGE_ATOL = normalised_atol(bilinear_atol((746, 1024)))

SYNTHETIC = {"height": 64, "width": 64, "num_train": 8, "num_val": 3, "num_test": 3, "max_people": 40}


def assert_same_batches(tf_batches, grain_batches):
    assert len(tf_batches) == len(grain_batches) > 0
    for a, b in zip(tf_batches, grain_batches):
        assert a.keys() == b.keys()
        for key in a:
            assert a[key].shape == b[key].shape and a[key].dtype == b[key].dtype, key
            if key == "image":
                np.testing.assert_allclose(a[key], b[key], rtol=0, atol=IMAGE_ATOL)
            else:
                np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def both(make, *args, **kwargs):
    return [list(make(*args, loader=loader, **kwargs)) for loader in ("tf.data", "grain")]


@pytest.mark.parametrize(
    "options",
    [
        dict(crop_size=32),
        dict(crop_size=80),  # larger than the 64 x 64 images: padded
        dict(crop_size=80, min_size_policy="upscale"),
        dict(crop_size=32, resize={"kind": "shorter_side", "min_size": 100, "max_size": 200}, epoch=1),
    ],
)
def test_synthetic_training_batches_agree(options):
    assert_same_batches(*both(make_train_dataset, "synthetic_crowd", batch_size=4, max_points=64, seed=5,
                              synthetic=SYNTHETIC, **options))


@pytest.mark.parametrize(
    "options",
    [
        dict(split="train", crop_size=256),
        dict(split="test", crop_size=512),  # 640 x 427: padded
        dict(split="test", crop_size=512, min_size_policy="upscale"),
        dict(split="train", crop_size=256, resize={"kind": "shorter_side", "min_size": 800, "max_size": 2048}),
    ],
)
@pytest.mark.parametrize("cache_bytes", [0, 2**30])
def test_real_jpeg_training_batches_agree(sha_sample_data_dir, options, cache_bytes):
    image_cache.clear()
    assert_same_batches(*both(make_train_dataset, "shanghaitech/part_a", batch_size=1, max_points=1024, seed=1,
                              data_dir=sha_sample_data_dir, image_cache_bytes=cache_bytes, **options))
    assert (image_cache.used_bytes() > 0) == (cache_bytes > 0)


@pytest.mark.parametrize("loader", ["tf.data", "grain"])
def test_the_image_cache_changes_no_batch(sha_sample_data_dir, loader):
    image_cache.clear()
    common = dict(crop_size=256, batch_size=2, max_points=1024, seed=3, data_dir=sha_sample_data_dir, loader=loader)
    uncached = list(make_train_dataset("shanghaitech/part_a", image_cache_bytes=0, **common))
    first = list(make_train_dataset("shanghaitech/part_a", image_cache_bytes=2**30, **common))
    used = image_cache.used_bytes()
    assert used == 664 * 1000 * 3 + 746 * 1024 * 3  # both training images, decoded once
    second = list(make_train_dataset("shanghaitech/part_a", image_cache_bytes=2**30, **common))
    assert image_cache.used_bytes() == used
    for batches in (first, second):
        for key in uncached[0]:
            np.testing.assert_array_equal(batches[0][key], uncached[0][key])


@pytest.mark.parametrize("options", [dict(batch_size=1), dict(batch_size=2, max_points=300),
                                     dict(batch_size=2, resize={"kind": "shorter_side", "min_size": 800,
                                                                "max_size": 2048})])
def test_evaluation_batches_agree(sha_sample_data_dir, options):
    assert_same_batches(*both(make_eval_dataset, "shanghaitech/part_a", split="train",
                              data_dir=sha_sample_data_dir, **options))
    assert_same_batches(*both(make_eval_dataset, "synthetic_crowd", split="val", synthetic=SYNTHETIC, **options))


def test_unknown_loader():
    with pytest.raises(ValueError, match="loader must be one of"):
        make_train_dataset("synthetic_crowd", crop_size=32, batch_size=4, max_points=8, seed=0, synthetic=SYNTHETIC,
                           loader="torch")
    with pytest.raises(ValueError, match="loader must be one of"):
        make_eval_dataset("synthetic_crowd", split="val", synthetic=SYNTHETIC, loader="pandas")


@pytest.mark.parametrize("options", [dict(split="test", crop_size=512),
                                     dict(split="test", crop_size=512, min_size_policy="upscale")])
def test_uint8_training_batches_agree(sha_sample_data_dir, options):
    tf_batches, grain_batches = both(make_train_dataset, "shanghaitech/part_a", batch_size=1, max_points=1024, seed=1,
                                     data_dir=sha_sample_data_dir, normalize=False, **options)
    for a, b in zip(tf_batches, grain_batches):
        assert a.keys() == b.keys() and a["image"].dtype == b["image"].dtype == np.uint8
        # Rounding resized values to levels: values within round-off of a half level may land
        # on either side (the resizes differ by less than a level: bilinear_atol((746, 1024)) ≈ 0.08).
        assert np.abs(a["image"].astype(int) - b["image"]).max() <= 1
        for key in a.keys() - {"image"}:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)


class _CorruptSource:
    """One stored example whose JPEG is cut short after its header."""

    encoded, has_boxes, cache_key = True, False, ("corrupt", "train")

    def __init__(self, data: bytes):
        self._data = data

    def __len__(self):
        return 1

    def read(self, index):
        return {"image": self._data, "points": np.zeros([0, 2], np.float32), "count": np.float32(0),
                "filename": "IMG_77.jpg"}


@pytest.mark.parametrize("cache_bytes", [0, 2**30])
@pytest.mark.parametrize("loader", ["tf.data", "grain"])
def test_a_corrupt_image_names_its_file(loader, cache_bytes):
    from gcc_jax.data import _grain, _tf_data
    from gcc_jax.data.examples import TrainExamples
    from gcc_jax.data.plan import ResizeRule
    from raw_layouts import SAMPLE_DIR

    data = (SAMPLE_DIR / "part_B/train_data/images/IMG_3.jpg").read_bytes()
    backend = {"tf.data": _tf_data, "grain": _grain}[loader]
    for broken in (data[:3000], b"not an image at all"):  # truncated pixels; no readable header
        examples = TrainExamples(_CorruptSource(broken), seed=0, epoch=0, rule=ResizeRule(), crop_size=64,
                                 max_points=8, min_size_policy="pad", flip=True, min_fraction=0.3,
                                 head_size_range=(4.0, 128.0))  # fmt: skip
        image_cache.clear()
        with pytest.raises(ValueError, match="IMG_77.jpg"):
            list(backend.train_batches(examples, [0], batch_size=1, parallelism=1, prefetch=1, cache_bytes=cache_bytes))


@pytest.mark.parametrize("loader", ["tf.data", "grain"])
def test_a_corrupt_evaluation_image_names_its_file(loader):
    from gcc_jax.data import _grain, _tf_data
    from gcc_jax.data.examples import EvalExamples
    from gcc_jax.data.plan import ResizeRule
    from raw_layouts import SAMPLE_DIR

    data = (SAMPLE_DIR / "part_B/train_data/images/IMG_3.jpg").read_bytes()
    backend = {"tf.data": _tf_data, "grain": _grain}[loader]
    examples = EvalExamples(_CorruptSource(data[:3000]), rule=ResizeRule(), max_points=None)
    with pytest.raises(ValueError, match="IMG_77.jpg"):
        list(backend.eval_batches(examples, [0], batch_size=1, pad_multiple=16, parallelism=1, prefetch=1))
