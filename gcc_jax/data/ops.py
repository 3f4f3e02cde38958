"""Image + head-point operations that move an image and its points together.

Every function here is a TensorFlow function that works eagerly and inside ``tf.data``
(``Dataset.map``): shapes may be dynamic, randomness is *stateless* (an explicit ``seed``
of shape ``[2]``), so a pipeline built from these ops is deterministic whatever its
parallelism. The one exception is :func:`knn_head_sizes`, a numpy function run where the
points are read (it needs a k-d tree).

Conventions: images are ``[H, W, 3]`` (row-major, channels last); points are ``[n, 2]``
float32 ``(x, y)`` = (column, row) in pixels of that image, with the pixel ``(r, c)`` covering
``[c, c + 1) × [r, r + 1)``. A point may lie anywhere in ``[0, W] × [0, H]``.

The training crop reproduces the reference loaders of GL and BL: every head gets a
square box of side ``d = clip(mean distance to its 3 nearest neighbours, 4, 128)`` centred on
its point; a random ``c × c`` crop keeps a point when at least 30 % of its box lies inside
the crop, and the kept fraction is the point's *target* (what BL's loader hands its loss).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf
from scipy import spatial

__all__ = [
    "ResizeRule",
    "crop_with_points",
    "flip_with_points",
    "head_box_fraction",
    "knn_head_sizes",
    "pad_image_to_multiple",
    "pad_points",
    "pad_to_min_size",
    "random_crop_offsets",
    "resize_shape",
    "resize_with_points",
    "upscale_to_min_size",
]

_RESIZE_KINDS = ("none", "shorter_side", "dmcount_fit")


@dataclasses.dataclass(frozen=True)
class ResizeRule:
    """How a full image is resized before cropping or evaluation, as the references' loaders do.

    Attributes:
      kind: ``"none"`` (keep the image as it is); ``"shorter_side"`` (BL / GL's
        ``cal_new_size``: if the shorter side is below ``min_size`` scale it up to
        ``min_size``, if above ``max_size`` scale it down to ``max_size``, else keep; the
        other side becomes ``round(side · ratio)`` and points are scaled by the single
        ``ratio``); ``"dmcount_fit"`` (DM-Count's ``cal_new_size_v2`` for NWPU: fit the
        longer side to ``max_size``, keep the shorter side ``≥ min_size``, floor both sides to
        multiples of 16 and clamp them to ``[min_size, max_size]``; x and y get their own
        factors).
      min_size: lower bound in pixels (ignored for ``"none"``).
      max_size: upper bound in pixels (ignored for ``"none"``).
    """

    kind: str = "none"
    min_size: int = 512
    max_size: int = 2048

    def __post_init__(self):
        if self.kind not in _RESIZE_KINDS:
            raise ValueError(f"ResizeRule.kind must be one of {_RESIZE_KINDS}, got {self.kind!r}")
        if self.kind != "none" and not 0 < self.min_size <= self.max_size:
            raise ValueError(
                f"ResizeRule needs 0 < min_size <= max_size, got min_size={self.min_size}, "
                f"max_size={self.max_size}"
            )

    @classmethod
    def from_value(cls, value) -> "ResizeRule":
        """Accepts a ``ResizeRule``, a dict of its fields, or ``None`` (= ``kind="none"``)."""
        if value is None:
            return cls(kind="none")
        if isinstance(value, cls):
            return value
        if isinstance(value, dict) or hasattr(value, "items"):
            return cls(**dict(value.items()))
        raise ValueError(f"resize must be a ResizeRule, a dict of its fields or None, got {value!r}")


def resize_shape(height, width, rule: ResizeRule):
    """Output size and point scale factors of ``rule`` for an ``height × width`` image.

    Args:
      height: image height ``H`` in pixels (int or scalar tensor).
      width: image width ``W`` in pixels (int or scalar tensor).
      rule: the :class:`ResizeRule`.

    Returns:
      ``(new_height, new_width, scale_x, scale_y)``: int32 scalars and the float32 factors
      that map a point ``(x, y)`` of the original image to ``(scale_x · x, scale_y · y)``.
      Sides are rounded half-to-even like Python's ``round`` (what the reference uses).
    """
    h = tf.cast(height, tf.float64)
    w = tf.cast(width, tf.float64)
    if rule.kind == "none":
        one = tf.constant(1.0, tf.float32)
        return tf.cast(height, tf.int32), tf.cast(width, tf.int32), one, one
    lo = tf.constant(float(rule.min_size), tf.float64)
    hi = tf.constant(float(rule.max_size), tf.float64)
    if rule.kind == "shorter_side":
        short = tf.minimum(h, w)
        ratio = tf.where(short < lo, lo / short, tf.where(short > hi, hi / short, tf.ones_like(short)))
        new_h = tf.cast(tf.round(h * ratio), tf.int32)
        new_w = tf.cast(tf.round(w * ratio), tf.int32)
        scale = tf.cast(ratio, tf.float32)
        return new_h, new_w, scale, scale
    # "dmcount_fit": DM-Count's cal_new_size_v2, step by step.
    sixteen = tf.constant(16.0, tf.float64)

    def floor16(value):
        return tf.floor(value / sixteen) * sixteen

    rate = hi / h
    rate = tf.where(w * rate > hi, hi / w, rate)
    rate = tf.where(floor16(h * rate) < lo, lo / h, rate)
    rate = tf.where(floor16(w * rate) < lo, lo / w, rate)
    new_h = tf.clip_by_value(floor16(h * rate), lo, hi)
    new_w = tf.clip_by_value(floor16(w * rate), lo, hi)
    return (
        tf.cast(new_h, tf.int32),
        tf.cast(new_w, tf.int32),
        tf.cast(new_w / w, tf.float32),
        tf.cast(new_h / h, tf.float32),
    )


def resize_with_points(image, points, *, height, width, scale_x, scale_y):
    """Resizes an image bilinearly and scales its points.

    Bilinear with half-pixel centres and no anti-aliasing, which is what OpenCV's default
    ``cv2.resize`` (used by the reference preprocessing) computes.

    Args:
      image: ``[H, W, 3]`` image (any real dtype).
      points: ``[n, 2]`` float32 ``(x, y)`` in image pixels.
      height: output height ``H'``.
      width: output width ``W'``.
      scale_x: factor applied to x (normally ``W'/W``; the reference's single ``ratio`` for
        ``"shorter_side"``).
      scale_y: factor applied to y.

    Returns:
      ``(image [H', W', 3] float32, points [n, 2] float32)``. An image whose size does not
      change is only cast to float32.
    """
    image = tf.convert_to_tensor(image)
    points = tf.convert_to_tensor(points, tf.float32)
    size = tf.stack([tf.cast(height, tf.int32), tf.cast(width, tf.int32)])
    same = tf.reduce_all(tf.equal(tf.shape(image)[:2], size))
    resized = tf.cond(
        same,
        lambda: tf.cast(image, tf.float32),
        lambda: tf.image.resize(image, size, method="bilinear", antialias=False),
    )
    scale = tf.stack([tf.cast(scale_x, tf.float32), tf.cast(scale_y, tf.float32)])
    return resized, points * scale


def upscale_to_min_size(image, points, *, min_size: int):
    """Scales an image up (bilinear) so that its shorter side is at least ``min_size``.

    DM-Count's rule for crops larger than the image: ``ratio = min_size / min(H, W)``, sides
    ``round(side · ratio)``, points ``· ratio``. Images already large enough are unchanged.

    Args:
      image: ``[H, W, 3]`` image.
      points: ``[n, 2]`` float32 ``(x, y)``.
      min_size: the smallest allowed side, e.g. the crop size ``c``.

    Returns:
      ``(image [H', W', 3] float32, points [n, 2] float32, ratio float32 scalar)``.
    """
    shape = tf.shape(image)
    h = tf.cast(shape[0], tf.float64)
    w = tf.cast(shape[1], tf.float64)
    short = tf.minimum(h, w)
    ratio = tf.maximum(tf.constant(float(min_size), tf.float64) / short, 1.0)
    new_h = tf.cast(tf.round(h * ratio), tf.int32)
    new_w = tf.cast(tf.round(w * ratio), tf.int32)
    ratio32 = tf.cast(ratio, tf.float32)
    image, points = resize_with_points(image, points, height=new_h, width=new_w, scale_x=ratio32, scale_y=ratio32)
    return image, points, ratio32


def pad_to_min_size(image, *, min_size: int, value=0.0):
    """Pads an image at the bottom and right so that both sides are at least ``min_size``.

    Points need no change (the top-left corner stays put).

    Args:
      image: ``[H, W, C]`` image.
      min_size: smallest allowed side in pixels.
      value: fill value, a scalar or a per-channel ``[C]`` sequence.

    Returns:
      ``[max(H, min_size), max(W, min_size), C]`` image of the input dtype.
    """
    image = tf.convert_to_tensor(image)
    shape = tf.shape(image)
    pad_h = tf.maximum(min_size - shape[0], 0)
    pad_w = tf.maximum(min_size - shape[1], 0)
    return _pad_bottom_right(image, pad_h, pad_w, value)


def pad_image_to_multiple(image, *, multiple: int = 16, value=0.0):
    """Pads an image at the bottom and right to sides that are multiples of ``multiple``.

    Args:
      image: ``[H, W, C]`` image.
      multiple: the side granularity (16 = the VGG density map's stride 8 times 2).
      value: fill value (0 on a normalised image is the ImageNet mean colour).

    Returns:
      ``[⌈H/m⌉·m, ⌈W/m⌉·m, C]`` image of the input dtype.
    """
    if multiple < 1:
        raise ValueError(f"multiple must be >= 1, got {multiple}")
    image = tf.convert_to_tensor(image)
    shape = tf.shape(image)
    pad_h = (-shape[0]) % multiple
    pad_w = (-shape[1]) % multiple
    return _pad_bottom_right(image, pad_h, pad_w, value)


def _pad_bottom_right(image, pad_h, pad_w, value):
    # tf.pad only takes a scalar fill; a per-channel fill is written where a padded
    # validity mask is False (dtype-safe, no arithmetic on uint8 images).
    fill = tf.cast(tf.convert_to_tensor(value), image.dtype)

    def pad():
        paddings = [[0, pad_h], [0, pad_w], [0, 0]]
        padded = tf.pad(image, paddings)
        valid = tf.pad(tf.ones(tf.concat([tf.shape(image)[:2], [1]], 0), tf.bool), paddings)
        return tf.where(valid, padded, tf.broadcast_to(fill, tf.shape(padded)))

    # Most images need no padding: skip the full-image pass for them.
    return tf.cond(pad_h + pad_w > 0, pad, lambda: tf.identity(image))


def head_box_fraction(points, head_sizes, *, left, top, size):
    """Fraction of each head box that lies inside a square window.

    The box of head ``j`` is the square of side ``d_j`` centred on ``(x_j, y_j)``; the window
    is ``[left, left + size] × [top, top + size]``. Returns
    ``clip(area(box ∩ window) / d_j², 0, 1)``.

    Args:
      points: ``[n, 2]`` float32 ``(x, y)``.
      head_sizes: ``[n]`` float32 box sides ``d`` (already clipped, > 0).
      left: window's left edge x (pixels).
      top: window's top edge y (pixels).
      size: window side (pixels).

    Returns:
      ``[n]`` float32 fractions in ``[0, 1]``.
    """
    points = tf.convert_to_tensor(points, tf.float32)
    d = tf.convert_to_tensor(head_sizes, tf.float32)
    left = tf.cast(left, tf.float32)
    top = tf.cast(top, tf.float32)
    size = tf.cast(size, tf.float32)
    half = d / 2.0
    inner_w = tf.maximum(
        tf.minimum(left + size, points[:, 0] + half) - tf.maximum(left, points[:, 0] - half), 0.0
    )
    inner_h = tf.maximum(
        tf.minimum(top + size, points[:, 1] + half) - tf.maximum(top, points[:, 1] - half), 0.0
    )
    return tf.clip_by_value(inner_w * inner_h / (d * d), 0.0, 1.0)


def crop_with_points(image, points, head_sizes, *, top, left, crop_size: int, min_fraction: float = 0.3):
    """Cuts a ``c × c`` window out of an image and keeps the heads that are inside it.

    A head is kept when at least ``min_fraction`` of its box (see
    :func:`head_box_fraction`) lies in the window; kept points are shifted to window
    coordinates ``(x − left, y − top)`` and are *not* clipped (a kept head may sit a little
    outside the window, as in the reference). An image smaller than the window behaves as if
    padded at the bottom / right: the window may reach past its edge, and the returned crop
    is then smaller than ``c × c`` (pad it afterwards, e.g. with :func:`pad_to_min_size`).

    Args:
      image: ``[H, W, C]`` image.
      points: ``[n, 2]`` float32 ``(x, y)`` image pixels.
      head_sizes: ``[n]`` float32 head box sides.
      top: window's first row.
      left: window's first column.
      crop_size: window side ``c``.
      min_fraction: the keep threshold (0.3 in the reference).

    Returns:
      ``(crop [min(c, H − top), min(c, W − left), C], points [k, 2] float32 crop pixels,
      fractions [k] float32)``.
    """
    image = tf.convert_to_tensor(image)
    points = tf.convert_to_tensor(points, tf.float32)
    crop = image[top : top + crop_size, left : left + crop_size]
    fraction = head_box_fraction(points, head_sizes, left=left, top=top, size=crop_size)
    keep = fraction >= min_fraction
    offset = tf.stack([tf.cast(left, tf.float32), tf.cast(top, tf.float32)])
    kept = tf.reshape(tf.boolean_mask(points, keep), [-1, 2]) - offset
    return crop, kept, tf.boolean_mask(fraction, keep)


def random_crop_offsets(height, width, *, crop_size: int, seed):
    """Uniform random top-left corner of a ``c × c`` window inside ``H × W``.

    Like the reference's ``random.randint(0, H − c)`` (both ends included), but stateless.

    Args:
      height: image height ``H ≥ c``.
      width: image width ``W ≥ c``.
      crop_size: window side ``c``.
      seed: ``[2]`` int32/int64 stateless seed.

    Returns:
      ``(top, left)`` int32 scalars.
    """
    seed_top, seed_left = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    top = tf.random.stateless_uniform(
        [], seed_top, minval=0, maxval=tf.cast(height, tf.int32) - crop_size + 1, dtype=tf.int32
    )
    left = tf.random.stateless_uniform(
        [], seed_left, minval=0, maxval=tf.cast(width, tf.int32) - crop_size + 1, dtype=tf.int32
    )
    return top, left


def flip_with_points(image, points):
    """Mirrors an image left–right and maps each point ``x → W − x``.

    Args:
      image: ``[H, W, C]`` image.
      points: ``[n, 2]`` float32 ``(x, y)``.

    Returns:
      ``(flipped image [H, W, C], points [n, 2])``. Pixel column ``j`` moves to ``W − 1 − j``,
      so a point at the centre of pixel ``j`` (``x = j + ½``) lands at the centre of its new
      pixel.
    """
    image = tf.convert_to_tensor(image)
    points = tf.convert_to_tensor(points, tf.float32)
    width = tf.cast(tf.shape(image)[1], tf.float32)
    flipped = tf.stack([width - points[:, 0], points[:, 1]], axis=-1)
    return tf.reverse(image, axis=[1]), tf.reshape(flipped, [-1, 2])


def pad_points(points, targets, *, max_points: int):
    """Pads (or truncates) points to a fixed count with a boolean mask.

    Args:
      points: ``[k, 2]`` float32 ``(x, y)``.
      targets: ``[k]`` float32 per-point targets.
      max_points: fixed output count ``M``. When ``k > M`` the first ``M`` points are kept
        and the rest are reported in ``num_dropped`` (callers must surface it).

    Returns:
      dict with ``points`` ``[M, 2]`` float32 (0 for padding), ``point_mask`` ``[M]`` bool,
      ``targets`` ``[M]`` float32 (0 for padding), ``num_points`` int32 (= ``k``, before
      padding or truncation) and ``num_dropped`` int32 (= ``max(k − M, 0)``).
    """
    if max_points < 1:
        raise ValueError(f"max_points must be >= 1, got {max_points}")
    points = tf.reshape(tf.convert_to_tensor(points, tf.float32), [-1, 2])
    targets = tf.reshape(tf.convert_to_tensor(targets, tf.float32), [-1])
    count = tf.shape(points)[0]
    kept = tf.minimum(count, max_points)
    pad = max_points - kept
    padded_points = tf.pad(points[:kept], [[0, pad], [0, 0]])
    padded_targets = tf.pad(targets[:kept], [[0, pad]])
    mask = tf.range(max_points) < kept
    return {
        "points": tf.ensure_shape(padded_points, [max_points, 2]),
        "point_mask": tf.ensure_shape(mask, [max_points]),
        "targets": tf.ensure_shape(padded_targets, [max_points]),
        "num_points": tf.cast(count, tf.int32),
        "num_dropped": tf.cast(count - kept, tf.int32),
    }


def knn_head_sizes(points: np.ndarray, *, k: int = 3) -> np.ndarray:
    """Mean distance from each point to its ``k`` nearest other points (numpy).

    The head-size estimate of the GL / BL preprocessing, before clipping to
    ``[4, 128]``. With fewer than ``k`` other points the mean runs over those that exist; a
    lone point (or an image with one head) gets 0, which the clip turns into the smallest
    head (4 px): it is then kept exactly when it lies in the crop.

    Args:
      points: ``[n, 2]`` ``(x, y)`` pixels.
      k: number of neighbours.

    Returns:
      ``[n]`` float32 distances in pixels.
    """
    points = np.asarray(points, np.float64).reshape(-1, 2)
    n = len(points)
    if n < 2:
        return np.zeros([n], np.float32)
    neighbours = min(k, n - 1)
    distances, _ = spatial.cKDTree(points).query(points, k=neighbours + 1)
    # Column 0 is the point itself (distance 0); duplicates are fine, their distance is 0.
    return distances[:, 1:].mean(axis=1).astype(np.float32)
