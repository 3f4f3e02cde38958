"""What the input pipelines do to every example, decided in numpy and shared by both backends.

The tf.data and Grain pipelines differ only in *how* they decode and move pixels. Everything
that can change a batch's meaning is decided here, once, from plain numbers:

* the epoch order (:func:`train_order`): one global permutation drawn from ``(seed, epoch)``;
  global batch ``s`` is ``perm[s·B : (s+1)·B]`` and process ``p`` of ``P`` takes its
  ``B / P`` consecutive slice of it; resuming at batch ``k`` starts the order there;
* the evaluation order (:func:`eval_order`): examples ``p, p + P, …`` of process ``p``,
  sorted by padded size when batching several images;
* the resize rules (:class:`ResizeRule`, :func:`resize_shape`, :func:`upscale_shape`);
* per training example (:func:`plan_train_crop`): the crop corner and the flip, drawn from
  ``numpy.random.default_rng([seed, epoch, index])``, so they depend on nothing but the
  example and never on the parallelism or the backend;
* the points (:func:`train_points`, :func:`eval_points`): scaling, the head boxes of side
  ``clip(3-NN distance, 4, 128)``, the reference crop rule (a head is kept when at least 30 %
  of its box lies in the crop; the kept fraction is its *target*), the flip ``x → c − x``,
  and the padding to a fixed count with a mask.

Conventions: images are ``[H, W, 3]``; points are float32 ``[n, 2]`` ``(x, y)`` = (column,
row) pixels, the pixel ``(r, c)`` covering ``[c, c + 1) × [r, r + 1)``.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy import spatial

__all__ = [
    "MIN_SIZE_POLICIES",
    "ResizeRule",
    "TrainCrop",
    "eval_order",
    "eval_points",
    "head_box_fraction",
    "knn_head_sizes",
    "pad_points",
    "plan_train_crop",
    "resize_shape",
    "train_order",
    "train_points",
    "upscale_shape",
]

MIN_SIZE_POLICIES = ("pad", "upscale")
_RESIZE_KINDS = ("none", "shorter_side", "dmcount_fit")


@dataclasses.dataclass(frozen=True)
class ResizeRule:
    """How a full image is resized before cropping or evaluation.

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
      height: image height ``H`` in pixels (int or integer array).
      width: image width ``W`` in pixels (same shape as ``height``).
      rule: the :class:`ResizeRule`.

    Returns:
      ``(new_height, new_width, scale_x, scale_y)``: int64 sides and the float32 factors that
      map a point ``(x, y)`` of the original image to ``(scale_x · x, scale_y · y)``; scalars
      for scalar input. Sides are rounded half-to-even like Python's ``round`` (what the
      reference uses); the ratios are computed in float64.
    """
    h = np.asarray(height, np.float64)
    w = np.asarray(width, np.float64)
    if rule.kind == "none":
        one = np.ones_like(h, np.float32)
        return h.astype(np.int64), w.astype(np.int64), one, one
    lo, hi = float(rule.min_size), float(rule.max_size)
    if rule.kind == "shorter_side":
        short = np.minimum(h, w)
        ratio = np.where(short < lo, lo / short, np.where(short > hi, hi / short, 1.0))
        scale = ratio.astype(np.float32)
        return np.round(h * ratio).astype(np.int64), np.round(w * ratio).astype(np.int64), scale, scale
    # "dmcount_fit": DM-Count's cal_new_size_v2, step by step.
    rate = hi / h
    rate = np.where(w * rate > hi, hi / w, rate)
    rate = np.where(np.floor(h * rate / 16) * 16 < lo, lo / h, rate)
    rate = np.where(np.floor(w * rate / 16) * 16 < lo, lo / w, rate)
    new_h = np.clip(np.floor(h * rate / 16) * 16, lo, hi)
    new_w = np.clip(np.floor(w * rate / 16) * 16, lo, hi)
    return new_h.astype(np.int64), new_w.astype(np.int64), (new_w / w).astype(np.float32), (new_h / h).astype(np.float32)


def upscale_shape(height: int, width: int, *, min_size: int) -> tuple[int, int, np.float32]:
    """DM-Count's rule for images smaller than the crop: scale so the shorter side is ``min_size``.

    ``ratio = max(min_size / min(H, W), 1)``, sides ``round(side · ratio)``.

    Returns:
      ``(new_height, new_width, ratio)`` (``ratio`` float32; 1 when the image is large enough).
    """
    ratio = max(float(min_size) / min(height, width), 1.0)
    return int(round(height * ratio)), int(round(width * ratio)), np.float32(ratio)


def knn_head_sizes(points: np.ndarray, *, k: int = 3) -> np.ndarray:
    """Mean distance from each point to its ``k`` nearest other points.

    The head-size estimate of the GL / BL preprocessing, before clipping to ``[4, 128]``.
    With fewer than ``k`` other points the mean runs over those that exist; a lone point
    (or an image with one head) gets 0, which the clip turns into the smallest head (4 px):
    it is then kept exactly when it lies in the crop.

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


