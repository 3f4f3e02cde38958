"""The tf.data backend of the input pipelines (see :mod:`gcc_jax.data.pipeline`).

A Python generator walks the epoch's example order and hands each example's raw image and
decisions (:mod:`gcc_jax.data.examples`) to a parallel ``tf.data`` map that decodes and moves
the pixels with TensorFlow ops (:mod:`gcc_jax.data.ops`).

Decoded training images are cached (:mod:`gcc_jax.data.image_cache`). A cached image is handed
over already cut to its crop window when no resize is needed. An image not yet cached is handed
over encoded and decoded inside the parallel map, on every core (TensorFlow's eager decode,
called from Python threads, runs one image at a time); while the budget lasts, the generator
books the image's room in the cache and the map hands the decoded image over.

A decoding error inside the map does not say which image failed: the pipeline then decodes the
failing batch's images again one by one, and names the file.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Hashable
from typing import Iterator

import numpy as np
import tensorflow as tf

from gcc_jax.data import image_cache, ops
from gcc_jax.data.examples import EvalExamples, TrainExample, TrainExamples

__all__ = ["eval_batches", "train_batches"]

_NO_PIXELS = np.zeros([0, 0, 3], np.uint8)

# TensorFlow only reads and augments data here: keep it off any GPU so that it never
# reserves accelerator memory that JAX needs (a no-op with tensorflow-cpu).
try:
    tf.config.set_visible_devices([], "GPU")
except (RuntimeError, ValueError):  # devices already initialised by the caller
    pass


def _decode_now(encoded: bytes, filename: str) -> np.ndarray:
    try:
        return ops.decode_image(encoded).numpy()
    except tf.errors.InvalidArgumentError as error:
        raise ValueError(f"cannot decode image {filename}: {error.message}") from error


class _CacheBookings:
    """Cache room booked by one epoch's generator for images that its parallel map decodes.

    A booking is a slot number that travels with the example; the map hands the decoded image
    to :meth:`fill` with it. Slots not filled when the epoch ends (abandoned midway) are
    released, so the room they held is not lost to later epochs.
    """

    _open: dict[int, Hashable] = {}  # every epoch's slots still to fill
    _numbers = itertools.count()

    def __init__(self, max_bytes: int):
        self._max_bytes = max_bytes
        self._mine: list[int] = []

    def book(self, key: Hashable, nbytes: int) -> int:
        """A slot for ``key``'s image, or -1 when it is not to be cached."""
        if not image_cache.reserve(key, nbytes, max_bytes=self._max_bytes):
            return -1
        slot = next(self._numbers)
        self._open[slot] = key
        self._mine.append(slot)
        return slot

    def release(self) -> None:
        keys = [self._open.pop(slot, None) for slot in self._mine]
        image_cache.release([key for key in keys if key is not None])

    @classmethod
    def fill(cls, slot, image: np.ndarray) -> np.bool_:
        key = cls._open.pop(int(slot), None)
        if key is not None:  # a copy: the map's tensor buffer is not ours to keep
            image_cache.fill(key, np.array(image))
        return np.bool_(True)


def _train_pixels(example: TrainExample, source, *, crop_size: int, bookings: _CacheBookings):
    """``(encoded bytes, uint8 pixels, needs_resize, corner, cache slot)``: one of the two
    images is empty; the slot is -1 unless the map is to cache the image it decodes."""
    crop = example.crop
    needs_resize = crop.resized_hw != crop.image_hw or crop.upscaled_hw != crop.resized_hw
    corner = np.asarray([crop.top, crop.left], np.int32)
    if source.encoded:
        key = (source.cache_key, "tf", example.index)
        pixels = image_cache.lookup(key)
        if pixels is None:
            slot = bookings.book(key, crop.image_hw[0] * crop.image_hw[1] * 3)
            return example.read_image(), _NO_PIXELS, needs_resize, corner, slot
    else:
        pixels = example.read_image()
    if not needs_resize:  # hand over the window only
        pixels = pixels[crop.top : crop.top + crop_size, crop.left : crop.left + crop_size]
        corner = np.zeros([2], np.int32)
    return b"", pixels, needs_resize, corner, -1


def _cached(slot, image):
    """``image``, once handed to the cache under ``slot``."""
    done = tf.numpy_function(_CacheBookings.fill, [slot, image], tf.bool, stateful=True)
    with tf.control_dependencies([done]):
        return tf.identity(image)


_IMAGE_KEYS = ("encoded", "pixels", "needs_resize", "corner", "resized_hw", "upscaled_hw", "flip", "slot")


@functools.lru_cache(maxsize=16)
def _train_transform(crop_size: int, max_points: int, normalize: bool):
    """The generator's output signature and the map function of a training pipeline.

    Traced once per setting and reused by every epoch's pipeline: tracing the map function
    costs ~0.4 s of CPU, which an epoch of a few hundred images would otherwise pay each time.
    """
    signature = {
        "encoded": tf.TensorSpec([], tf.string), "pixels": tf.TensorSpec([None, None, 3], tf.uint8),
        "needs_resize": tf.TensorSpec([], tf.bool), "corner": tf.TensorSpec([2], tf.int32),
        "resized_hw": tf.TensorSpec([2], tf.int32), "upscaled_hw": tf.TensorSpec([2], tf.int32),
        "flip": tf.TensorSpec([], tf.bool), "points": tf.TensorSpec([max_points, 2], tf.float32),
        "point_mask": tf.TensorSpec([max_points], tf.bool), "targets": tf.TensorSpec([max_points], tf.float32),
        "num_points": tf.TensorSpec([], tf.int32), "num_dropped": tf.TensorSpec([], tf.int32),
        "st_size": tf.TensorSpec([], tf.float32), "slot": tf.TensorSpec([], tf.int64),
    }  # fmt: skip
    if not normalize:
        signature["crop_box"] = tf.TensorSpec([4], tf.int32)

    @tf.function(input_signature=[signature], autograph=False)
    def transform(item):
        image = tf.cond(tf.size(item["pixels"]) > 0, lambda: item["pixels"], lambda: ops.decode_image(item["encoded"]))
        image = tf.cond(item["slot"] >= 0, lambda: _cached(item["slot"], image), lambda: image)
        out = {key: value for key, value in item.items() if key not in _IMAGE_KEYS}
        out["image"] = ops.crop_train_image(
            image, needs_resize=item["needs_resize"], resized_hw=item["resized_hw"], upscaled_hw=item["upscaled_hw"],
            corner=item["corner"], flip=item["flip"], crop_size=crop_size, normalize=normalize,
        )  # fmt: skip
        return out

    return signature, transform


