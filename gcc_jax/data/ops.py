"""TensorFlow image operations of the tf.data pipeline (the twins of :mod:`gcc_jax.data.images`).

Every function works eagerly and inside ``tf.data`` (``Dataset.map``), with dynamic shapes.
They only move pixels: what to crop, resize or flip is decided beforehand in numpy
(:mod:`gcc_jax.data.plan`), so the tf.data and Grain pipelines take the same decisions.

Conventions: images are ``[H, W, 3]`` (row-major, channels last).

Backend: TensorFlow tensors in, TensorFlow tensors out, for the tf.data pipeline
(:mod:`gcc_jax.data._tf_data`) only. :func:`decode_image`, :func:`crop_train_image` and
:func:`eval_image` have numpy twins of the same names in :mod:`gcc_jax.data.images`, which the
Grain pipeline and TensorFlow-free code use; the two give the same pixels (tested).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from gcc_jax.imagenet import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["crop_train_image", "decode_image", "eval_image", "normalize_image", "resize_image"]

_MEAN_255 = np.asarray(IMAGENET_MEAN, np.float32) * 255.0
_INV_STD_255 = 1.0 / (np.asarray(IMAGENET_STD, np.float32) * 255.0)


def decode_image(data):
    """Decodes PNG / JPEG bytes to uint8 RGB ``[H, W, 3]``.

    JPEGs use libjpeg-turbo's accurate integer IDCT (``dct_method="INTEGER_ACCURATE"``), which
    is also PIL's, so both pipelines decode a JPEG to the same pixels; TensorFlow's default
    (the fast IDCT) differs from it by up to 5 grey levels.
    """
    data = tf.convert_to_tensor(data, tf.string)

    def jpeg():
        return tf.io.decode_jpeg(data, channels=3, dct_method="INTEGER_ACCURATE")

    def other():
        return tf.io.decode_image(data, channels=3, expand_animations=False)

    return tf.ensure_shape(tf.cond(tf.io.is_jpeg(data), jpeg, other), [None, None, 3])


def resize_image(image, height, width):
    """Bilinear resize (half-pixel centres, no anti-aliasing) to ``height × width``, float32.

    What OpenCV's default ``cv2.resize`` (used by the reference preprocessing) computes; an
    image whose size does not change is only cast to float32.
    """
    image = tf.convert_to_tensor(image)
    size = tf.stack([tf.cast(height, tf.int32), tf.cast(width, tf.int32)])
    same = tf.reduce_all(tf.equal(tf.shape(image)[:2], size))
    return tf.cond(
        same,
        lambda: tf.cast(image, tf.float32),
        lambda: tf.image.resize(image, size, method="bilinear", antialias=False),
    )


def normalize_image(image):
    """ImageNet normalisation ``(x − 255·mean) / (255·std)`` in float32 (the formula of
    :func:`gcc_jax.imagenet.normalize_images`, written with TF ops for tf.data graphs)."""
    return (tf.cast(image, tf.float32) - _MEAN_255) * _INV_STD_255


def crop_train_image(image, *, needs_resize, resized_hw, upscaled_hw, corner, flip, crop_size: int,
                     normalize: bool = True):
    """Executes a training crop plan (:class:`gcc_jax.data.plan.TrainCrop`) on an image.

    Args:
      image: uint8 ``[H, W, 3]`` image.
      needs_resize: bool scalar; when False the image is cropped as it is (uint8 until the
        crop, so the full image is never converted).
      resized_hw: ``[2]`` size after the resize rule.
      upscaled_hw: ``[2]`` size after the upscale policy.
      corner: ``[2]`` ``(top, left)`` of the window.
      flip: bool scalar.
      crop_size: crop side ``c``.
      normalize: ImageNet-normalise (float32); else uint8 pixels (resized ones rounded
        half-to-even).

    Returns:
      ``[c, c, 3]``: the window, zero-padded at the bottom / right where it passes the
      image's edge, mirrored if ``flip``.
    """
    top, left = corner[0], corner[1]

    def resized():
        full = resize_image(resize_image(image, resized_hw[0], resized_hw[1]), upscaled_hw[0], upscaled_hw[1])
        window = full[top : top + crop_size, left : left + crop_size]
        return window if normalize else tf.cast(tf.clip_by_value(tf.round(window), 0, 255), tf.uint8)

    def plain():
        window = image[top : top + crop_size, left : left + crop_size]
        return tf.cast(window, tf.float32) if normalize else window

    window = tf.cond(needs_resize, resized, plain)
    window = normalize_image(window) if normalize else window
    shape = tf.shape(window)
    crop = tf.pad(window, [[0, crop_size - shape[0]], [0, crop_size - shape[1]], [0, 0]])
    crop = tf.ensure_shape(crop, [crop_size, crop_size, 3])
    return tf.cond(flip, lambda: tf.reverse(crop, axis=[1]), lambda: crop)


def eval_image(image, image_hw, *, pad_multiple: int):
    """An image resized to ``image_hw``, normalised and zero-padded at the bottom / right to
    sides that are multiples of ``pad_multiple`` (float32 ``[H', W', 3]``)."""
    resized = normalize_image(resize_image(image, image_hw[0], image_hw[1]))
    shape = tf.shape(resized)
    return tf.pad(resized, [[0, (-shape[0]) % pad_multiple], [0, (-shape[1]) % pad_multiple], [0, 0]])
