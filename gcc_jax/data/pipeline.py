"""Training and evaluation input pipelines that yield numpy batches ready for ``jax.device_put``.

Two backends produce the same batches (``loader=``):

* ``"tf.data"`` (the default): a ``tf.data`` graph decodes with TensorFlow and moves the
  pixels; needs TensorFlow;
* ``"grain"``: a Grain ``MapDataset`` over the epoch's example order, decoding with PIL and
  moving pixels with numpy in worker threads; needs no TensorFlow (a prepared TFDS data set is
  read through its ArrayRecord data source).

Everything that decides a batch's content is shared (:mod:`gcc_jax.data.plan` and
:mod:`gcc_jax.data.examples`): the epoch order, the per-example crop corner and flip, the
resize sizes, the kept points and their targets. The images agree up to the float32 round-off
of a resize (JPEG decoding is the same libjpeg-turbo IDCT in both); points, masks, targets and
sizes are equal.

Training (:func:`make_train_dataset`) yields one epoch of fixed-shape batches: reference
random crops with points padded to ``max_points`` and a mask. The epoch order is one global
permutation drawn from ``(seed, epoch)``; global batch ``s`` is ``perm[s·B : (s+1)·B]`` and
process ``p`` of ``P`` takes its ``b = B / P`` consecutive slice of it, so processes read
disjoint examples and together form exactly the global batch. Every random choice for an
example (crop corner, flip) comes from ``(seed, epoch, example index)``: batches are identical
whatever the parallelism or the backend, and ``skip_batches=k`` resumes an epoch at batch
``k`` without reading the skipped examples. Decoded training images are kept in memory across
epochs up to ``image_cache_bytes`` (:mod:`gcc_jax.data.image_cache`).

Evaluation (:func:`make_eval_dataset`) yields full images, resized by the data set's reference
rule, normalised and zero-padded (0 = the ImageNet mean colour after normalisation) to a
multiple of ``pad_multiple``; process ``p`` evaluates examples ``p, p + P, p + 2P, …``.
"""

from __future__ import annotations

import importlib
import logging
import math
from collections.abc import Callable
from typing import Any, Iterator

import numpy as np

from gcc_jax.data import plan
from gcc_jax.data.catalog import get_spec
from gcc_jax.data.examples import EvalExamples, TrainExamples
from gcc_jax.data.sources import open_source

__all__ = [
    "DEFAULT_IMAGE_CACHE_BYTES",
    "LOADERS",
    "EvalDataset",
    "TrainEpoch",
    "make_eval_dataset",
    "make_train_dataset",
    "train_steps_per_epoch",
]

_log = logging.getLogger(__name__)

LOADERS = ("tf.data", "grain")
_BACKENDS = {"tf.data": "gcc_jax.data._tf_data", "grain": "gcc_jax.data._grain"}
# Enough for ShanghaiTech part A (about 0.5 GB decoded) and part B (about 0.9 GB).
DEFAULT_IMAGE_CACHE_BYTES = 2 * 2**30


def _backend(loader: str):
    # Imported on use: the tf.data backend imports TensorFlow, the Grain backend must not need it.
    if loader not in _BACKENDS:
        raise ValueError(f"loader must be one of {LOADERS}, got {loader!r}")
    try:
        return importlib.import_module(_BACKENDS[loader])
    except ModuleNotFoundError as error:
        if error.name != "tensorflow":
            raise
        raise ModuleNotFoundError(
            "loader='tf.data' needs TensorFlow, which is not installed; use loader='grain' "
            "(config: --config.dataset.loader=grain), which gives the same batches without it",
            name=error.name,
        ) from error


def _resize_rule(name: str, resize) -> plan.ResizeRule:
    if isinstance(resize, str) and resize == "default":
        return get_spec(name).resize
    return plan.ResizeRule.from_value(resize)


