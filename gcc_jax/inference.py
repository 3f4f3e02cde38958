"""A trained model and how to read heads off its density maps; evaluating it on a split.

A trained model lives in one of two places:

* a **training workdir** (``train.py --workdir``): resumable checkpoints (``"latest"`` or a
  step number), the best checkpoint by validation MAE (``"best"``) and the run's
  ``config.json``, which decides the network (width, the loss's head, dtype);
* a **model directory** (``python -m gcc_jax.convert_weights``, :func:`gcc_jax.models.save_variables`):
  variables and a ``model.json`` that decides the network.

:func:`load_trained_model` loads either, given a checkpoint name as the command-line tools
take it (``"best"`` / ``"latest"`` / a step with a workdir, or a model directory's path);
:func:`open_trained_model` is the same for one path that is either kind of directory.

The peak settings (:class:`~gcc_jax.localization.PeakSettings`: threshold, pixel offset, one
point per plateau) that evaluate, predict, the NWPU writer and export use with a checkpoint are
resolved by one rule (:func:`resolve_peak_settings`): a threshold always goes with the detector
(offset and plateau rule) it was chosen for. The settings are taken **whole** from the first
place that has them — the choice ``python -m gcc_jax.evaluate --choose_threshold`` stored
beside the checkpoint (:data:`THRESHOLD_FILE` in the workdir or the model directory), else
``config.localization``, else the defaults (GL's recipe: :data:`DEFAULT_THRESHOLD`, offset 0,
every pixel of a plateau) — and only the settings the caller gives (the command-line flags of
:func:`define_peak_flags`) replace theirs. A stored threshold chosen with one point per plateau
is therefore never used with every plateau pixel (or the reverse) unless the caller asks for
that detector, and then a warning says so.

:func:`evaluate_checkpoint` scores a checkpoint on a split: counting metrics, localization
metrics at the resolved settings, and optionally the choice of the threshold.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import pathlib
import sys
from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import tqdm
from jax.sharding import Mesh

from gcc_jax import localization_scoring
from gcc_jax.localization import DEFAULT_THRESHOLD, PeakSettings
from gcc_jax.localization_scoring import LocalizationOptions, ThresholdChoice, config_peak_settings
from gcc_jax.models import VGG19Density, load_variables
from gcc_jax.runtime import config as config_lib
from gcc_jax.runtime.checkpoints import restore_params
from gcc_jax.runtime.evaluation import (
    evaluate_records,
    iterate_predictions,
    local_eval_mesh,
    make_eval_batches,
    mean_training_count,
)
from gcc_jax.runtime.mesh import replicate, replicated_sharding
from gcc_jax.runtime.model import create_model, make_predict_fn

__all__ = [
    "DEFAULT_THRESHOLD",
    "MODEL_FILE",
    "PEAK_FIELDS",
    "THRESHOLD_FILE",
    "PeakSettings",
    "ResolvedPeaks",
    "TrainedModel",
    "define_peak_flags",
    "evaluate_checkpoint",
    "given_peak_flags",
    "is_run_checkpoint",
    "load_trained_model",
    "open_trained_model",
    "predict_split",
    "read_threshold_choice",
    "resolve_peak_settings",
    "threshold_path",
]

_log = logging.getLogger(__name__)

# The localization threshold chosen by --choose_threshold (with its P/R/F1 curve), stored
# beside the checkpoint it was chosen for: in the workdir, or in the model directory.
THRESHOLD_FILE = "localization_threshold.json"
# What marks a model directory (gcc_jax.models.save_variables).
MODEL_FILE = "model.json"
_RUN_CHECKPOINTS = ("best", "latest")


def is_run_checkpoint(checkpoint: str) -> bool:
    """Whether ``checkpoint`` names a checkpoint of a workdir (``best``, ``latest``, a step)
    rather than a model directory."""
    return checkpoint in _RUN_CHECKPOINTS or checkpoint.isdigit()


class TrainedModel(NamedTuple):
    """A loaded model and where it came from.

    Attributes:
      model: the ``VGG19Density``.
      variables: its variables, replicated on the mesh it was loaded for.
      step: the training step of a workdir checkpoint; ``None`` for a model directory.
      checkpoint: ``"best"`` / ``"latest"`` / a step (of ``workdir``) or the model directory.
      workdir: the training workdir, or ``None``.
      config: the run's config (``None`` for a model directory loaded without one).
    """

    model: VGG19Density
    variables: Any
    step: int | None
    checkpoint: str
    workdir: pathlib.Path | None
    config: ml_collections.ConfigDict | None


def load_trained_model(
    checkpoint: str = "best",
    *,
    mesh: Mesh,
    workdir: str | os.PathLike | None = None,
    config: ml_collections.ConfigDict | None = None,
) -> TrainedModel:
    """The model and variables of a workdir checkpoint or a model directory, placed on ``mesh``.

    Args:
      checkpoint: ``"best"``, ``"latest"``, a step number (checkpoints of ``workdir``; the
        network is ``config``'s), or the path of a model directory (its ``model.json`` decides
        width and head).
      mesh: the variables are replicated on it.
      workdir: the training run's directory (for a workdir checkpoint).
      config: the run's config; needed for a workdir checkpoint. For a model directory only
        ``config.model.dtype`` is read (``None``: float32).

    Returns:
      A :class:`TrainedModel`.

    Raises:
      ValueError: a workdir checkpoint without ``workdir`` or ``config``.
      FileNotFoundError: no such checkpoint.
    """
    checkpoint = str(checkpoint)
    if is_run_checkpoint(checkpoint):
        if workdir is None or config is None:
            raise ValueError(f"--checkpoint={checkpoint} needs --workdir (or give a model directory path)")
        model = create_model(config)
        dummy = jnp.zeros((1, config.crop_size, config.crop_size, 3), jnp.float32)
        shapes = jax.eval_shape(model.init, jax.random.key(0), dummy)["params"]
        sharding = replicated_sharding(mesh)
        abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), shapes)
        params, step = restore_params(workdir, abstract, which=checkpoint)
        return TrainedModel(model, {"params": params}, step, checkpoint, pathlib.Path(workdir), config)
    loaded, options = load_variables(checkpoint)
    dtype = jnp.dtype(config.model.dtype) if config is not None else jnp.float32
    model = VGG19Density(**options, dtype=dtype)
    return TrainedModel(model, replicate(loaded, mesh), None, checkpoint, None, config)


def open_trained_model(path: str | os.PathLike, *, mesh: Mesh, which: str = "best") -> TrainedModel:
    """The model of a directory that is a training workdir or a model directory.

    Args:
      path: a training workdir (holds ``config.json``: its ``which`` checkpoint and saved
        config are used) or a model directory (holds ``model.json``).
      mesh: the variables are replicated on it.
      which: ``"best"``, ``"latest"`` or a step number (workdirs only).

    Raises:
      FileNotFoundError: ``path`` is neither kind of directory, or lacks ``which``.
    """
    path = pathlib.Path(path)
    if (path / config_lib.CONFIG_FILE).is_file():
        config = config_lib.load_workdir_config(path)
        return load_trained_model(str(which), mesh=mesh, workdir=path, config=config)
    if (path / MODEL_FILE).is_file():
        return load_trained_model(str(path), mesh=mesh)
    raise FileNotFoundError(
        f"{path} is neither a training workdir (no {config_lib.CONFIG_FILE}) nor a model directory (no {MODEL_FILE})"
    )


def threshold_path(checkpoint: str, workdir: str | os.PathLike | None) -> pathlib.Path | None:
    """Where the chosen threshold of ``checkpoint`` is stored: :data:`THRESHOLD_FILE` in
    ``workdir`` for a workdir checkpoint, in the model directory otherwise (``None``: no place)."""
    if is_run_checkpoint(str(checkpoint)):
        return None if workdir is None else pathlib.Path(workdir) / THRESHOLD_FILE
    return pathlib.Path(checkpoint) / THRESHOLD_FILE


def read_threshold_choice(checkpoint: str, workdir: str | os.PathLike | None = None) -> dict | None:
    """The record ``--choose_threshold`` stored for ``checkpoint`` (keys ``threshold``,
    ``pixel_offset``, ``one_per_plateau``, ``setting``, ``f1``, ``precision``, ``recall``, ``split``,
    ``checkpoint``, ``step``, and the curve), or ``None`` if there is none.

    Raises:
      ValueError: the file holds no threshold.
    """
    path = threshold_path(checkpoint, workdir)
    if path is None or not path.is_file():
        return None
    record = json.loads(path.read_text())
    if not isinstance(record, dict) or "threshold" not in record:
        raise ValueError(f"{path}: not a localization threshold record (no 'threshold')")
    return record


def _write_threshold_choice(path: pathlib.Path, record: dict) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, path)


# The fields of PeakSettings, as the flags, the stored choice and config.localization name them.
PEAK_FIELDS = tuple(field.name for field in dataclasses.fields(PeakSettings))
_PEAK_FLAG_HELP = {
    "threshold": f"peak threshold, per-cell density scale (default: the stored choice's, else the config's, else "
                 f"{DEFAULT_THRESHOLD:g})",
    "pixel_offset": "pixels added to both coordinates of every point (default: the stored choice's, else the "
                    "config's, else 0)",
    "one_per_plateau": "one point per plateau of equal maxima; the negated flag keeps every pixel of it, GL's "
                       "recipe (default: the stored choice's, i.e. the detector its threshold was chosen for, else "
                       "the config's, else every pixel)",
}  # fmt: skip


def define_peak_flags(parser: argparse.ArgumentParser | None = None, *, flag_values=None) -> None:
    """Defines the command-line flags of the :class:`~gcc_jax.localization.PeakSettings`:
    ``--threshold``, ``--pixel_offset`` and ``--(no)one_per_plateau``, each absent (``None``)
    unless given, so that :func:`resolve_peak_settings` fills it from the stored choice or the
    config with the rest of the settings.

    Args:
      parser: the argparse command to add them to (as ``--one_per_plateau`` /
        ``--no-one_per_plateau``); ``None`` defines them as absl flags (``--one_per_plateau`` /
        ``--noone_per_plateau``), once per process.
      flag_values: the absl ``FlagValues`` to define them in (default ``absl.flags.FLAGS``).
    """
    if parser is not None:
        group = parser.add_argument_group("peaks (default: the threshold stored by evaluate --choose_threshold, whole)")
        group.add_argument("--threshold", type=float, default=None, help=_PEAK_FLAG_HELP["threshold"])
        group.add_argument("--pixel_offset", type=float, default=None, help=_PEAK_FLAG_HELP["pixel_offset"])
        group.add_argument(
            "--one_per_plateau", action=argparse.BooleanOptionalAction, default=None,
            help=_PEAK_FLAG_HELP["one_per_plateau"],
        )  # fmt: skip
        return
    from absl import flags

    flag_values = flags.FLAGS if flag_values is None else flag_values
    if "threshold" in flag_values:
        return
    flags.DEFINE_float("threshold", None, _PEAK_FLAG_HELP["threshold"], flag_values=flag_values)
    flags.DEFINE_float("pixel_offset", None, _PEAK_FLAG_HELP["pixel_offset"], flag_values=flag_values)
    flags.DEFINE_boolean("one_per_plateau", None, _PEAK_FLAG_HELP["one_per_plateau"], flag_values=flag_values)


def given_peak_flags(values) -> dict[str, Any]:
    """The peak flags of :func:`define_peak_flags` that were given, ``{name: value}``, from an
    argparse namespace or absl's ``FLAGS``: what :func:`resolve_peak_settings` takes as ``given``."""
    return {name: getattr(values, name) for name in PEAK_FIELDS if getattr(values, name) is not None}


