"""One training or evaluation example as both input backends see it: read from its source,
with every decision taken (:mod:`gcc_jax.data.plan`) and only the pixel work left.

A backend asks :class:`TrainExamples` / :class:`EvalExamples` for example ``index`` and gets
the raw image (encoded bytes or uint8 pixels) with the numbers that say what to do with it;
points, masks, targets, sizes and scales come out finished, so both backends produce them
identically by construction.
"""

from __future__ import annotations

import collections
import dataclasses
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from gcc_jax.data import plan
from gcc_jax.data.images import encoded_image_size

__all__ = ["EvalExample", "EvalExamples", "TrainExample", "TrainExamples"]


@dataclasses.dataclass(frozen=True)
class TrainExample:
    """A training example before its pixel work.

    Attributes:
      index: the example's index in its split.
      filename: the example's file name (for error messages).
      crop: the resize sizes, crop window and flip.
      points: the finished point entries of the batch (:func:`plan.train_points`).
      read_image: returns the stored image, encoded bytes or uint8 ``[H, W, 3]`` pixels
        (reads the record again unless it was just read: a backend that holds the decoded
        image in its cache never calls it).
    """

    index: int
    filename: str
    crop: plan.TrainCrop
    points: dict[str, np.ndarray]
    read_image: Callable[[], Any]


@dataclasses.dataclass(frozen=True)
class EvalExample:
    """An evaluation example before its pixel work.

    Attributes:
      image: encoded bytes or uint8 pixels of the stored image.
      filename: the example's file name.
      entries: every batch entry but ``image`` (:func:`plan.eval_points`).
    """

    image: Any
    filename: str
    entries: dict[str, np.ndarray]


def _stored_size(source, example: dict) -> tuple[int, int]:
    image = example["image"]
    if source.encoded:
        return encoded_image_size(image, filename=example["filename"])
    return int(image.shape[0]), int(image.shape[1])


# What a training example needs besides its pixels, kept per split and example after the first
# read (12 bytes per head: points and head sizes): later epochs neither read the record nor
# rebuild the k-d tree of the head sizes. One run trains on one split, so only the splits read
# most recently are kept (a process that opens many, like a test session, does not grow
# without bound): {source.cache_key: {index: entry}}, oldest first.
_MAX_CACHED_SPLITS = 2
_annotations: collections.OrderedDict[tuple, dict[int, tuple]] = collections.OrderedDict()
_annotations_lock = threading.Lock()


def _train_annotations(source, index: int):
    """``(points, unclipped head sizes, filename, stored image size, image or None)``."""
    with _annotations_lock:
        split = _annotations.get(source.cache_key)
        if split is None:
            split = _annotations[source.cache_key] = {}
            while len(_annotations) > _MAX_CACHED_SPLITS:
                _annotations.popitem(last=False)
        else:
            _annotations.move_to_end(source.cache_key)
        cached = split.get(index)
    if cached is not None:
        return (*cached, None)
    example = source.read(index)
    points = np.asarray(example["points"], np.float32).reshape(-1, 2)
    entry = (points, plan.knn_head_sizes(points), example["filename"], _stored_size(source, example))
    with _annotations_lock:
        split[index] = entry
    return (*entry, example["image"])


@dataclasses.dataclass(frozen=True)
class TrainExamples:
    """The training examples of one epoch's pipeline (see :func:`gcc_jax.data.make_train_dataset`)."""

    source: Any
    seed: int
    epoch: int
    rule: plan.ResizeRule
    crop_size: int
    max_points: int
    min_size_policy: str
    flip: bool
    min_fraction: float
    head_size_range: tuple[float, float]
    normalize: bool = True

    def __call__(self, index: int) -> TrainExample:
        points, head_sizes, filename, image_hw, image = _train_annotations(self.source, index)
        crop = plan.plan_train_crop(
            image_hw, seed=self.seed, epoch=self.epoch, index=index, rule=self.rule, crop_size=self.crop_size,
            min_size_policy=self.min_size_policy, flip=self.flip,
        )  # fmt: skip
        entries = plan.train_points(
            points, head_sizes, crop, crop_size=self.crop_size, min_fraction=self.min_fraction,
            head_size_range=self.head_size_range, max_points=self.max_points,
        )  # fmt: skip
        if not self.normalize:
            entries["crop_box"] = crop.pixel_box(self.crop_size)
        read_image = (lambda: image) if image is not None else (lambda: self.source.read(index)["image"])
        return TrainExample(index, filename, crop, entries, read_image)


@dataclasses.dataclass(frozen=True)
class EvalExamples:
    """The evaluation examples of a pipeline (see :func:`gcc_jax.data.make_eval_dataset`)."""

    source: Any
    rule: plan.ResizeRule
    max_points: int | None

    def __call__(self, index: int) -> EvalExample:
        example = self.source.read(index)
        sized = {**example, "image_hw": _stored_size(self.source, example)}
        entries = plan.eval_points(sized, rule=self.rule, max_points=self.max_points)
        return EvalExample(example["image"], example["filename"], entries)
