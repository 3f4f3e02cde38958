"""tf.data training and evaluation pipelines that yield numpy batches ready for ``jax.device_put``.

Training (:func:`make_train_dataset`) yields one epoch of fixed-shape batches: reference
random crops (see :mod:`gcc_jax.data.ops`) with points padded to ``max_points`` and a mask. The epoch order is
one global permutation drawn from ``(seed, epoch)``; global batch ``s`` is
``perm[s·B : (s+1)·B]`` and process ``p`` of ``P`` takes its ``b = B / P`` consecutive slice of
it, so processes read disjoint examples and together form exactly the global batch. Every
random choice for an example (crop corner, flip) comes from a stateless seed derived from
``(seed, epoch, example index)``: batches are identical whatever the parallelism, and
``skip_batches=k`` resumes an epoch at batch ``k`` without reading the skipped examples.

Evaluation (:func:`make_eval_dataset`) yields full images, resized by the data set's reference
rule, normalised and zero-padded (0 = the ImageNet mean colour after normalisation) to a
multiple of ``pad_multiple``; process ``p`` evaluates examples ``p, p + P, p + 2P, …``.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Iterator

import numpy as np
import tensorflow as tf

from gcc_jax.data import ops
from gcc_jax.data.catalog import get_spec
from gcc_jax.data.sources import open_source
from gcc_jax.imagenet import IMAGENET_MEAN, IMAGENET_STD

__all__ = [
    "EvalDataset",
    "TrainEpoch",
    "make_eval_dataset",
    "make_train_dataset",
    "train_steps_per_epoch",
]

_log = logging.getLogger(__name__)

_MIN_SIZE_POLICIES = ("pad", "upscale")
_MEAN_255 = np.asarray(IMAGENET_MEAN, np.float32) * 255.0
_INV_STD_255 = 1.0 / (np.asarray(IMAGENET_STD, np.float32) * 255.0)

# TensorFlow only reads and augments data here: keep it off any GPU so that it never
# reserves accelerator memory that JAX needs (a no-op with tensorflow-cpu).
try:
    tf.config.set_visible_devices([], "GPU")
except (RuntimeError, ValueError):  # devices already initialised by the caller
    pass


def _normalise(image):
    # Same formula and constants as gcc_jax.imagenet.normalize_images, written with TF ops
    # because that function does not accept the symbolic tensors of a tf.data graph.
    return (tf.cast(image, tf.float32) - _MEAN_255) * _INV_STD_255


def _resize_rule(name: str, resize) -> ops.ResizeRule:
    if isinstance(resize, str) and resize == "default":
        return get_spec(name).resize
    return ops.ResizeRule.from_value(resize)


def _check_process(process_index: int, process_count: int) -> None:
    if process_count < 1 or not 0 <= process_index < process_count:
        raise ValueError(f"need 0 <= process_index < process_count, got {process_index} and {process_count}")


def _decode(image, encoded: bool):
    if encoded:
        image = tf.io.decode_image(image, channels=3, expand_animations=False)
    return tf.ensure_shape(image, [None, None, 3])


def _steps(num_examples: int, batch_size: int, drop_remainder: bool) -> int:
    return num_examples // batch_size if drop_remainder else math.ceil(num_examples / batch_size)


def _example_seed(seed: int, epoch: int, index: int) -> np.ndarray:
    # A well-mixed, collision-free stateless seed per (seed, epoch, example).
    return np.random.SeedSequence([seed, epoch, index]).generate_state(2, np.uint32).astype(np.int64)


class TrainEpoch:
    """One epoch of training batches for this process: iterable, with ``len()`` = batches.

    Each batch is a dict of numpy arrays (``b`` = per-process batch, ``c`` = crop size,
    ``M`` = ``max_points``):

    * ``image`` float32 ``[b, c, c, 3]``: ImageNet-normalised crop;
    * ``points`` float32 ``[b, M, 2]``: ``(x, y)`` crop pixels (0 for padding);
    * ``point_mask`` bool ``[b, M]``;
    * ``targets`` float32 ``[b, M]``: fraction of each head box inside the crop (0 for padding);
    * ``st_size`` float32 ``[b]``: ``min(H, W)`` of the source image after any resize / upscale;
    * ``num_points`` int32 ``[b]``: points in the crop before padding;
    * ``num_dropped`` int32 ``[b]``: points lost because ``M`` was too small (logged).

    Attributes:
      num_examples: examples in the split (all processes).
      steps: batches in this epoch (after ``skip_batches``), the same on every process when
        ``drop_remainder``.
      batch_size: per-process batch ``b``.
    """

    def __init__(self, dataset: tf.data.Dataset, *, num_examples: int, steps: int, batch_size: int, max_points: int):
        self._dataset = dataset
        self.num_examples = num_examples
        self.steps = steps
        self.batch_size = batch_size
        self._max_points = max_points

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        for step, batch in enumerate(self._dataset.as_numpy_iterator()):
            dropped = int(batch["num_dropped"].sum())
            if dropped:
                _log.warning(
                    "max_points=%d is too small: %d head points dropped from batch %d (largest crop has %d)",
                    self._max_points, dropped, step, int(batch["num_points"].max()),
                )
            yield batch

    @property
    def dataset(self) -> tf.data.Dataset:
        """The underlying ``tf.data.Dataset`` (tensors; no dropped-point warnings)."""
        return self._dataset


def train_steps_per_epoch(
    name: str,
    *,
    split: str = "train",
    batch_size: int,
    drop_remainder: bool = True,
    data_dir=None,
    manual_dir=None,
    synthetic=None,
) -> int:
    """Number of global batches in one training epoch (``N // batch_size`` by default)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    source = open_source(name, split=split, data_dir=data_dir, manual_dir=manual_dir, synthetic=synthetic)
    return _steps(len(source), batch_size, drop_remainder)


def make_train_dataset(
    name: str,
    *,
    split: str = "train",
    crop_size: int,
    batch_size: int,
    max_points: int,
    seed: int,
    epoch: int = 0,
    data_dir=None,
    manual_dir=None,
    process_index: int = 0,
    process_count: int = 1,
    min_size_policy: str = "pad",
    drop_remainder: bool = True,
    synthetic=None,
    resize="default",
    skip_batches: int = 0,
    min_fraction: float = 0.3,
    head_size_range: tuple[float, float] = (4.0, 128.0),
    flip: bool = True,
    num_parallel_calls: int = tf.data.AUTOTUNE,
    prefetch: int = 2,
) -> TrainEpoch:
    """One epoch of reference random-crop training batches for this process.

    Per example: decode; resize by ``resize`` (the data set's reference rule by default, see
    :mod:`gcc_jax.data.catalog`); if the shorter side is below ``crop_size``, ``"pad"``
    (bottom / right, with the ImageNet mean colour, so 0 after normalisation) or
    ``"upscale"`` (DM-Count's rule); head sizes ``clip(3-NN distance, *head_size_range)``; a
    uniform random ``c × c`` crop keeping heads with ``≥ min_fraction`` of their box inside
    (targets = that fraction); a horizontal flip with probability ½ (``x → c − x``);
    ImageNet normalisation; points padded to ``max_points``.

    Args:
      name: data set name (see :data:`gcc_jax.data.catalog.DATASET_NAMES`).
      split: split to read (TFDS expressions like ``"train+val"`` work for real data sets).
      crop_size: crop side ``c`` in pixels.
      batch_size: *global* batch ``B``; must be divisible by ``process_count``.
      max_points: fixed point count ``M`` per crop.
      seed: non-negative base seed.
      epoch: epoch number; the order and augmentations depend on ``(seed, epoch)``.
      data_dir: TFDS data directory (``None`` = TFDS default).
      manual_dir: raw files; the data set is built from them on first use.
      process_index: this process ``p``.
      process_count: number of processes ``P``.
      min_size_policy: ``"pad"`` or ``"upscale"`` for images smaller than the crop.
      drop_remainder: drop the last partial global batch (keeps every process in step).
      synthetic: options for ``"synthetic_crowd"`` (dict / ``SyntheticCrowdOptions``).
      resize: ``"default"``, ``None`` (no resize), a ``ResizeRule`` or a dict of its fields.
      skip_batches: start the epoch at this batch (resuming).
      min_fraction: keep threshold of the crop rule (0.3 in the references).
      head_size_range: clip range of head box sides in pixels.
      flip: random horizontal flips.
      num_parallel_calls: parallelism of the per-example map.
      prefetch: batches prepared ahead.

    Returns:
      A :class:`TrainEpoch` (iterable of numpy dict batches, with ``len()``).
    """
    if crop_size < 1 or max_points < 1:
        raise ValueError(f"crop_size and max_points must be >= 1, got {crop_size} and {max_points}")
    if seed < 0 or epoch < 0 or skip_batches < 0:
        raise ValueError(f"seed, epoch and skip_batches must be >= 0, got {seed}, {epoch}, {skip_batches}")
    _check_process(process_index, process_count)
    if batch_size < 1 or batch_size % process_count:
        raise ValueError(f"batch_size {batch_size} must be a positive multiple of process_count {process_count}")
    if min_size_policy not in _MIN_SIZE_POLICIES:
        raise ValueError(f"min_size_policy must be one of {_MIN_SIZE_POLICIES}, got {min_size_policy!r}")
    rule = _resize_rule(name, resize)
    source = open_source(
        name, split=split, data_dir=data_dir, manual_dir=manual_dir, synthetic=synthetic, allow_build=process_count == 1
    )
    num_examples = len(source)
    local_batch = batch_size // process_count
    steps = _steps(num_examples, batch_size, drop_remainder)
    if steps == 0:
        raise ValueError(
            f"{name} split {split!r} has {num_examples} examples, fewer than one batch of {batch_size} "
            "(use a smaller batch_size or drop_remainder=False)"
        )
    permutation = np.random.default_rng([seed, epoch]).permutation(num_examples)
    order = [
        int(index)
        for step in range(skip_batches, steps)
        for index in permutation[step * batch_size : (step + 1) * batch_size][
            process_index * local_batch : (process_index + 1) * local_batch
        ]
    ]

    def generate():
        for index in order:
            example = source.read(index)
            yield {
                "image": example["image"],
                "points": example["points"],
                "head_sizes": ops.knn_head_sizes(example["points"]),
                "seed": _example_seed(seed, epoch, index),
            }

    image_spec = tf.TensorSpec([], tf.string) if source.encoded else tf.TensorSpec([None, None, 3], tf.uint8)
    dataset = tf.data.Dataset.from_generator(
        generate,
        output_signature={
            "image": image_spec,
            "points": tf.TensorSpec([None, 2], tf.float32),
            "head_sizes": tf.TensorSpec([None], tf.float32),
            "seed": tf.TensorSpec([2], tf.int64),
        },
    )
    lo, hi = head_size_range

    def transform(example):
        image = _decode(example["image"], source.encoded)
        points, head_sizes = example["points"], example["head_sizes"]
        if rule.kind != "none":  # without a rule the image stays uint8 until it is cropped
            shape = tf.shape(image)
            height, width, scale_x, scale_y = ops.resize_shape(shape[0], shape[1], rule)
            image, points = ops.resize_with_points(
                image, points, height=height, width=width, scale_x=scale_x, scale_y=scale_y
            )
            head_sizes = head_sizes * tf.sqrt(scale_x * scale_y)
        if min_size_policy == "upscale":
            image, points, ratio = ops.upscale_to_min_size(image, points, min_size=crop_size)
            head_sizes = head_sizes * ratio
        shape = tf.shape(image)
        st_size = tf.cast(tf.reduce_min(shape[:2]), tf.float32)
        crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(example["seed"], 2))
        # "pad": a smaller image is cropped as if padded at the bottom / right; the padding is
        # added to the normalised crop as 0 (the ImageNet mean colour), never to the full image.
        top, left = ops.random_crop_offsets(
            tf.maximum(shape[0], crop_size), tf.maximum(shape[1], crop_size), crop_size=crop_size, seed=crop_seed
        )
        crop, points, targets = ops.crop_with_points(
            image,
            points,
            tf.clip_by_value(head_sizes, lo, hi),
            top=top,
            left=left,
            crop_size=crop_size,
            min_fraction=min_fraction,
        )
        crop = ops.pad_to_min_size(_normalise(crop), min_size=crop_size)
        crop = tf.ensure_shape(crop, [crop_size, crop_size, 3])
        if flip:
            crop, points = tf.cond(
                tf.random.stateless_uniform([], flip_seed) < 0.5,
                lambda: ops.flip_with_points(crop, points),
                lambda: (crop, points),
            )
        out = ops.pad_points(points, targets, max_points=max_points)
        out["image"] = crop
        out["st_size"] = st_size
        return out

    dataset = dataset.map(transform, num_parallel_calls=num_parallel_calls, deterministic=True)
    dataset = dataset.batch(local_batch, drop_remainder=False).prefetch(prefetch)
    local_steps = math.ceil(len(order) / local_batch) if order else 0
    return TrainEpoch(dataset, num_examples=num_examples, steps=local_steps, batch_size=local_batch, max_points=max_points)