class ResolvedPeaks(NamedTuple):
    """The peak settings to use with a checkpoint and where they came from (:func:`resolve_peak_settings`).

    Attributes:
      settings: the :class:`~gcc_jax.localization.PeakSettings`.
      source: where the threshold came from: ``"argument"``, ``"chosen on <split> (step <s>)"``
        (stored by ``--choose_threshold``), ``"config"`` or ``"default"``.
    """

    settings: PeakSettings
    source: str


def _stored_settings(stored: Mapping[str, Any], fallback: PeakSettings) -> PeakSettings:
    """The settings of a stored choice; a record written before the detector was stored with it
    was chosen with the config's detector (``fallback``)."""
    return PeakSettings(
        threshold=stored["threshold"], pixel_offset=stored.get("pixel_offset", fallback.pixel_offset),
        one_per_plateau=stored.get("one_per_plateau", fallback.one_per_plateau),
    )  # fmt: skip


def resolve_peak_settings(
    checkpoint: str,
    *,
    workdir: str | os.PathLike | None = None,
    config=None,
    given: Mapping[str, Any] | None = None,
    step: int | None = None,
    use_stored: bool = True,
) -> ResolvedPeaks:
    """The peak settings to use with a checkpoint (see the module docstring for the rule).

    The base settings are taken whole from the first place that has them: the choice stored
    beside the checkpoint (:func:`read_threshold_choice`, skipped when ``use_stored`` is false),
    ``config.localization`` (:func:`gcc_jax.localization_scoring.config_peak_settings`), the
    defaults of :class:`~gcc_jax.localization.PeakSettings`. The ``given`` settings replace
    their fields. Warnings say when a stored choice was made for another training step than
    ``step``, or is used with a detector (offset or plateau rule) other than its own.

    Args:
      checkpoint: ``"best"`` / ``"latest"`` / a step (with ``workdir``) or a model directory.
      workdir: the training run's directory.
      config: the run's config (its ``localization`` block), or ``None``.
      given: the settings the caller chose, ``{name: value}`` of :data:`PEAK_FIELDS`
        (:func:`given_peak_flags`); ``None`` values count as not given.
      step: the training step of the loaded variables (``None`` for a model directory).
      use_stored: read the stored choice (``False`` while a new one is being chosen).

    Returns:
      A :class:`ResolvedPeaks`.

    Raises:
      ValueError: ``given`` names something that is not a peak setting, or a value out of
        range (:class:`~gcc_jax.localization.PeakSettings`); the stored file holds no threshold.
    """
    given = {name: value for name, value in (given or {}).items() if value is not None}
    unknown = sorted(set(given) - set(PEAK_FIELDS))
    if unknown:
        raise ValueError(f"{', '.join(unknown)}: not a peak setting (one of {', '.join(PEAK_FIELDS)})")
    configured = config_peak_settings(config) if config is not None else PeakSettings()
    stored = read_threshold_choice(checkpoint, workdir) if use_stored else None
    if stored is not None:
        base = _stored_settings(stored, configured)
        source = f"chosen on {stored.get('split')} (step {stored.get('step')})"
        if stored.get("step") != step:
            _log.warning(
                "the stored localization threshold was chosen for step %s; the model is at step %s",
                stored.get("step"), step,
            )  # fmt: skip
    else:
        base, source = configured, "config" if config is not None else "default"
    settings = dataclasses.replace(base, **given)
    if "threshold" in given:
        source = "argument"
    elif stored is not None and (settings.one_per_plateau, settings.pixel_offset) != (
        base.one_per_plateau, base.pixel_offset
    ):
        _log.warning(
            "the stored threshold %g was chosen with one_per_plateau=%s, pixel_offset=%g; it is used with "
            "one_per_plateau=%s, pixel_offset=%g as asked",
            base.threshold, base.one_per_plateau, base.pixel_offset, settings.one_per_plateau, settings.pixel_offset,
        )  # fmt: skip
    return ResolvedPeaks(settings, source)


