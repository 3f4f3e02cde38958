"""One training or evaluation example as both input backends see it: read from its source,
with every decision taken (:mod:`gcc_jax.data.plan`) and only the pixel work left.

A backend asks :class:`TrainExamples` / :class:`EvalExamples` for example ``index`` and gets
the raw image (encoded bytes or uint8 pixels) with the numbers that say what to do with it;
points, masks, targets, sizes and scales come out finished, so both backends produce them
identically by construction.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from gcc_jax.data import plan
from gcc_jax.data.images import encoded_image_size

__all__ = ["EvalExample", "EvalExamples", "TrainExample", "TrainExamples"]


@dataclasses.dataclass(frozen=True)
class TrainExample:
    """A training example before its pixel work.

    Attributes:
      image: encoded bytes or uint8 ``[H, W, 3]`` pixels of the stored image.
      filename: the example's file name (for error messages).
      crop: the resize sizes, crop window and flip.
      points: the finished point entries of the batch (:func:`plan.train_points`).
    """

    image: Any
    filename: str
    crop: plan.TrainCrop
    points: dict[str, np.ndarray]


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

    def __call__(self, index: int) -> TrainExample:
        example = self.source.read(index)
        crop = plan.plan_train_crop(
            _stored_size(self.source, example), seed=self.seed, epoch=self.epoch, index=index, rule=self.rule,
            crop_size=self.crop_size, min_size_policy=self.min_size_policy, flip=self.flip,
        )  # fmt: skip
        points = plan.train_points(
            example["points"], plan.knn_head_sizes(example["points"]), crop, crop_size=self.crop_size,
            min_fraction=self.min_fraction, head_size_range=self.head_size_range, max_points=self.max_points,
        )  # fmt: skip
        return TrainExample(example["image"], example["filename"], crop, points)


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
