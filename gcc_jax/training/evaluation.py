"""Evaluation over a split: density maps of full images, counting metrics merged over hosts.

Each process evaluates its own share of the split (``make_eval_dataset(process_index=...)``)
with its *own* devices: images differ in size from process to process, so evaluation is a
process-local computation (parameters copied to a local mesh) and only the metric sums cross
hosts, once, at the end (:func:`evaluate`).

:func:`iterate_predictions` yields one record per image — the density map cut to the image's
own cells, its ground truth and metadata — so that further per-image consumers (localization
metrics, pictures, dumps) sit next to the counting accumulator in :func:`evaluate` without a
second pass over the data.

Localization (when the records have points): the peaks of each density map
(:func:`gcc_jax.localization.density_to_point_list` at ``LocalizationOptions.threshold``) are
matched to the heads (:func:`gcc_jax.metrics.match_points`) at fixed radii given in
original-image pixels (``r4``, ``r8``, ...) and, where the data set has head boxes (NWPU-Crowd,
JHU-Crowd++), at the NWPU radii ``sigma_s`` / ``sigma_l`` of the original boxes; TP / FP / FN
are summed over the split (all processes) into precision, recall and F1.
:func:`choose_localization_threshold` picks the threshold with the best F1 on such records.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from gcc_jax.data import make_eval_dataset
from gcc_jax.data.sources import open_source
from gcc_jax.localization import ThresholdChoice, choose_threshold, density_to_point_list
from gcc_jax.metrics import CountingAccumulator, LocalizationAccumulator, nwpu_radii
from gcc_jax.models import STRIDE, output_shape
from gcc_jax.training.config import dataset_kwargs, pipeline_kwargs
from gcc_jax.training.mesh import batch_sharding, create_mesh, replicated_sharding

__all__ = [
    "EvalResult",
    "LocalizationOptions",
    "choose_localization_threshold",
    "evaluate",
    "evaluate_records",
    "iterate_predictions",
    "local_eval_mesh",
    "localization_radii",
    "make_eval_batches",
    "mean_training_count",
    "to_local_mesh",
]

_TRAIN_COUNTS_FILE = "train_counts.json"

# Radius settings computed from head boxes (metrics.nwpu_radii), beside the fixed radii.
_BOX_SETTINGS = ("sigma_s", "sigma_l")


@dataclasses.dataclass(frozen=True)
class LocalizationOptions:
    """How :func:`evaluate` scores localization (``config.localization``).

    Attributes:
      threshold: peak threshold of :func:`gcc_jax.localization.density_to_points`
        (per-cell density scale; 0.05 in GL's recipe).
      radii: fixed matching radii in original-image pixels, one setting ``r<radius>`` each
        (e.g. ``r4``, ``r8``).
      choose_on: the setting whose F1 :func:`choose_localization_threshold` maximises:
        ``"auto"`` (``sigma_l`` when the data set has boxes, else the largest fixed radius),
        ``"sigma_l"``, ``"sigma_s"`` or ``"r<radius>"`` of ``radii``.
      pixel_offset: added to both coordinates of every detected point
        (``density_to_points(pixel_offset=...)``). 0 is GL's recipe. A model trained with GL's
        reference cell positions (``cell_offset="reference"``: cell ``(i, j)`` at
        ``((j+1)·8, (i+1)·8)``) learns to put each head's mass half a cell above and left of
        it, so its peaks sit about 4 px up-left of the heads; 4.0 compensates.
      one_per_plateau: one point per group of equal neighbouring maxima
        (``density_to_points(one_per_plateau=True)``) instead of the recipe's every pixel of
        it; the bilinear upsampling's clamping makes such plateaus along every image border.
    """

    threshold: float = 0.05
    radii: tuple[float, ...] = (4.0, 8.0)
    choose_on: str = "auto"
    pixel_offset: float = 0.0
    one_per_plateau: bool = False

    def __post_init__(self):
        radii = tuple(float(r) for r in self.radii)
        if not radii or min(radii) <= 0:
            raise ValueError(f"localization radii must be positive pixels, got {self.radii!r}")
        object.__setattr__(self, "radii", radii)
        if not self.threshold >= 0:
            raise ValueError(f"localization threshold must be >= 0, got {self.threshold!r}")
        names = ("auto", *_BOX_SETTINGS, *self.fixed_settings)
        if self.choose_on not in names:
            raise ValueError(f"localization choose_on={self.choose_on!r} is not one of {names}")

    @property
    def fixed_settings(self) -> tuple[str, ...]:
        """Names of the fixed-radius settings, ``r<radius>`` in ``radii`` order."""
        return tuple(f"r{r:g}" for r in self.radii)

    @classmethod
    def from_config(cls, config) -> "LocalizationOptions | None":
        """Options of ``config.localization``; ``None`` when ``enabled`` is false. Configs
        saved before the block existed get the defaults."""
        block = config.get("localization") if hasattr(config, "get") else None
        if block is None:
            return cls()
        if not block.get("enabled", True):
            return None
        return cls(
            threshold=float(block.get("threshold", cls.threshold)),
            radii=tuple(block.get("radii", cls.radii)),
            choose_on=block.get("choose_on", cls.choose_on),
            pixel_offset=float(block.get("pixel_offset", cls.pixel_offset)),
            one_per_plateau=bool(block.get("one_per_plateau", cls.one_per_plateau)),
        )


def localization_radii(record: Mapping[str, Any], radii: Sequence[float]) -> dict[str, Any]:
    """Matching radii of one image's heads, in the pixels of the evaluated (resized) image.

    The settings are defined in original-image pixels and scaled by the record's ``scale``
    (exact for the isotropic resize rules; the geometric mean of the two factors under
    ``"dmcount_fit"``). ``sigma_s`` / ``sigma_l`` come from the head boxes mapped back to
    original pixels (rounded to 0.01 px, which undoes the float32 round-off of the resize
    before ``int()`` truncates the half-sizes, as the NWPU ground truth does).

    Args:
      record: a record of :func:`iterate_predictions` (``scale``, optional ``scale_xy`` and
        ``boxes`` ``[m, 4]`` resized pixels or ``None``).
      radii: fixed radii in original pixels.

    Returns:
      ``{"r4": radius, ..., "sigma_s": [m], "sigma_l": [m]}`` (the sigma entries only when the
      record has boxes).
    """
    scale = float(record["scale"])
    settings: dict[str, Any] = {f"r{float(r):g}": float(r) * scale for r in radii}
    boxes = record.get("boxes")
    if boxes is not None:
        scale_xy = np.asarray(record.get("scale_xy", (scale, scale)), np.float64)
        original = np.round(np.asarray(boxes, np.float64).reshape(-1, 4) / np.tile(scale_xy, 2), 2)
        sigma_s, sigma_l = nwpu_radii(original)
        settings["sigma_s"] = sigma_s * scale
        settings["sigma_l"] = sigma_l * scale
    return settings


def _detect(record: Mapping[str, Any], options: LocalizationOptions) -> np.ndarray:
    """Head points of a record's density map, inside its image (resized pixels)."""
    return density_to_point_list(
        record["density"], stride=STRIDE, threshold=options.threshold, image_hw=record["image_hw"],
        pixel_offset=options.pixel_offset, one_per_plateau=options.one_per_plateau,
    )[0]


class _LocalizationSums:
    """One LocalizationAccumulator per radius setting, mergeable over processes as a vector."""

    def __init__(self, options: LocalizationOptions):
        self.options = options
        self.names = (*options.fixed_settings, *_BOX_SETTINGS)
        self.accumulators = {name: LocalizationAccumulator() for name in self.names}
        self.num_box_images = 0

    def add(self, record: Mapping[str, Any]) -> None:
        predicted = _detect(record, self.options)
        radii = localization_radii(record, self.options.radii)
        self.num_box_images += "sigma_l" in radii
        for name, radius in radii.items():
            self.accumulators[name].add(predicted, record["points"], radius)

    def sums(self) -> np.ndarray:
        parts = [self.accumulators[name].sums() for name in self.names]
        return np.concatenate([*parts, [self.num_box_images]]).astype(np.float64)

    def results(self, sums: np.ndarray) -> dict[str, float]:
        """Metrics from merged :meth:`sums`: ``loc/{precision,recall,f1}_<setting>``."""
        sums = np.rint(sums).astype(np.int64)
        names = self.names if sums[-1] else self.options.fixed_settings
        out = {"loc/threshold": self.options.threshold}
        for k, name in enumerate(names):
            result = LocalizationAccumulator.from_sums(sums[3 * k : 3 * k + 3]).result()
            for metric in ("precision", "recall", "f1"):
                out[f"loc/{metric}_{name}"] = result[metric]
        return out


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
    """
    return make_eval_dataset(
        config.dataset.name,
        split=split or config.dataset.eval_split,
        process_index=process_index,
        process_count=process_count,
        batch_size=config.eval_batch_size,
        pad_multiple=config.dataset.eval_pad_multiple,
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
        ``mesh`` (:func:`gcc_jax.training.steps.make_predict_fn`).
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
) -> EvalResult:
    """The metrics of :func:`evaluate` from per-image records (:func:`iterate_predictions`),
    e.g. records kept in memory to be scored again at another threshold. A collective, like
    :func:`evaluate`."""
    counting = CountingAccumulator()
    located = _LocalizationSums(localization) if localization is not None else None
    trivial = CountingAccumulator()
    examples = []
    for record in records:
        if len(examples) < num_examples:
            examples.append(record)
        if not np.isfinite(record["count"]):
            continue
        counting.add_density(record["density"], record["points"], stride=STRIDE)
        if trivial_count is not None:
            trivial.add(trivial_count, record["count"])
        if located is not None:
            located.add(record)
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


def choose_localization_threshold(
    records: Sequence[Mapping[str, Any]],
    options: LocalizationOptions = LocalizationOptions(),
    *,
    candidates=None,
) -> tuple[str, ThresholdChoice]:
    """The peak threshold with the best localization F1 on (validation) records.

    :func:`gcc_jax.localization.choose_threshold` over the annotated records, with the radii
    of the setting ``options.choose_on`` (see :func:`localization_radii`), so the F1 it
    reports equals :func:`evaluate_records`' ``loc/f1_<setting>`` at the chosen threshold.
    Runs on this process's records only.

    Args:
      records: :func:`iterate_predictions` records (their ``image`` entries are not needed).
      options: the radius settings and ``choose_on``.
      candidates: thresholds to try (default: ``choose_threshold``'s 0.01, 0.02, ..., 0.30).

    Returns:
      ``(setting, choice)``: the setting name used (e.g. ``"sigma_l"``, ``"r8"``) and the
      :class:`~gcc_jax.localization.ThresholdChoice`.

    Raises:
      ValueError: no annotated record, or ``choose_on`` names box radii the records lack.
    """
    annotated = [r for r in records if np.isfinite(r["count"])]
    if not annotated:
        raise ValueError("choose_localization_threshold: no annotated record")
    radii = [localization_radii(r, options.radii) for r in annotated]
    setting = options.choose_on
    if setting == "auto":
        setting = "sigma_l" if "sigma_l" in radii[0] else options.fixed_settings[int(np.argmax(options.radii))]
    if any(setting not in r for r in radii):
        raise ValueError(f"localization choose_on={setting!r}: the records have no head boxes")
    kwargs = {} if candidates is None else {"candidates": candidates}
    choice = choose_threshold(
        [r["density"] for r in annotated],
        [r["points"] for r in annotated],
        [r[setting] for r in radii],
        stride=STRIDE,
        image_hw=np.asarray([r["image_hw"] for r in annotated]),
        pixel_offset=options.pixel_offset,
        one_per_plateau=options.one_per_plateau,
        **kwargs,
    )
    return setting, choice
