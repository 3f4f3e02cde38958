"""Evaluation over a split: density maps of full images, counting metrics merged over hosts.

Each process evaluates its own share of the split (``make_eval_dataset(process_index=...)``)
with its *own* devices: images differ in size from process to process, so evaluation is a
process-local computation (parameters copied to a local mesh) and only the metric sums cross
hosts, once, at the end (:func:`evaluate`).

:func:`iterate_predictions` yields one record per image — the density map cut to the image's
own cells, its ground truth and metadata — so that further per-image consumers (localization
metrics, pictures, dumps) sit next to the counting accumulator in :func:`evaluate` without a
second pass over the data.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from gcc_jax.metrics import CountingAccumulator
from gcc_jax.models import STRIDE, output_shape
from gcc_jax.training.mesh import batch_sharding, create_mesh, replicated_sharding

__all__ = ["EvalResult", "evaluate", "iterate_predictions", "local_eval_mesh", "to_local_mesh"]


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
        ``mesh`` (:func:`gcc_jax.training.steps.make_predict_fn`).
      variables: model variables placed on ``mesh`` (:func:`to_local_mesh`).
      batches: :func:`gcc_jax.data.make_eval_dataset` batches.
      mesh: the local evaluation mesh.

    Yields:
      dicts with ``density`` float32 ``[ceil(h/8), ceil(w/8)]`` (the image's own cells, where
      ``(h, w)`` is ``image_hw``), ``count`` (true count, NaN if unannotated), ``points``
      ``[m, 2]`` ``(x, y)`` pixels of the evaluated (resized) image, ``boxes`` ``[m, 4]`` or
      ``None``, ``image`` normalised ``[h, w, 3]``, ``image_hw``, ``filename`` (str) and
      ``scale`` (resize factor: divide coordinates by it for original pixels).
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
            }


@dataclasses.dataclass
class EvalResult:
    """What :func:`evaluate` returns.

    Attributes:
      metrics: ``mae``, ``rmse`` (the literature's "MSE"), ``nae``, ``game0``..``game3``,
        ``trivial_mae`` / ``trivial_rmse`` (predicting ``trivial_count`` for every image; only
        when it was given), ``num_images`` (annotated images scored, all processes) — merged
        over all processes.
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
) -> EvalResult:
    """Counting metrics of a model over this process's share of a split, merged over processes.

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

    Returns:
      An :class:`EvalResult`.

    Raises:
      ValueError: if no annotated image was evaluated on any process.
    """
    counting = CountingAccumulator()
    trivial = CountingAccumulator()
    examples = []
    for record in iterate_predictions(predict_fn, variables, batches, mesh):
        if len(examples) < num_examples:
            examples.append(record)
        if not np.isfinite(record["count"]):
            continue
        counting.add_density(record["density"], record["points"], stride=STRIDE)
        if trivial_count is not None:
            trivial.add(trivial_count, record["count"])
    width = len(counting.sums())
    merged = _merge_over_processes(np.concatenate([counting.sums(), trivial.sums()]))
    counting = CountingAccumulator.from_sums(merged[:width])
    trivial = CountingAccumulator.from_sums(merged[width:])
    if counting.num_images == 0:
        raise ValueError("the evaluation split holds no annotated image")
    metrics = counting.result()
    metrics["num_images"] = counting.num_images
    if trivial_count is not None:
        baseline = trivial.result()
        metrics["trivial_mae"] = baseline["mae"]
        metrics["trivial_rmse"] = baseline["rmse"]
    return EvalResult(metrics=metrics, examples=examples)