def train_batches(examples: TrainExamples, order: list[int], *, batch_size: int, parallelism: int | None,
                  prefetch: int, cache_bytes: int) -> Iterator[dict[str, np.ndarray]]:
    """This process's training batches of one epoch (``order``: example indices in order)."""
    crop_size, max_points = examples.crop_size, examples.max_points
    bookings = _CacheBookings(cache_bytes)

    def generate():
        for index in order:
            example = examples(index)
            encoded, pixels, needs_resize, corner, slot = _train_pixels(
                example, examples.source, crop_size=crop_size, bookings=bookings
            )
            yield {
                "encoded": encoded, "pixels": pixels, "needs_resize": needs_resize, "corner": corner,
                "resized_hw": np.asarray(example.crop.resized_hw, np.int32),
                "upscaled_hw": np.asarray(example.crop.upscaled_hw, np.int32),
                "flip": example.crop.flip, "slot": slot, **example.points,
            }  # fmt: skip

    def undecodable(batch: int):
        for index in order[batch * batch_size : (batch + 1) * batch_size]:
            example = examples(index)
            if examples.source.encoded:
                _decode_now(example.read_image(), example.filename)

    signature, transform = _train_transform(crop_size, max_points, examples.normalize)
    dataset = tf.data.Dataset.from_generator(generate, output_signature=signature)
    dataset = dataset.map(transform, num_parallel_calls=parallelism or tf.data.AUTOTUNE, deterministic=True)
    try:
        yield from _numpy_batches(dataset.batch(batch_size).prefetch(prefetch), undecodable)
    finally:
        bookings.release()


def _numpy_batches(dataset: tf.data.Dataset, undecodable) -> Iterator[dict[str, np.ndarray]]:
    """The batches as numpy arrays; on an error, ``undecodable(batch number)`` raises the
    ValueError that names the file if one of that batch's images cannot be decoded."""
    # An exception in the generator reaches us wrapped in a TensorFlow error; bad input raises
    # ValueError (naming the file where the generator knew it) as in the Grain pipeline.
    done = 0
    try:
        for batch in _with_options(dataset).as_numpy_iterator():
            yield batch
            done += 1
    except tf.errors.InvalidArgumentError as error:
        undecodable(done)
        raise ValueError(f"input pipeline failed: {error.message}") from error


def _with_options(dataset: tf.data.Dataset) -> tf.data.Dataset:
    options = tf.data.Options()
    # Each op of the map runs on one thread; the map's parallel calls use the cores (TF's
    # advice for input pipelines; it also avoids idle intra-op threads spinning on the CPU).
    options.threading.max_intra_op_parallelism = 1
    return dataset.with_options(options)


def eval_batches(examples: EvalExamples, order: list[int], *, batch_size: int, pad_multiple: int,
                 parallelism: int | None, prefetch: int) -> Iterator[dict[str, np.ndarray]]:
    """This process's evaluation batches (``order``: example indices in order)."""
    source = examples.source
    has_boxes = source.has_boxes

    def generate():
        for index in order:
            example = examples(index)
            encoded, pixels = (example.image, _NO_PIXELS) if source.encoded else (b"", example.image)
            yield {"encoded": encoded, "pixels": pixels, **example.entries}

    points = examples.max_points  # None: each example's own count, padded per batch
    signature = {
        "encoded": tf.TensorSpec([], tf.string), "pixels": tf.TensorSpec([None, None, 3], tf.uint8),
        "image_hw": tf.TensorSpec([2], tf.int32), "count": tf.TensorSpec([], tf.float32),
        "filename": tf.TensorSpec([], tf.string), "scale": tf.TensorSpec([], tf.float32),
        "scale_xy": tf.TensorSpec([2], tf.float32), "num_points": tf.TensorSpec([], tf.int32),
        "points": tf.TensorSpec([points, 2], tf.float32), "point_mask": tf.TensorSpec([points], tf.bool),
    }  # fmt: skip
    if has_boxes:
        signature["boxes"] = tf.TensorSpec([points, 4], tf.float32)

    def undecodable(batch: int):
        if source.encoded:
            for index in order[batch * batch_size : (batch + 1) * batch_size]:
                example = examples(index)
                _decode_now(example.image, example.filename)

    def transform(item):
        image = tf.cond(tf.size(item["pixels"]) > 0, lambda: item["pixels"], lambda: ops.decode_image(item["encoded"]))
        out = {key: value for key, value in item.items() if key not in ("encoded", "pixels")}
        out["image"] = ops.eval_image(image, item["image_hw"], pad_multiple=pad_multiple)
        return out

    dataset = tf.data.Dataset.from_generator(generate, output_signature=signature)
    dataset = dataset.map(transform, num_parallel_calls=parallelism or tf.data.AUTOTUNE, deterministic=True)
    return _numpy_batches(dataset.padded_batch(batch_size).prefetch(prefetch), undecodable)
