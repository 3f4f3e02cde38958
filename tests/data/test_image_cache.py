"""The decoded-image cache: its budget, bookings for images decoded elsewhere, and an epoch
abandoned midway (no room lost)."""

import numpy as np
import pytest

from gcc_jax.data import image_cache, make_train_dataset

# ShanghaiTech part A sample, training split: two JPEGs of 664 x 1000 and 746 x 1024 pixels.
SAMPLE_TRAIN_BYTES = 664 * 1000 * 3 + 746 * 1024 * 3


@pytest.fixture(autouse=True)
def empty_cache():
    image_cache.clear()
    yield
    image_cache.clear()


def test_a_booking_holds_its_room_until_filled_or_released():
    image = np.ones([2, 5, 3], np.uint8)
    assert image_cache.reserve("a", 30, max_bytes=64)
    assert not image_cache.reserve("a", 30, max_bytes=64)  # booked already
    assert not image_cache.reserve("b", 40, max_bytes=64)  # 30 + 40 > 64
    assert image_cache.lookup("a") is None and image_cache.used_bytes() == 30
    image_cache.fill("a", image)
    assert image_cache.lookup("a") is image and not image.flags.writeable
    assert not image_cache.reserve("a", 30, max_bytes=64)  # held
    assert image_cache.reserve("b", 30, max_bytes=64)
    image_cache.release(["a", "b"])  # "a" is held, not booked: kept
    assert image_cache.used_bytes() == 30 and image_cache.lookup("a") is image
    image_cache.fill("b", image.copy())  # released before it came: dropped
    assert image_cache.lookup("b") is None and image_cache.used_bytes() == 30


def test_get_or_decode_does_not_take_a_booked_key():
    assert image_cache.reserve("a", 30, max_bytes=64)
    image = image_cache.get_or_decode("a", lambda: np.zeros([2, 5, 3], np.uint8), max_bytes=64)
    assert image.shape == (2, 5, 3) and image_cache.lookup("a") is None and image_cache.used_bytes() == 30


def test_an_abandoned_tf_data_epoch_gives_back_what_it_booked(sha_sample_data_dir):
    common = dict(crop_size=256, batch_size=1, max_points=1024, seed=3, data_dir=sha_sample_data_dir,
                  loader="tf.data", image_cache_bytes=2**30, num_parallel_calls=1, prefetch=1)  # fmt: skip
    batches = iter(make_train_dataset("shanghaitech/part_a", **common))
    next(batches)
    batches.close()
    # Whatever the map decoded before the close is kept; nothing stays booked.
    assert image_cache.used_bytes() in (664 * 1000 * 3, 746 * 1024 * 3, SAMPLE_TRAIN_BYTES)
    list(make_train_dataset("shanghaitech/part_a", **common))
    assert image_cache.used_bytes() == SAMPLE_TRAIN_BYTES
