"""Evaluation over a split: density maps of full images, counting metrics merged over hosts.

Each process evaluates its own share of the split (``make_eval_dataset(process_index=...)``)
with its *own* devices: images differ in size from process to process, so evaluation is a
process-local computation (parameters copied to a local mesh) and only the metric sums cross
hosts, once, at the end (:func:`evaluate`).

:func:`iterate_predictions` yields one record per image — the density map cut to the image's
own cells, its ground truth and metadata — so that further per-image consumers (localization
metrics, pictures, dumps) sit next to the counting accumulator in :func:`evaluate` without a
second pass over the data.

Localization is scored on the same records (:mod:`gcc_jax.localization_scoring`: detected
heads matched to the annotated ones at several radii, TP / FP / FN summed over the split and
all processes).
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from gcc_jax.data import make_eval_dataset
from gcc_jax.data.sources import open_source
from gcc_jax.localization_scoring import ImageMatches, LocalizationOptions, LocalizationSums, detect_heads
from gcc_jax.metrics import CountingAccumulator
from gcc_jax.models import STRIDE, output_shape
from gcc_jax.runtime.config import dataset_kwargs, pipeline_kwargs
from gcc_jax.runtime.mesh import batch_sharding, create_mesh, replicated_sharding

__all__ = [
    "EvalResult",
    "evaluate",
    "evaluate_records",
    "iterate_predictions",
    "local_eval_mesh",
    "make_eval_batches",
    "mean_training_count",
    "to_local_mesh",
]

_TRAIN_COUNTS_FILE = "train_counts.json"


def local_eval_mesh(batch_size: int) -> Mesh:
    """A mesh of this process's devices for evaluation batches of ``batch_size`` images.

    ``min(batch_size, local devices)`` devices: a batch of one image runs on one device
    instead of being padded to every device.
    """
    devices = jax.local_devices()
    return create_mesh(devices[: max(1, min(batch_size, len(devices)))])


def to_local_mesh(tree, mesh: Mesh):
    """Copies (device to device) a pytree of replicated global arrays onto a local ``mesh``."""
    sharding = replicated_sharding(mesh)
    return jax.tree.map(lambda x: jax.device_put(x.addressable_data(0), sharding), tree)


def make_eval_batches(
    config: ml_collections.ConfigDict,
    split: str | None = None,
    *,
    process_index: int = 0,
    process_count: int = 1,
    source=None,
) -> Iterable[Mapping[str, np.ndarray]]:
    """This process's evaluation batches of a split of ``config.dataset`` (full images, the
    data set's resize rule, ``config.eval_batch_size`` images padded to
    ``config.dataset.eval_pad_multiple``): :func:`gcc_jax.data.make_eval_dataset` as the run
    configures it.

    Args:
      config: the run's config.
      split: the split (default ``config.dataset.eval_split``).
      process_index: this process's index, for a split shared by several processes.
      process_count: the number of processes.
      source: examples to evaluate instead of the split, e.g. a raw folder
        (:class:`gcc_jax.data.raw_folder_source.AnnotatedFolderSource`); the resize rule is
        then that of the data set it reproduces (``source.dataset``).
    """
    return make_eval_dataset(
        config.dataset.name if source is None else source.dataset,
        split=split or config.dataset.eval_split,
        process_index=process_index,
        process_count=process_count,
        batch_size=config.eval_batch_size,
        pad_multiple=config.dataset.eval_pad_multiple,
        source=source,
        **pipeline_kwargs(config),
    )


def mean_training_count(config: ml_collections.ConfigDict, workdir: str | os.PathLike | None = None) -> float:
    """Mean head count per image of the training split: the trivial predictor's constant.

    Cached in ``workdir/train_counts.json`` (reading a real split's annotations takes a pass
    over its records).
    """
    cache = pathlib.Path(workdir) / _TRAIN_COUNTS_FILE if workdir is not None else None
    key = {"dataset": config.dataset.name, "split": config.dataset.train_split}
    if cache is not None and cache.is_file():
        cached = json.loads(cache.read_text())
        if all(cached.get(k) == v for k, v in key.items()):
            return float(cached["mean_count"])
    source = open_source(config.dataset.name, split=config.dataset.train_split, **dataset_kwargs(config))
    counts = np.asarray([source.read(i)["count"] for i in range(len(source))], np.float64)
    counts = counts[np.isfinite(counts)]
    if counts.size == 0:
        raise ValueError(f"training split {config.dataset.train_split!r} of {config.dataset.name} has no annotated image")
    mean = float(counts.mean())
    if cache is not None and jax.process_index() == 0:
        cache.write_text(json.dumps({**key, "num_images": int(counts.size), "mean_count": mean}) + "\n")
    return mean


def iterate_predictions(
    predict_fn: Callable[[Any, jax.Array], jax.Array],
    variables,
    batches: Iterable[Mapping[str, np.ndarray]],
    mesh: Mesh,
) -> Iterator[dict[str, Any]]:
    """Runs the model over evaluation batches and yields one record per image.

    Batches are padded along the batch axis to a multiple of ``mesh.size`` (the padding images
    are dropped again), so any batch size runs on the mesh.

    Args:
      predict_fn: ``(variables, images [b, H, W, 3]) -> density [b, H/8, W/8]`` jitted on
        ``mesh`` (:func:`gcc_jax.runtime.model.make_predict_fn`).
      variables: model variables placed on ``mesh`` (:func:`to_local_mesh`).
      batches: :func:`gcc_jax.data.make_eval_dataset` batches.
      mesh: the local evaluation mesh.

    Yields:
      dicts with ``density`` float32 ``[ceil(h/8), ceil(w/8)]`` (the image's own cells, where
      ``(h, w)`` is ``image_hw``), ``count`` (true count, NaN if unannotated), ``points``
      ``[m, 2]`` ``(x, y)`` pixels of the evaluated (resized) image, ``boxes`` ``[m, 4]`` or
      ``None``, ``image`` normalised ``[h, w, 3]``, ``image_hw``, ``filename`` (str),
      ``scale`` (resize factor: divide coordinates by it for original pixels) and
      ``scale_xy`` (the per-axis factors ``(scale_x, scale_y)``).
    """
    for batch in batches:
        images = np.asarray(batch["image"])
        size = images.shape[0]
        pad = -size % mesh.size
        if pad:
            images = np.concatenate([images, np.zeros((pad, *images.shape[1:]), images.dtype)])
        # Placed explicitly: with several processes, jit takes no host arrays for a sharded input.
        placed = jax.device_put(images, batch_sharding(mesh))
        density = np.asarray(jax.device_get(predict_fn(variables, placed)))[:size]
        for i in range(size):
            height, width = (int(v) for v in batch["image_hw"][i])
            rows, cols = output_shape(height, width)
            mask = np.asarray(batch["point_mask"][i], bool)
            yield {
                "density": density[i, :rows, :cols],
                "count": float(batch["count"][i]),
                "points": np.asarray(batch["points"][i])[mask],
                "boxes": np.asarray(batch["boxes"][i])[mask] if "boxes" in batch else None,
                "image": images[i, :height, :width],
                "image_hw": (height, width),
                "filename": batch["filename"][i].decode() if isinstance(batch["filename"][i], bytes) else str(batch["filename"][i]),
                "scale": float(batch["scale"][i]),
                "scale_xy": tuple(map(float, batch["scale_xy"][i] if "scale_xy" in batch else [batch["scale"][i]] * 2)),
            }


@dataclasses.dataclass
class EvalResult:
    """What :func:`evaluate` returns.

    Attributes:
      metrics: ``mae``, ``rmse`` (the literature's "MSE"), ``nae``, ``game0``..``game3``,
        ``trivial_mae`` / ``trivial_rmse`` (predicting ``trivial_count`` for every image; only
        when it was given), ``num_images`` (annotated images scored, all processes) and, with
        localization, ``loc/threshold`` and ``loc/precision_<setting>``, ``loc/recall_<setting>``,
        ``loc/f1_<setting>`` for each fixed radius (``r4``, ``r8``, ...) and, when the data set
        has boxes, ``sigma_s`` and ``sigma_l`` — merged over all processes.
      examples: this process's first ``num_examples`` records of :func:`iterate_predictions`
        (for pictures).
    """

    metrics: dict[str, float]
    examples: list[dict[str, Any]]


def _merge_over_processes(sums: np.ndarray) -> np.ndarray:
    if jax.process_count() == 1:
        return sums
    return np.asarray(multihost_utils.process_allgather(sums)).sum(axis=0)


def evaluate(
    predict_fn: Callable[[Any, jax.Array], jax.Array],
    variables,
    batches: Iterable[Mapping[str, np.ndarray]],
    mesh: Mesh,
    *,
    trivial_count: float | None = None,
    num_examples: int = 0,
    localization: LocalizationOptions | None = LocalizationOptions(),
) -> EvalResult:
    """Counting (and localization) metrics of a model over this process's share of a split,
    merged over processes.

    Every process must call this (the merge is a collective). Unannotated images (NaN count)
    are skipped.

    Args:
      predict_fn: see :func:`iterate_predictions`.
      variables: model variables on ``mesh``.
      batches: this process's evaluation batches.
      mesh: the local evaluation mesh.
      trivial_count: a constant prediction (the mean training count) whose errors are
        reported beside the model's as ``trivial_mae`` / ``trivial_rmse``; ``None`` = none.
      num_examples: how many of this process's first image records to keep for pictures.
      localization: threshold and radii of the localization metrics; ``None`` = counting only.

    Returns:
      An :class:`EvalResult`.

    Raises:
      ValueError: if no annotated image was evaluated on any process.
    """
    records = iterate_predictions(predict_fn, variables, batches, mesh)
    return evaluate_records(records, trivial_count=trivial_count, num_examples=num_examples, localization=localization)


def evaluate_records(
    records: Iterable[Mapping[str, Any]],
    *,
    trivial_count: float | None = None,
    num_examples: int = 0,
    localization: LocalizationOptions | None = LocalizationOptions(),
    on_image: Callable[[Mapping[str, Any], ImageMatches | None], None] | None = None,
) -> EvalResult:
    """The metrics of :func:`evaluate` from per-image records (:func:`iterate_predictions`),
    e.g. records kept in memory to be scored again at another threshold. A collective, like
    :func:`evaluate`.

    ``on_image(record, matches)`` is called for every record of this process, in order, with
    its :class:`~gcc_jax.localization_scoring.ImageMatches` (``None`` when localization is off;
    detections without matches for an unannotated record): per-image rows and pictures are made
    from the very detections and matches the metrics count.
    """
    counting = CountingAccumulator()
    located = LocalizationSums(localization) if localization is not None else None
    trivial = CountingAccumulator()
    examples = []
    for record in records:
        if len(examples) < num_examples:
            examples.append(record)
        if not np.isfinite(record["count"]):
            if on_image is not None:
                detected = detect_heads(record, localization) if localization is not None else None
                on_image(record, None if detected is None else ImageMatches(detected, {}, {}))
            continue
        counting.add_density(record["density"], record["points"], stride=STRIDE)
        if trivial_count is not None:
            trivial.add(trivial_count, record["count"])
        matches = located.add(record) if located is not None else None
        if on_image is not None:
            on_image(record, matches)
    width = len(counting.sums())
    parts = [counting.sums(), trivial.sums()] + ([located.sums()] if located is not None else [])
    merged = _merge_over_processes(np.concatenate(parts))
    counting = CountingAccumulator.from_sums(merged[:width])
    trivial = CountingAccumulator.from_sums(merged[width : 2 * width])
    if counting.num_images == 0:
        raise ValueError("the evaluation split holds no annotated image")
    metrics = counting.result()
    metrics["num_images"] = counting.num_images
    if trivial_count is not None:
        baseline = trivial.result()
        metrics["trivial_mae"] = baseline["mae"]
        metrics["trivial_rmse"] = baseline["rmse"]
    if located is not None:
        metrics.update(located.results(merged[2 * width :]))
    return EvalResult(metrics=metrics, examples=examples)
