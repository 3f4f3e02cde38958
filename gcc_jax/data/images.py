"""Pixel work of the Grain pipeline in numpy and PIL: decode, resize, crop, normalise, pad, flip.

The same computations as the tf.data pipeline's TensorFlow ops (:mod:`gcc_jax.data.ops`),
written so that the two give the same numbers:

* decoding is libjpeg-turbo's accurate integer IDCT in both (PIL's default; TensorFlow's
  ``dct_method="INTEGER_ACCURATE"``), which decode a JPEG to identical pixels;
* :func:`resize_bilinear` is ``tf.image.resize(method="bilinear", antialias=False)`` (half-pixel
  centres, no anti-aliasing: what OpenCV's default ``cv2.resize`` of the references computes),
  with the same float32 operations in the same order; it can compute only a window of the
  output, so a crop of a large resized image costs the crop, not the image;
* normalisation is :func:`gcc_jax.imagenet.normalize_images`' formula.

Images are ``[H, W, 3]`` arrays, uint8 as decoded, float32 once resized or normalised.

Backend: numpy arrays in, numpy arrays out, no TensorFlow: the Grain pipeline
(:mod:`gcc_jax.data._grain`) and the example index (:mod:`gcc_jax.data.examples`) use it. :func:`decode_image`,
:func:`crop_train_image` and :func:`eval_image` share their names with the TensorFlow ops of
:mod:`gcc_jax.data.ops` (the tf.data pipeline's), which compute the same pixels.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from gcc_jax.data.plan import TrainCrop
from gcc_jax.imagenet import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["crop_train_image", "decode_image", "encoded_image_size", "eval_image", "normalize_rows",
           "resize_bilinear"]

_MEAN_255 = np.asarray(IMAGENET_MEAN, np.float32) * 255.0
_INV_STD_255 = 1.0 / (np.asarray(IMAGENET_STD, np.float32) * 255.0)


def decode_image(data: bytes, *, filename: str = "?") -> np.ndarray:
    """Decodes PNG / JPEG bytes to uint8 RGB ``[H, W, 3]`` (greyscale images get 3 channels).

    Raises:
      ValueError: the bytes are not a readable image (the message names ``filename``).
    """
    try:
        with Image.open(io.BytesIO(data)) as image:
            pixels = np.asarray(image if image.mode == "RGB" else image.convert("RGB"))
    except (OSError, ValueError, SyntaxError) as error:
        raise ValueError(f"cannot decode image {filename}: {error}") from error
    return pixels


def encoded_image_size(data: bytes, *, filename: str = "?") -> tuple[int, int]:
    """``(height, width)`` of encoded image bytes, from the header (no pixel decoding)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
    except (OSError, ValueError, SyntaxError) as error:
        raise ValueError(f"cannot read the image header of {filename}: {error}") from error
    return height, width