def _check_process(process_index: int, process_count: int) -> None:
    if process_count < 1 or not 0 <= process_index < process_count:
        raise ValueError(f"need 0 <= process_index < process_count, got {process_index} and {process_count}")


class TrainEpoch:
    """One epoch of training batches for this process: iterable, with ``len()`` = batches.

    Each batch is a dict of numpy arrays (``b`` = per-process batch, ``c`` = crop size,
    ``M`` = ``max_points``):

    * ``image`` float32 ``[b, c, c, 3]``: ImageNet-normalised crop; with ``normalize=False``
      uint8 RGB pixels instead (1/4 of the bytes to assemble and move to the accelerator),
      normalised on the device by :func:`gcc_jax.imagenet.normalize_crops` with
    * ``crop_box`` int32 ``[b, 4]`` (only with ``normalize=False``): ``(top, left, bottom,
      right)`` of the image pixels in each crop, the rest being padding;
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

    def __init__(self, batches: Callable[[], Iterator[dict]], *, num_examples: int, steps: int, batch_size: int,
                 max_points: int):
        self._batches = batches
        self.num_examples = num_examples
        self.steps = steps
        self.batch_size = batch_size
        self._max_points = max_points

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        for step, batch in enumerate(self._batches()):
            dropped = int(batch["num_dropped"].sum())
            if dropped:
                _log.warning(
                    "max_points=%d is too small: %d head points dropped from batch %d (largest crop has %d)",
                    self._max_points, dropped, step, int(batch["num_points"].max()),
                )
            yield batch


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
    num_examples = len(source)
    return num_examples // batch_size if drop_remainder else math.ceil(num_examples / batch_size)


def _check_train_arguments(*, crop_size, max_points, seed, epoch, skip_batches, batch_size, process_index,
                           process_count, min_size_policy, loader) -> None:
    if crop_size < 1 or max_points < 1:
        raise ValueError(f"crop_size and max_points must be >= 1, got {crop_size} and {max_points}")
    if seed < 0 or epoch < 0 or skip_batches < 0:
        raise ValueError(f"seed, epoch and skip_batches must be >= 0, got {seed}, {epoch}, {skip_batches}")
    _check_process(process_index, process_count)
    if batch_size < 1 or batch_size % process_count:
        raise ValueError(f"batch_size {batch_size} must be a positive multiple of process_count {process_count}")
    if min_size_policy not in plan.MIN_SIZE_POLICIES:
        raise ValueError(f"min_size_policy must be one of {plan.MIN_SIZE_POLICIES}, got {min_size_policy!r}")
    if loader not in LOADERS:
        raise ValueError(f"loader must be one of {LOADERS}, got {loader!r}")


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
    loader: str = "tf.data",
    num_parallel_calls: int | None = None,
    prefetch: int = 2,
    image_cache_bytes: int = DEFAULT_IMAGE_CACHE_BYTES,
    normalize: bool = True,
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
      loader: ``"tf.data"`` or ``"grain"`` (same batches; Grain needs no TensorFlow).
      num_parallel_calls: examples prepared in parallel (tf.data map calls, Grain threads);
        ``None`` = automatic.
      prefetch: batches prepared ahead.
      image_cache_bytes: decoded training images kept in memory across epochs, per process
        (0 = decode every time).
      normalize: ImageNet-normalised float32 images; ``False``: uint8 pixels and
        ``crop_box`` (resized pixels rounded to the nearest level, as a uint8 ``cv2.resize``
        gives them), for normalising on the device.

    Returns:
      A :class:`TrainEpoch` (iterable of numpy dict batches, with ``len()``).
    """
    _check_train_arguments(
        crop_size=crop_size, max_points=max_points, seed=seed, epoch=epoch, skip_batches=skip_batches,
        batch_size=batch_size, process_index=process_index, process_count=process_count,
        min_size_policy=min_size_policy, loader=loader,
    )  # fmt: skip
    rule = _resize_rule(name, resize)
    source = open_source(
        name, split=split, data_dir=data_dir, manual_dir=manual_dir, synthetic=synthetic, allow_build=process_count == 1
    )
    order, steps = plan.train_order(
        len(source), batch_size=batch_size, seed=seed, epoch=epoch, process_index=process_index,
        process_count=process_count, skip_batches=skip_batches, drop_remainder=drop_remainder,
    )  # fmt: skip
    if steps == 0:
        raise ValueError(
            f"{name} split {split!r} has {len(source)} examples, fewer than one batch of {batch_size} "
            "(use a smaller batch_size or drop_remainder=False)"
        )
    examples = TrainExamples(
        source, seed=seed, epoch=epoch, rule=rule, crop_size=crop_size, max_points=max_points,
        min_size_policy=min_size_policy, flip=flip, min_fraction=min_fraction, head_size_range=tuple(head_size_range),
        normalize=normalize,
    )  # fmt: skip
    local_batch = batch_size // process_count
    backend = _backend(loader)

    def batches():
        return backend.train_batches(
            examples, order, batch_size=local_batch, parallelism=num_parallel_calls, prefetch=prefetch,
            cache_bytes=image_cache_bytes,
        )  # fmt: skip

    return TrainEpoch(batches, num_examples=len(source), steps=math.ceil(len(order) / local_batch),
                      batch_size=local_batch, max_points=max_points)  # fmt: skip


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

    def __init__(self, batches: Callable[[], Iterator[dict]], *, num_examples: int, steps: int,
                 max_points: int | None):
        self._batches = batches
        self.num_examples = num_examples
        self.steps = steps
        self._max_points = max_points

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for batch in self._batches():
            if self._max_points is not None:
                dropped = int(np.maximum(batch["num_points"] - self._max_points, 0).sum())
                if dropped:
                    _log.warning(
                        "max_points=%d is too small: %d evaluation points dropped in %s (count is unaffected)",
                        self._max_points, dropped, [f.decode() for f in batch["filename"]],
                    )
            yield batch


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
    loader: str = "tf.data",
    num_parallel_calls: int | None = None,
    prefetch: int = 2,
    source=None,
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
      loader: ``"tf.data"`` or ``"grain"``.
      num_parallel_calls: examples prepared in parallel (``None`` = automatic).
      prefetch: batches prepared ahead.
      source: an example source to read instead of the data set ``name`` (e.g. a raw folder,
        :class:`gcc_jax.data.raw_folder_source.AnnotatedFolderSource`); ``name`` still decides
        the resize rule. ``data_dir``, ``manual_dir`` and ``synthetic`` are then unused.

    Returns:
      An :class:`EvalDataset`.
    """
    _check_process(process_index, process_count)
    if batch_size < 1 or pad_multiple < 1:
        raise ValueError(f"batch_size and pad_multiple must be >= 1, got {batch_size} and {pad_multiple}")
    if max_points is not None and max_points < 1:
        raise ValueError(f"max_points must be >= 1 or None, got {max_points}")
    rule = _resize_rule(name, resize)
    backend = _backend(loader)
    if source is None:
        source = open_source(
            name, split=split, data_dir=data_dir, manual_dir=manual_dir, synthetic=synthetic,
            allow_build=process_count == 1,
        )  # fmt: skip
    order = plan.eval_order(
        len(source), source.image_size, process_index=process_index, process_count=process_count,
        batch_size=batch_size, rule=rule, pad_multiple=pad_multiple,
    )  # fmt: skip
    examples = EvalExamples(source, rule=rule, max_points=max_points)

    def batches():
        return backend.eval_batches(
            examples, order, batch_size=batch_size, pad_multiple=pad_multiple, parallelism=num_parallel_calls,
            prefetch=prefetch,
        )  # fmt: skip

    return EvalDataset(batches, num_examples=len(order), steps=math.ceil(len(order) / batch_size),
                       max_points=max_points)  # fmt: skip