class EvalDataset:
    """This process's evaluation batches: iterable, with ``len()`` = batches.

    Each batch is a dict of numpy arrays (``b`` ≤ ``batch_size``; ``H'``, ``W'`` multiples of
    ``pad_multiple``; ``M`` = ``max_points`` or the most points in the batch):

    * ``image`` float32 ``[b, H', W', 3]``: resized, normalised, zero-padded bottom / right;
    * ``image_hw`` int32 ``[b, 2]``: true ``(height, width)`` of the resized image (the valid
      region is ``image[:, :height, :width]``);
    * ``count`` float32 ``[b]``: true head count (NaN for unannotated images, NWPU test);
    * ``points`` float32 ``[b, M, 2]`` ``(x, y)`` in resized-image pixels, ``point_mask``
      bool ``[b, M]``, ``num_points`` int32 ``[b]``;
    * ``boxes`` float32 ``[b, M, 4]`` ``(x1, y1, x2, y2)`` resized pixels (NWPU, JHU only);
    * ``filename`` bytes ``[b]``;
    * ``scale`` float32 ``[b]``: resize factor (divide resized coordinates by it to get
      original pixels); ``scale_xy`` float32 ``[b, 2]`` the per-axis factors (they differ only
      under ``"dmcount_fit"``).

    Attributes:
      num_examples: examples this process evaluates.
      steps: number of batches.
    """

    def __init__(self, dataset: tf.data.Dataset, *, num_examples: int, steps: int, max_points: int | None):
        self._dataset = dataset
        self.num_examples = num_examples
        self.steps = steps
        self._max_points = max_points

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for batch in self._dataset.as_numpy_iterator():
            if self._max_points is not None:
                dropped = int(np.maximum(batch["num_points"] - self._max_points, 0).sum())
                if dropped:
                    _log.warning(
                        "max_points=%d is too small: %d evaluation points dropped in %s (count is unaffected)",
                        self._max_points, dropped, [f.decode() for f in batch["filename"]],
                    )
            yield batch

    @property
    def dataset(self) -> tf.data.Dataset:
        """The underlying ``tf.data.Dataset``."""
        return self._dataset