def head_box_fraction(points, head_sizes, *, left, top, size) -> np.ndarray:
    """Fraction of each head box that lies inside a square window.

    The box of head ``j`` is the square of side ``d_j`` centred on ``(x_j, y_j)``; the window
    is ``[left, left + size] × [top, top + size]``. Returns
    ``clip(area(box ∩ window) / d_j², 0, 1)``, computed in float32.

    Args:
      points: ``[n, 2]`` ``(x, y)``.
      head_sizes: ``[n]`` box sides ``d`` (already clipped, > 0).
      left: window's left edge x (pixels).
      top: window's top edge y (pixels).
      size: window side (pixels).

    Returns:
      ``[n]`` float32 fractions in ``[0, 1]``.
    """
    points = np.asarray(points, np.float32).reshape(-1, 2)
    d = np.asarray(head_sizes, np.float32)
    left, top, size = np.float32(left), np.float32(top), np.float32(size)
    half = d / np.float32(2)
    inner_w = np.maximum(np.minimum(left + size, points[:, 0] + half) - np.maximum(left, points[:, 0] - half), 0)
    inner_h = np.maximum(np.minimum(top + size, points[:, 1] + half) - np.maximum(top, points[:, 1] - half), 0)
    return np.clip(inner_w * inner_h / (d * d), 0, 1).astype(np.float32)


def pad_points(points, targets, *, max_points: int) -> dict[str, np.ndarray]:
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
    points = np.asarray(points, np.float32).reshape(-1, 2)
    targets = np.asarray(targets, np.float32).reshape(-1)
    count = len(points)
    kept = min(count, max_points)
    padded_points = np.zeros([max_points, 2], np.float32)
    padded_points[:kept] = points[:kept]
    padded_targets = np.zeros([max_points], np.float32)
    padded_targets[:kept] = targets[:kept]
    return {
        "points": padded_points,
        "point_mask": np.arange(max_points) < kept,
        "targets": padded_targets,
        "num_points": np.int32(count),
        "num_dropped": np.int32(count - kept),
    }


def train_order(
    num_examples: int,
    *,
    batch_size: int,
    seed: int,
    epoch: int,
    process_index: int = 0,
    process_count: int = 1,
    skip_batches: int = 0,
    drop_remainder: bool = True,
) -> tuple[list[int], int]:
    """The example indices this process reads in one training epoch, in order.

    Args:
      num_examples: examples in the split.
      batch_size: global batch ``B`` (a multiple of ``process_count``).
      seed: base seed.
      epoch: epoch number.
      process_index: this process ``p``.
      process_count: number of processes ``P``.
      skip_batches: global batches already consumed (resuming).
      drop_remainder: drop the last partial global batch.

    Returns:
      ``(order, steps)``: this process's example indices (``B / P`` per batch) and the
      number of global batches in the whole epoch (before skipping).
    """
    steps = num_examples // batch_size if drop_remainder else math.ceil(num_examples / batch_size)
    local = batch_size // process_count
    permutation = np.random.default_rng([seed, epoch]).permutation(num_examples)
    order = [
        int(index)
        for step in range(skip_batches, steps)
        for index in permutation[step * batch_size : (step + 1) * batch_size][
            process_index * local : (process_index + 1) * local
        ]
    ]
    return order, steps