def _taps(in_size: int, out_size: int, start: int, stop: int):
    # TensorFlow's half-pixel scaler, in float32: in = (out + ½) · (in_size / out_size) − ½.
    scale = np.float32(in_size) / np.float32(out_size)
    position = (np.arange(start, stop, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5)
    floor = np.floor(position)
    lower = np.maximum(floor, 0).astype(np.intp)
    upper = np.minimum(np.ceil(position), in_size - 1).astype(np.intp)
    return lower, upper, (position - floor).astype(np.float32)


def resize_bilinear(image: np.ndarray, height: int, width: int, *, rows=None, cols=None) -> np.ndarray:
    """Bilinear resize with half-pixel centres and no anti-aliasing (TensorFlow's formula).

    Args:
      image: ``[H, W, C]`` image (any real dtype).
      height: output height ``H'``.
      width: output width ``W'``.
      rows: ``(start, stop)`` output rows to compute (default all).
      cols: ``(start, stop)`` output columns to compute (default all).

    Returns:
      float32 ``[stop − start rows, stop − start cols, C]``: that window of the resized image.
    """
    rows = rows or (0, height)
    cols = cols or (0, width)
    y0, y1, wy = _taps(image.shape[0], height, *rows)
    x0, x1, wx = _taps(image.shape[1], width, *cols)
    wx = wx[None, :, None]

    def along_x(row_indices):
        lines = image[row_indices].astype(np.float32)
        left, right = lines[:, x0], lines[:, x1]
        return left + (right - left) * wx

    top, bottom = along_x(y0), along_x(y1)
    return top + (bottom - top) * wy[:, None, None]


def normalize_rows(image: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """ImageNet normalisation ``(x − 255·mean) / (255·std)`` of ``[H, W, 3]`` into float32.

    The formula of :func:`gcc_jax.imagenet.normalize_images`, with the constants tiled to a
    whole row (``[W, 3]``): numpy then runs one inner loop of ``3W`` values per row instead
    of one of length 3 per pixel (several times faster on a 512 × 512 crop).

    Args:
      image: ``[H, W, 3]`` image.
      out: optional float32 ``[H, W, 3]`` destination (may be a view into a larger array).
    """
    width = image.shape[1]
    out = np.empty(image.shape, np.float32) if out is None else out
    np.subtract(image, np.tile(_MEAN_255, (width, 1)), out=out, dtype=np.float32)
    np.multiply(out, np.tile(_INV_STD_255, (width, 1)), out=out)
    return out


def _to_uint8(pixels: np.ndarray) -> np.ndarray:
    # Resized pixels rounded half-to-even to the nearest level, as a uint8 cv2.resize gives them.
    return pixels if pixels.dtype == np.uint8 else np.clip(np.rint(pixels), 0, 255).astype(np.uint8)


def crop_train_image(image: np.ndarray, crop: TrainCrop, *, crop_size: int, normalize: bool = True) -> np.ndarray:
    """Applies a :class:`~gcc_jax.data.plan.TrainCrop` to a decoded image.

    Args:
      image: uint8 ``[H, W, 3]`` stored image (``crop.image_hw``).
      crop: the example's resize sizes, window and flip.
      crop_size: crop side ``c``.
      normalize: ImageNet-normalise (float32); else keep uint8 pixels (resized ones rounded).

    Returns:
      ``[c, c, 3]``: the crop, 0 where the window passes the image's edge (after
      normalisation: the ImageNet mean colour), mirrored if ``crop.flip``.
    """
    if tuple(image.shape[:2]) != crop.image_hw:
        raise ValueError(f"image is {image.shape[:2]}, the crop plan was made for {crop.image_hw}")
    if crop.resized_hw != crop.image_hw:
        image = resize_bilinear(image, *crop.resized_hw)
    valid_h, valid_w = crop.valid_hw(crop_size)
    rows, cols = (crop.top, crop.top + valid_h), (crop.left, crop.left + valid_w)
    if crop.upscaled_hw != crop.resized_hw:
        window = resize_bilinear(image, *crop.upscaled_hw, rows=rows, cols=cols)
    else:
        window = image[rows[0] : rows[1], cols[0] : cols[1]]
    out = np.zeros((crop_size, crop_size, 3), np.float32 if normalize else np.uint8)
    if normalize:
        normalize_rows(window, out[:valid_h, :valid_w])
    else:
        out[:valid_h, :valid_w] = _to_uint8(window)
    return out[:, ::-1] if crop.flip else out


def eval_image(image: np.ndarray, image_hw, *, pad_multiple: int) -> np.ndarray:
    """A decoded evaluation image resized to ``image_hw``, normalised and zero-padded at the
    bottom / right to multiples of ``pad_multiple`` (float32 ``[H', W', 3]``)."""
    height, width = (int(s) for s in image_hw)
    if image.shape[:2] != (height, width):
        image = resize_bilinear(image, height, width)
    out = np.zeros((-(-height // pad_multiple) * pad_multiple, -(-width // pad_multiple) * pad_multiple, 3), np.float32)
    normalize_rows(image, out[:height, :width])
    return out
