"""Evaluate a checkpoint on a split and print / write its counting and localization metrics.

    # a training run's best checkpoint, config read from the workdir
    python -m gcc_jax.evaluate --workdir /tmp/gcc_synthetic [--checkpoint best|latest|STEP] [--split test]
    # a model directory (python -m gcc_jax.convert_weights, e.g. official GL weights)
    python -m gcc_jax.evaluate --config configs/sha.py --checkpoint MODEL_DIR [--config.dataset.data_dir=...]
    # choose the localization threshold on a validation split (stored for evaluate and predict)
    python -m gcc_jax.evaluate --workdir /tmp/gcc_synthetic --split val --choose_threshold

Prints one JSON object (``mae``, ``rmse`` — the literature's "MSE" —, ``nae``, ``game0..3``,
``trivial_mae`` / ``trivial_rmse`` of the mean-training-count predictor, ``num_images``,
``loc/threshold`` and ``loc/{precision,recall,f1}_<setting>`` (see
:func:`gcc_jax.training.evaluate`), ``checkpoint``, ``step``, ``split``) and writes it to
``--output`` (default ``WORKDIR/eval_<split>_<checkpoint>.json`` when a workdir is given).
Runs on this process's devices.

Localization threshold: ``--threshold``, else the one stored by ``--choose_threshold``
(:data:`THRESHOLD_FILE` in the workdir, or in the model directory), else
``config.localization.threshold``. ``--choose_threshold`` picks the threshold with the best F1
on the evaluated split (:func:`gcc_jax.training.evaluation.choose_localization_threshold`),
stores it with its precision / recall / F1 curve, and reports the metrics at it: choose on a
validation split, then evaluate the test split with the stored value.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import pathlib

import jax
import jax.numpy as jnp
import ml_collections

from gcc_jax.models import VGG19Density, load_variables
from gcc_jax.training import config as config_lib
from gcc_jax.training.checkpoints import restore_params
from gcc_jax.training.evaluation import (
    LocalizationOptions,
    choose_localization_threshold,
    evaluate_records,
    iterate_predictions,
    local_eval_mesh,
    make_eval_batches,
    mean_training_count,
)
from gcc_jax.training.mesh import replicate, replicated_sharding
from gcc_jax.training.state import create_model
from gcc_jax.training.steps import make_predict_fn

__all__ = ["THRESHOLD_FILE", "evaluate_checkpoint", "load_model", "main", "read_threshold_choice", "threshold_path"]

_log = logging.getLogger(__name__)

_RUN_CHECKPOINTS = ("best", "latest")
# The localization threshold chosen by --choose_threshold (with its P/R/F1 curve), stored
# beside the checkpoint it was chosen for: in the workdir, or in the model directory.
THRESHOLD_FILE = "localization_threshold.json"


def _is_run_checkpoint(checkpoint: str) -> bool:
    return checkpoint in _RUN_CHECKPOINTS or checkpoint.isdigit()


def load_model(
    checkpoint: str,
    *,
    config: ml_collections.ConfigDict | None,
    workdir: str | os.PathLike | None = None,
    mesh,
) -> tuple[VGG19Density, dict, int | None]:
    """The model and variables of a run checkpoint or a model directory, placed on ``mesh``.

    Args:
      checkpoint: ``"best"``, ``"latest"``, a step number (checkpoints of ``workdir``; the
        model is ``config``'s), or the path of a model directory written by
        ``save_variables`` / ``convert_weights`` (its ``model.json`` decides width and head).
      config: the run's config; needed for a run checkpoint. For a model directory only
        ``config.model.dtype`` is read (``None``: float32).
      workdir: the training run's directory (for a run checkpoint).
      mesh: the variables are replicated on it.

    Returns:
      ``(model, variables, step)``; ``step`` is ``None`` for a model directory.

    Raises:
      ValueError: a run checkpoint without ``workdir`` or ``config``.
      FileNotFoundError: no such checkpoint.
    """
    if _is_run_checkpoint(checkpoint):
        if workdir is None or config is None:
            raise ValueError(f"--checkpoint={checkpoint} needs --workdir (or give a model directory path)")
        model = create_model(config)
        dummy = jnp.zeros((1, config.crop_size, config.crop_size, 3), jnp.float32)
        shapes = jax.eval_shape(model.init, jax.random.key(0), dummy)["params"]
        sharding = replicated_sharding(mesh)
        abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), shapes)
        params, step = restore_params(workdir, abstract, which=checkpoint)
        return model, {"params": params}, step
    loaded, options = load_variables(checkpoint)
    dtype = jnp.dtype(config.model.dtype) if config is not None else jnp.float32
    return VGG19Density(**options, dtype=dtype), replicate(loaded, mesh), None


def threshold_path(checkpoint: str, workdir: str | os.PathLike | None) -> pathlib.Path | None:
    """Where the chosen threshold of ``checkpoint`` is stored: :data:`THRESHOLD_FILE` in
    ``workdir`` for a run checkpoint, in the model directory otherwise (``None``: no place)."""
    if _is_run_checkpoint(checkpoint):
        return None if workdir is None else pathlib.Path(workdir) / THRESHOLD_FILE
    return pathlib.Path(checkpoint) / THRESHOLD_FILE


def read_threshold_choice(checkpoint: str, workdir: str | os.PathLike | None = None) -> dict | None:
    """The record ``--choose_threshold`` stored for ``checkpoint`` (keys ``threshold``,
    ``pixel_offset``, ``one_per_plateau``, ``setting``, ``f1``, ``precision``, ``recall``, ``split``,
    ``checkpoint``, ``step``, and the curve), or ``None`` if there is none."""
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


def evaluate_checkpoint(
    config: ml_collections.ConfigDict,
    *,
    workdir: str | os.PathLike | None = None,
    checkpoint: str = "best",
    split: str | None = None,
    threshold: float | None = None,
    pixel_offset: float | None = None,
    one_per_plateau: bool | None = None,
    choose_threshold: bool = False,
) -> dict:
    """Counting and localization metrics of a checkpoint on a split.

    Args:
      config: the run's config (data set, model width, loss → head, eval batch size,
        ``localization``).
      workdir: the training run's directory (for ``best`` / ``latest`` / a step).
      checkpoint: ``"best"``, ``"latest"``, a step number (resumable checkpoints of
        ``workdir``), or the path of a model directory written by ``save_variables`` /
        ``convert_weights`` (its own ``model.json`` decides width and head).
      split: split to evaluate (default ``config.dataset.eval_split``).
      threshold: localization peak threshold; ``None``: the stored choice
        (:func:`read_threshold_choice`), else ``config.localization.threshold``.
      pixel_offset: added to detected points; ``None``: the stored choice's, else
        ``config.localization.pixel_offset``.
      one_per_plateau: one point per plateau of equal maxima; ``None``: as ``pixel_offset``.
      choose_threshold: choose the threshold with the best F1 on this split, store it
        (:func:`threshold_path`) and report the metrics at it.

    Returns:
      The metrics of :func:`gcc_jax.training.evaluate` plus ``checkpoint``, ``step`` (or
      ``None`` for a model directory) and ``split``; with ``choose_threshold`` also
      ``chosen_threshold`` (the stored record).

    Raises:
      ValueError: a run checkpoint was asked for without ``workdir``; ``choose_threshold``
        with localization disabled, or with nowhere to store the choice.
      FileNotFoundError: no such checkpoint.
    """
    split = split or config.dataset.eval_split
    options = LocalizationOptions.from_config(config)
    stored = None if choose_threshold else read_threshold_choice(checkpoint, workdir)
    if options is not None:
        if stored is not None:
            options = dataclasses.replace(
                options, threshold=stored["threshold"], pixel_offset=stored.get("pixel_offset", options.pixel_offset),
                one_per_plateau=stored.get("one_per_plateau", options.one_per_plateau),
            )  # fmt: skip
        explicit = {"threshold": threshold, "pixel_offset": pixel_offset, "one_per_plateau": one_per_plateau}
        options = dataclasses.replace(options, **{k: v for k, v in explicit.items() if v is not None})
    if choose_threshold and (options is None or threshold_path(checkpoint, workdir) is None):
        raise ValueError("--choose_threshold needs config.localization.enabled and a --workdir (or a model directory)")
    mesh = local_eval_mesh(config.eval_batch_size)
    model, variables, step = load_model(checkpoint, config=config, workdir=workdir, mesh=mesh)
    batches = make_eval_batches(config, split)
    trivial = mean_training_count(config, workdir)
    records = iterate_predictions(make_predict_fn(model.apply, mesh), variables, batches, mesh)
    chosen = None
    if choose_threshold:
        # Kept without their images: a split's density maps are small, its images are not.
        records = [{k: v for k, v in record.items() if k != "image"} for record in records]
        setting, choice = choose_localization_threshold(records, options)
        best = int(choice.candidates.tolist().index(choice.threshold))
        chosen = {
            "threshold": choice.threshold, "pixel_offset": options.pixel_offset,
            "one_per_plateau": options.one_per_plateau, "setting": setting,
            "f1": choice.f1, "precision": float(choice.precision[best]), "recall": float(choice.recall[best]),
            "dataset": config.dataset.name, "split": split, "checkpoint": str(checkpoint), "step": step,
            "candidates": choice.candidates.tolist(), "precision_all": choice.precision.tolist(),
            "recall_all": choice.recall.tolist(), "f1_all": choice.f1_all.tolist(),
        }  # fmt: skip
        _write_threshold_choice(threshold_path(checkpoint, workdir), chosen)
        options = dataclasses.replace(options, threshold=choice.threshold)
    elif stored is not None and stored.get("step") != step:
        _log.warning(
            "the stored localization threshold was chosen for step %s, evaluating step %s", stored.get("step"), step
        )
    result = evaluate_records(records, trivial_count=trivial, localization=options)
    out = {**result.metrics, "checkpoint": str(checkpoint), "step": step, "split": split}
    if chosen is not None:
        out["chosen_threshold"] = chosen
    return out


def main(argv) -> None:
    from absl import flags

    flags_ = flags.FLAGS
    if len(argv) > 1:
        raise ValueError(f"unexpected arguments: {argv[1:]}")
    workdir = flags_.workdir
    config = config_lib.config_for_command(flags_.config, workdir)
    metrics = evaluate_checkpoint(
        config, workdir=workdir, checkpoint=flags_.checkpoint, split=flags_.split, threshold=flags_.threshold,
        pixel_offset=flags_.pixel_offset, one_per_plateau=flags_.one_per_plateau,
        choose_threshold=flags_.choose_threshold,
    )  # fmt: skip
    line = json.dumps(metrics)
    print(line)
    output = flags_.output
    if output is None and workdir is not None:
        name = flags_.checkpoint if _is_run_checkpoint(flags_.checkpoint) else pathlib.Path(flags_.checkpoint).name
        output = pathlib.Path(workdir) / f"eval_{metrics['split'].replace('/', '_')}_{name}.json"
    if output is not None:
        pathlib.Path(output).write_text(line + "\n")


def _define_flags() -> None:
    from absl import flags
    from ml_collections import config_flags

    config_flags.DEFINE_config_file("config", None, "Config file (default: the workdir's config.json).", lock_config=True)
    flags.DEFINE_string("workdir", None, "Training run directory.")
    flags.DEFINE_string("checkpoint", "best", "best | latest | STEP (of --workdir) | path of a model directory.")
    flags.DEFINE_string("split", None, "Split to evaluate (default: config.dataset.eval_split).")
    flags.DEFINE_string("output", None, "JSON file for the metrics (default: WORKDIR/eval_<split>_<checkpoint>.json).")
    flags.DEFINE_float("threshold", None, "Localization peak threshold (default: the stored choice, else the config's).")
    flags.DEFINE_float("pixel_offset", None, "Pixels added to detected points (default: the stored choice's, else the config's).")
    flags.DEFINE_boolean(
        "one_per_plateau", None, "One point per plateau of equal maxima (default: the stored choice's, else the config's)."
    )
    flags.DEFINE_boolean(
        "choose_threshold", False,
        f"Choose the localization threshold with the best F1 on --split and store it ({THRESHOLD_FILE}).",
    )  # fmt: skip


if __name__ == "__main__":
    from absl import app

    _define_flags()
    app.run(main)