def eval_order(
    num_examples: int,
    image_size,
    *,
    process_index: int,
    process_count: int,
    batch_size: int,
    rule: ResizeRule,
    pad_multiple: int,
) -> list[int]:
    """The example indices this process evaluates, in order.

    Process ``p`` takes examples ``p, p + P, …``. With ``batch_size > 1`` they are sorted by
    padded size (height, then width, then index), so each batch wastes little padding.

    Args:
      num_examples: examples in the split.
      image_size: callable ``index -> (height, width)`` of the stored image (called only
        when sorting).
      process_index: this process ``p``.
      process_count: number of processes ``P``.
      batch_size: images per batch.
      rule: the resize rule (sizes are compared after resizing).
      pad_multiple: side granularity of the padded images.
    """
    indices = list(range(process_index, num_examples, process_count))
    if batch_size == 1 or not indices:
        return indices
    sizes = np.asarray([image_size(i) for i in indices], np.int64)
    height, width, _, _ = resize_shape(sizes[:, 0], sizes[:, 1], rule)
    padded_h = -(-height // pad_multiple) * pad_multiple
    padded_w = -(-width // pad_multiple) * pad_multiple
    return [indices[i] for i in np.lexsort((np.asarray(indices), padded_w, padded_h))]


@dataclasses.dataclass(frozen=True)
class TrainCrop:
    """Everything one training crop needs, in the order the image goes through it.

    1. resize the stored ``image_hw`` image to ``resized_hw`` (the resize rule; points
       ``· (scale_x, scale_y)``);
    2. resize that to ``upscaled_hw`` (the ``"upscale"`` min-size policy; points ``· ratio``);
    3. cut rows ``top : top + c`` and columns ``left : left + c``; when the image is smaller
       than the crop the window reaches past its bottom / right edge and the missing part is
       filled with 0 after normalisation (the ImageNet mean colour);
    4. mirror the crop left–right if ``flip``.

    Attributes:
      image_hw: stored image size.
      resized_hw: size after the resize rule (``image_hw`` when it changes nothing).
      scale_x: point factor of step 1 along x.
      scale_y: point factor of step 1 along y.
      upscaled_hw: size after step 2 (``resized_hw`` when unchanged).
      ratio: point factor of step 2.
      top: first row of the window in the ``upscaled_hw`` image.
      left: first column of the window.
      flip: mirror the crop.
    """

    image_hw: tuple[int, int]
    resized_hw: tuple[int, int]
    scale_x: np.float32
    scale_y: np.float32
    upscaled_hw: tuple[int, int]
    ratio: np.float32
    top: int
    left: int
    flip: bool

    @property
    def st_size(self) -> float:
        """``min(H, W)`` of the image the crop is cut from (BL's background distance scale)."""
        return float(min(self.upscaled_hw))

    def valid_hw(self, crop_size: int) -> tuple[int, int]:
        """Rows and columns of the crop that hold image pixels (the rest is padding)."""
        return min(crop_size, self.upscaled_hw[0] - self.top), min(crop_size, self.upscaled_hw[1] - self.left)

    def pixel_box(self, crop_size: int) -> np.ndarray:
        """int32 ``[4]`` ``(top, left, bottom, right)``: the part of the finished (flipped) crop
        that holds image pixels, bottom / right exclusive; the rest is padding."""
        valid_h, valid_w = self.valid_hw(crop_size)
        left = crop_size - valid_w if self.flip else 0
        return np.asarray([0, left, valid_h, left + valid_w], np.int32)


def plan_train_crop(
    image_hw: tuple[int, int],
    *,
    seed: int,
    epoch: int,
    index: int,
    rule: ResizeRule,
    crop_size: int,
    min_size_policy: str,
    flip: bool,
) -> TrainCrop:
    """The resize sizes, the uniform random crop corner and the flip of one training example.

    The corner is uniform over every window inside the (padded) image, both ends included
    like the reference's ``random.randint(0, H − c)``; the flip has probability ½. Both come
    from ``numpy.random.default_rng([seed, epoch, index])``.
    """
    height, width = (int(s) for s in image_hw)
    new_h, new_w, scale_x, scale_y = resize_shape(height, width, rule)
    resized = (int(new_h), int(new_w))
    upscaled, ratio = resized, np.float32(1)
    if min_size_policy == "upscale":
        up_h, up_w, ratio = upscale_shape(*resized, min_size=crop_size)
        upscaled = (up_h, up_w)
    rng = np.random.default_rng([seed, epoch, index])
    top = int(rng.integers(max(upscaled[0], crop_size) - crop_size + 1))
    left = int(rng.integers(max(upscaled[1], crop_size) - crop_size + 1))
    flipped = bool(rng.random() < 0.5) and flip
    return TrainCrop((height, width), resized, np.float32(scale_x), np.float32(scale_y), upscaled, ratio, top, left, flipped)


def train_points(
    points,
    head_sizes,
    crop: TrainCrop,
    *,
    crop_size: int,
    min_fraction: float,
    head_size_range: tuple[float, float],
    max_points: int,
) -> dict[str, np.ndarray]:
    """The points of one training crop: scaled, kept by the crop rule, flipped and padded.

    Args:
      points: ``[n, 2]`` float32 ``(x, y)`` pixels of the stored image.
      head_sizes: ``[n]`` float32 unclipped head sizes (:func:`knn_head_sizes`) of them.
      crop: the example's :class:`TrainCrop`.
      crop_size: crop side ``c``.
      min_fraction: keep threshold on the fraction of a head box inside the crop.
      head_size_range: clip range of the head box sides after scaling.
      max_points: fixed point count ``M``.

    Returns:
      :func:`pad_points`' dict (``points`` in crop pixels, ``point_mask``, ``targets`` = kept
      fractions, ``num_points``, ``num_dropped``) plus ``st_size`` (float32).
    """
    points = np.asarray(points, np.float32).reshape(-1, 2) * np.asarray([crop.scale_x, crop.scale_y], np.float32)
    sizes = np.asarray(head_sizes, np.float32) * np.sqrt(crop.scale_x * crop.scale_y, dtype=np.float32)
    points, sizes = points * crop.ratio, sizes * crop.ratio
    lo, hi = head_size_range
    fraction = head_box_fraction(points, np.clip(sizes, np.float32(lo), np.float32(hi)), left=crop.left,
                                 top=crop.top, size=crop_size)
    keep = fraction >= min_fraction
    kept = points[keep] - np.asarray([crop.left, crop.top], np.float32)
    if crop.flip:
        kept[:, 0] = np.float32(crop_size) - kept[:, 0]
    out = pad_points(kept, fraction[keep], max_points=max_points)
    out["st_size"] = np.float32(crop.st_size)
    return out


def eval_points(example: dict, *, rule: ResizeRule, max_points: int | None) -> dict[str, np.ndarray]:
    """Everything of one evaluation example but its pixels, after the resize rule.

    Args:
      example: a source example (``image`` size known through ``image_hw``, ``points``,
        ``count``, ``filename``, optionally ``boxes``), with ``image_hw`` added.
      rule: the resize rule.
      max_points: fixed point count, or ``None`` for the example's own count.

    Returns:
      dict with ``image_hw`` int32 ``[2]`` (resized), ``count``, ``filename`` (bytes),
      ``scale`` and ``scale_xy``, ``num_points``, ``points`` ``[M, 2]``, ``point_mask``
      ``[M]`` and, where the example has boxes, ``boxes`` ``[M, 4]``.
    """
    height, width, scale_x, scale_y = resize_shape(*example["image_hw"], rule)
    scale_x, scale_y = np.float32(scale_x), np.float32(scale_y)
    points = np.asarray(example["points"], np.float32).reshape(-1, 2) * np.asarray([scale_x, scale_y], np.float32)
    count = len(points)
    size = count if max_points is None else max_points
    out = {
        "image_hw": np.asarray([height, width], np.int32),
        "count": np.float32(example["count"]),
        "filename": example["filename"].encode() if isinstance(example["filename"], str) else example["filename"],
        "scale": np.sqrt(scale_x * scale_y, dtype=np.float32),
        "scale_xy": np.asarray([scale_x, scale_y], np.float32),
        "num_points": np.int32(count),
    }
    padded = pad_points(points, np.zeros([count], np.float32), max_points=max(size, 1))
    kept = min(count, size)
    out["points"] = padded["points"][:size]
    out["point_mask"] = padded["point_mask"][:size]
    if "boxes" in example:
        boxes = np.asarray(example["boxes"], np.float32).reshape(-1, 4) * np.asarray(
            [scale_x, scale_y, scale_x, scale_y], np.float32
        )
        out["boxes"] = np.zeros([size, 4], np.float32)
        out["boxes"][:kept] = boxes[:kept]
    return out