def make_eval_dataset(
    name: str,
    *,
    split: str,
    data_dir=None,
    manual_dir=None,
    process_index: int = 0,
    process_count: int = 1,
    batch_size: int = 1,
    pad_multiple: int = 16,
    max_points: int | None = None,
    synthetic=None,
    resize="default",
    num_parallel_calls: int = tf.data.AUTOTUNE,
    prefetch: int = 2,
) -> EvalDataset:
    """Full-image evaluation batches for this process.

    Process ``p`` of ``P`` evaluates examples ``p, p + P, …`` of the split, so the processes
    cover the split exactly once between them (sum their metrics). With ``batch_size > 1``
    examples are sorted by padded size before batching (size buckets), so little padding is
    wasted; the last batch may be smaller.

    Args:
      name: data set name.
      split: split to read.
      data_dir: TFDS data directory.
      manual_dir: raw files; the data set is built from them on first use.
      process_index: this process ``p``.
      process_count: number of processes ``P``.
      batch_size: images per batch (per process).
      pad_multiple: image sides are padded up to a multiple of this.
      max_points: fixed point count ``M`` (``None`` = the most in each batch). Extra points
        are dropped from ``points`` with a warning; ``count`` always holds the true count.
      synthetic: options for ``"synthetic_crowd"``.
      resize: ``"default"`` (reference rule), ``None``, a ``ResizeRule`` or a dict.
      num_parallel_calls: parallelism of the per-example map.
      prefetch: batches prepared ahead.

    Returns:
      An :class:`EvalDataset`.
    """
    _check_process(process_index, process_count)
    if batch_size < 1 or pad_multiple < 1:
        raise ValueError(f"batch_size and pad_multiple must be >= 1, got {batch_size} and {pad_multiple}")
    if max_points is not None and max_points < 1:
        raise ValueError(f"max_points must be >= 1 or None, got {max_points}")
    rule = _resize_rule(name, resize)
    source = open_source(
        name, split=split, data_dir=data_dir, manual_dir=manual_dir, synthetic=synthetic, allow_build=process_count == 1
    )
    indices = list(range(process_index, len(source), process_count))
    if batch_size > 1 and indices:
        sizes = np.asarray([source.image_size(i) for i in indices], np.int64)
        height, width, _, _ = ops.resize_shape(sizes[:, 0], sizes[:, 1], rule)
        padded_h = -(-np.asarray(height) // pad_multiple) * pad_multiple
        padded_w = -(-np.asarray(width) // pad_multiple) * pad_multiple
        indices = [indices[i] for i in np.lexsort((np.asarray(indices), padded_w, padded_h))]

    def generate():
        for index in indices:
            example = source.read(index)
            out = {k: example[k] for k in ("image", "points", "count", "filename")}
            if source.has_boxes:
                out["boxes"] = example["boxes"]
            yield out

    signature = {
        "image": tf.TensorSpec([], tf.string) if source.encoded else tf.TensorSpec([None, None, 3], tf.uint8),
        "points": tf.TensorSpec([None, 2], tf.float32),
        "count": tf.TensorSpec([], tf.float32),
        "filename": tf.TensorSpec([], tf.string),
    }
    if source.has_boxes:
        signature["boxes"] = tf.TensorSpec([None, 4], tf.float32)
    dataset = tf.data.Dataset.from_generator(generate, output_signature=signature)

    def transform(example):
        image = _decode(example["image"], source.encoded)
        shape = tf.shape(image)
        height, width, scale_x, scale_y = ops.resize_shape(shape[0], shape[1], rule)
        image, points = ops.resize_with_points(
            image, example["points"], height=height, width=width, scale_x=scale_x, scale_y=scale_y
        )
        num_points = tf.shape(points)[0]
        out = {
            "image": ops.pad_image_to_multiple(_normalise(image), multiple=pad_multiple),
            "image_hw": tf.stack([height, width]),
            "count": example["count"],
            "filename": example["filename"],
            "scale": tf.sqrt(scale_x * scale_y),
            "scale_xy": tf.stack([scale_x, scale_y]),
            "num_points": tf.cast(num_points, tf.int32),
        }
        boxes = None
        if source.has_boxes:
            boxes = example["boxes"] * tf.stack([scale_x, scale_y, scale_x, scale_y])
        if max_points is None:
            out["points"] = points
            out["point_mask"] = tf.ones([num_points], tf.bool)
            if boxes is not None:
                out["boxes"] = boxes
        else:
            padded = ops.pad_points(points, tf.zeros([num_points]), max_points=max_points)
            out["points"] = padded["points"]
            out["point_mask"] = padded["point_mask"]
            if boxes is not None:
                kept = tf.minimum(num_points, max_points)
                out["boxes"] = tf.ensure_shape(tf.pad(boxes[:kept], [[0, max_points - kept], [0, 0]]), [max_points, 4])
        return out

    dataset = dataset.map(transform, num_parallel_calls=num_parallel_calls, deterministic=True)
    dataset = dataset.padded_batch(batch_size).prefetch(prefetch)
    return EvalDataset(
        dataset, num_examples=len(indices), steps=math.ceil(len(indices) / batch_size), max_points=max_points
    )
