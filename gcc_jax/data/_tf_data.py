"""The tf.data backend of the input pipelines (see :mod:`gcc_jax.data.pipeline`).

A Python generator walks the epoch's example order and hands each example's raw image and
decisions (:mod:`gcc_jax.data.examples`) to a parallel ``tf.data`` map that decodes and moves
the pixels with TensorFlow ops (:mod:`gcc_jax.data.ops`).

Decoded training images are cached (:mod:`gcc_jax.data.image_cache`): while the budget lasts
the generator decodes a new image itself (eagerly, with the same TensorFlow op) and keeps it;
a cached image is handed over already cut to its crop window when no resize is needed. Images
that do not fit are handed over encoded and decoded inside the parallel map.
"""

from __future__ import annotations

import functools
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


def _train_pixels(example: TrainExample, source, *, crop_size: int, cache_bytes: int):
    """``(encoded bytes, uint8 pixels, needs_resize, corner)``: one of the two images is empty."""
    crop = example.crop
    needs_resize = crop.resized_hw != crop.image_hw or crop.upscaled_hw != crop.resized_hw
    corner = np.asarray([crop.top, crop.left], np.int32)
    if source.encoded:
        key = (source.cache_key, "tf", example.index)
        pixels = image_cache.lookup(key)
        if pixels is None:
            encoded = example.read_image()
            if not image_cache.has_room(crop.image_hw[0] * crop.image_hw[1] * 3, max_bytes=cache_bytes):
                return encoded, _NO_PIXELS, needs_resize, corner
            pixels = image_cache.get_or_decode(key, lambda: _decode_now(encoded, example.filename), max_bytes=cache_bytes)
    else:
        pixels = example.read_image()
    if not needs_resize:  # hand over the window only
        pixels = pixels[crop.top : crop.top + crop_size, crop.left : crop.left + crop_size]
        corner = np.zeros([2], np.int32)
    return b"", pixels, needs_resize, corner


_IMAGE_KEYS = ("encoded", "pixels", "needs_resize", "corner", "resized_hw", "upscaled_hw", "flip")


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
        "st_size": tf.TensorSpec([], tf.float32),
    }  # fmt: skip
    if not normalize:
        signature["crop_box"] = tf.TensorSpec([4], tf.int32)

    @tf.function(input_signature=[signature], autograph=False)
    def transform(item):
        image = tf.cond(tf.size(item["pixels"]) > 0, lambda: item["pixels"], lambda: ops.decode_image(item["encoded"]))
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

    def generate():
        for index in order:
            example = examples(index)
            encoded, pixels, needs_resize, corner = _train_pixels(
                example, examples.source, crop_size=crop_size, cache_bytes=cache_bytes
            )
            yield {
                "encoded": encoded, "pixels": pixels, "needs_resize": needs_resize, "corner": corner,
                "resized_hw": np.asarray(example.crop.resized_hw, np.int32),
                "upscaled_hw": np.asarray(example.crop.upscaled_hw, np.int32),
                "flip": example.crop.flip, **example.points,
            }  # fmt: skip

    signature, transform = _train_transform(crop_size, max_points, examples.normalize)
    dataset = tf.data.Dataset.from_generator(generate, output_signature=signature)
    dataset = dataset.map(transform, num_parallel_calls=parallelism or tf.data.AUTOTUNE, deterministic=True)
    return _numpy_batches(dataset.batch(batch_size).prefetch(prefetch))


def _numpy_batches(dataset: tf.data.Dataset) -> Iterator[dict[str, np.ndarray]]:
    # An exception in the generator reaches us wrapped in a TensorFlow error; bad input raises
    # ValueError (naming the file where the generator knew it) as in the Grain pipeline.
    try:
        yield from _with_options(dataset).as_numpy_iterator()
    except tf.errors.InvalidArgumentError as error:
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

    def transform(item):
        image = tf.cond(tf.size(item["pixels"]) > 0, lambda: item["pixels"], lambda: ops.decode_image(item["encoded"]))
        out = {key: value for key, value in item.items() if key not in ("encoded", "pixels")}
        out["image"] = ops.eval_image(image, item["image_hw"], pad_multiple=pad_multiple)
        return out

    dataset = tf.data.Dataset.from_generator(generate, output_signature=signature)
    dataset = dataset.map(transform, num_parallel_calls=parallelism or tf.data.AUTOTUNE, deterministic=True)
    return _numpy_batches(dataset.padded_batch(batch_size).prefetch(prefetch))