def predict_split(
    trained: TrainedModel, config: ml_collections.ConfigDict, split: str | None, mesh: Mesh, *, progress: bool = False,
    source=None,
) -> Iterator[dict[str, Any]]:
    """Per-image records (:func:`gcc_jax.runtime.iterate_predictions`) of ``trained`` on a
    split of ``config.dataset`` (or on the examples of ``source``, e.g. a raw annotated folder),
    through the run's evaluation pipeline, on ``mesh``; ``progress`` draws a bar (images done,
    rate, time left) on stderr."""
    predict_fn = make_predict_fn(trained.model.apply, mesh)
    batches = make_eval_batches(config, split, source=source)
    records = iterate_predictions(predict_fn, trained.variables, batches, mesh)
    if not progress:
        return records
    return tqdm.tqdm(
        records, total=batches.num_examples, desc=f"evaluating {split or config.dataset.eval_split}", unit="image",
        file=sys.stderr, mininterval=0.5 if sys.stderr.isatty() else 10.0,
    )  # fmt: skip


def _choice_record(choice: ThresholdChoice, peaks: PeakSettings, about: dict) -> dict:
    """What ``--choose_threshold`` stores: the chosen threshold with the detector it was chosen
    for (``pixel_offset``, ``one_per_plateau``), its P/R/F1 and curve, and ``about`` (split,
    checkpoint, step)."""
    best = int(choice.candidates.tolist().index(choice.threshold))
    return {
        "threshold": choice.threshold, "pixel_offset": peaks.pixel_offset,
        "one_per_plateau": peaks.one_per_plateau, "setting": choice.setting,
        "f1": choice.f1, "precision": float(choice.precision[best]), "recall": float(choice.recall[best]),
        **about,
        "candidates": choice.candidates.tolist(), "precision_all": choice.precision.tolist(),
        "recall_all": choice.recall.tolist(), "f1_all": choice.f1_all.tolist(),
    }  # fmt: skip


def evaluate_checkpoint(
    config: ml_collections.ConfigDict,
    *,
    workdir: str | os.PathLike | None = None,
    checkpoint: str = "best",
    split: str | None = None,
    peaks: Mapping[str, Any] | None = None,
    choose_threshold: bool = False,
    progress: bool = False,
    on_image=None,
    source=None,
) -> dict:
    """Counting and localization metrics of a checkpoint on a split (this process's devices).

    Args:
      config: the run's config (data set, model width, loss → head, eval batch size,
        ``localization``).
      workdir: the training run's directory (for ``best`` / ``latest`` / a step).
      checkpoint: ``"best"``, ``"latest"``, a step number (resumable checkpoints of
        ``workdir``), or the path of a model directory written by ``save_variables`` /
        ``convert_weights`` (its own ``model.json`` decides width and head).
      split: split to evaluate (default ``config.dataset.eval_split``).
      peaks: the peak settings given by the caller, ``{name: value}`` (e.g.
        ``{"threshold": 0.1}``, :func:`given_peak_flags`); the others are resolved
        (:func:`resolve_peak_settings`).
      choose_threshold: choose the threshold with the best F1 on this split, store it
        (:func:`threshold_path`) and report the metrics at it.
      progress: show a progress bar (images done, rate, time left) on stderr.
      on_image: called with each image's record and matches as it is scored
        (:func:`gcc_jax.runtime.evaluation.evaluate_records`), e.g. a :class:`gcc_jax.image_results.ImageResults`.
      source: evaluate these examples instead of the split, e.g. a raw annotated folder
        (:class:`gcc_jax.data.raw_folder_source.AnnotatedFolderSource`); ``split`` then only
        names them in the result. Without a ``workdir`` (whose cached mean training count is
        used) the ``trivial_*`` baseline is left out, as the training split may not be at hand.

    Returns:
      The metrics of :func:`gcc_jax.runtime.evaluate` plus ``checkpoint``, ``step`` (or
      ``None`` for a model directory) and ``split``; with ``choose_threshold`` also
      ``chosen_threshold`` (the stored record).

    Raises:
      ValueError: a workdir checkpoint was asked for without ``workdir``; ``choose_threshold``
        with localization disabled, or with nowhere to store the choice.
      FileNotFoundError: no such checkpoint.
    """
    split = split or config.dataset.eval_split
    options = LocalizationOptions.from_config(config)
    if choose_threshold and (options is None or threshold_path(checkpoint, workdir) is None):
        raise ValueError("--choose_threshold needs config.localization.enabled and a --workdir (or a model directory)")
    mesh = local_eval_mesh(config.eval_batch_size)
    trained = load_trained_model(checkpoint, mesh=mesh, workdir=workdir, config=config)
    if options is not None:
        resolved = resolve_peak_settings(
            checkpoint, workdir=workdir, config=config, given=peaks, step=trained.step, use_stored=not choose_threshold
        )
        options = dataclasses.replace(options, peaks=resolved.settings)
    records = predict_split(trained, config, split, mesh, progress=progress, source=source)
    chosen = None
    if choose_threshold:
        # Kept without their images: a split's density maps are small, its images are not.
        records = [{k: v for k, v in record.items() if k != "image"} for record in records]
        about = {"dataset": config.dataset.name, "split": split, "checkpoint": str(checkpoint), "step": trained.step}
        # The evaluate_checkpoint argument choose_threshold shadows the function's bare name.
        chosen = _choice_record(localization_scoring.choose_threshold(records, options), options.peaks, about)
        _write_threshold_choice(threshold_path(checkpoint, workdir), chosen)
        options = dataclasses.replace(options, peaks=dataclasses.replace(options.peaks, threshold=chosen["threshold"]))
    trivial = mean_training_count(config, workdir) if source is None or workdir is not None else None
    result = evaluate_records(records, trivial_count=trivial, localization=options, on_image=on_image)
    out = {**result.metrics, "checkpoint": str(checkpoint), "step": trained.step, "split": split}
    if chosen is not None:
        out["chosen_threshold"] = chosen
    return out
