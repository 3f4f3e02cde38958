"""Run configs: checking one, saving it in the workdir, reading it back, loading config files.

A workdir is self-describing: ``train_and_evaluate`` writes the resolved config to
``WORKDIR/config.json``, so evaluation and prediction rebuild the model and the data
pipeline from the workdir alone (:func:`load_workdir_config`).
"""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import types

import ml_collections

from gcc_jax.data import DATASET_NAMES, LOADERS
from gcc_jax.localization_scoring import LocalizationOptions
from gcc_jax.losses import LOSS_NAMES
from gcc_jax.runtime.recipes import RECIPE_FIELDS, check_resolved, resolve_recipe

__all__ = [
    "CONFIG_FILE",
    "check_config",
    "config_for_command",
    "dataset_kwargs",
    "pipeline_kwargs",
    "load_config_module",
    "load_workdir_config",
    "save_config",
    "upgrade_saved_config",
]

CONFIG_FILE = "config.json"
_DTYPES = ("float32", "bfloat16")


def check_config(config: ml_collections.ConfigDict) -> None:
    """Fails early, naming the field, on values the program cannot run with.

    Raises:
      ValueError: an unknown data set, loader, loss or dtype, a size / count out of range, or a
        recipe field still unset (:func:`gcc_jax.runtime.resolve_recipe` fills them).
    """
    check_resolved({path: _field(config, path) for path in RECIPE_FIELDS})
    if config.dataset.name not in DATASET_NAMES:
        raise ValueError(f"config.dataset.name={config.dataset.name!r} is not one of {DATASET_NAMES}")
    if config.loss.name not in LOSS_NAMES:
        raise ValueError(f"config.loss.name={config.loss.name!r} is not one of {LOSS_NAMES}")
    if config.dataset.loader not in LOADERS:
        raise ValueError(f"config.dataset.loader={config.dataset.loader!r} is not one of {LOADERS}")
    if config.dataset.image_cache_mib < 0:
        raise ValueError(f"config.dataset.image_cache_mib must be >= 0, got {config.dataset.image_cache_mib}")
    if config.model.dtype not in _DTYPES:
        raise ValueError(f"config.model.dtype={config.model.dtype!r} is not one of {_DTYPES}")
    positive = {
        "crop_size": config.crop_size,
        "batch_size": config.batch_size,
        "eval_batch_size": config.eval_batch_size,
        "dataset.max_points": config.dataset.max_points,
        "dataset.eval_pad_multiple": config.dataset.eval_pad_multiple,
        "num_epochs": config.num_epochs,
        "eval_every_epochs": config.eval_every_epochs,
        "log_every_steps": config.log_every_steps,
        "checkpoint_every_steps": config.checkpoint_every_steps,
        "max_checkpoints_to_keep": config.max_checkpoints_to_keep,
    }
    for name, value in positive.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"config.{name} must be a positive integer, got {value!r}")
    if config.crop_size % 8:
        raise ValueError(f"config.crop_size={config.crop_size} must be a multiple of the density stride 8")
    if config.num_pictures < 0 or config.optimizer.warmup_epochs < 0:
        raise ValueError("config.num_pictures and config.optimizer.warmup_epochs must be >= 0")
    if config.optimizer.learning_rate <= 0 or config.optimizer.weight_decay < 0:
        raise ValueError(
            f"config.optimizer needs learning_rate > 0 and weight_decay >= 0, got "
            f"{config.optimizer.learning_rate} and {config.optimizer.weight_decay}"
        )


def _field(config: ml_collections.ConfigDict, path: str):
    for name in path.split("."):
        config = config[name]
    return config


def dataset_kwargs(config: ml_collections.ConfigDict) -> dict:
    """Arguments shared by every pipeline of ``config.dataset`` (location, synthetic options)."""
    kwargs = {"data_dir": config.dataset.data_dir, "manual_dir": config.dataset.manual_dir}
    if config.dataset.name == "synthetic_crowd":
        kwargs["synthetic"] = config.dataset.synthetic.to_dict()
    return kwargs


def pipeline_kwargs(config: ml_collections.ConfigDict) -> dict:
    """:func:`dataset_kwargs` and the input backend (``config.dataset.loader``): the arguments
    every input pipeline of a run shares."""
    return {**dataset_kwargs(config), "loader": config.dataset.loader}


# Fields renamed since configs were first saved in workdirs: (block, old name, new name).
_RENAMED_FIELDS = (("optimizer", "decay", "schedule"),)
# What scored localization before config.localization (or one of its fields) existed.
_LOCALIZATION = LocalizationOptions()
# Fields added since configs were first saved: (block, name, the value that reproduces what a
# run saved without the field did). The code reads every field directly; old configs get them here.
_ADDED_FIELDS = (
    ("dataset", "loader", "tf.data"),
    ("dataset", "image_cache_mib", 0),  # no image cache before the field existed
    ("optimizer", "schedule", "constant"),
    ("localization", "enabled", True),
    ("localization", "threshold", _LOCALIZATION.peaks.threshold),
    ("localization", "radii", list(_LOCALIZATION.radii)),
    ("localization", "choose_on", _LOCALIZATION.choose_on),
    ("localization", "pixel_offset", _LOCALIZATION.peaks.pixel_offset),
    ("localization", "one_per_plateau", _LOCALIZATION.peaks.one_per_plateau),
)
# Blocks added since configs were first saved (filled field by field from _ADDED_FIELDS).
_ADDED_BLOCKS = ("localization",)


def upgrade_saved_config(saved: dict) -> dict:
    """A config dict saved by an earlier version, with renamed fields under their new names
    (``optimizer.decay`` is now ``optimizer.schedule``) and fields added since then set to what
    such a run did without them (``dataset.loader="tf.data"``, ``dataset.image_cache_mib=0``,
    ``optimizer.schedule="constant"``, the ``localization`` block and its fields at the
    defaults of :class:`gcc_jax.localization_scoring.LocalizationOptions`); other fields are
    left as they are."""
    saved = json.loads(json.dumps(saved))  # a deep copy
    for block, old, new in _RENAMED_FIELDS:
        fields = saved.get(block)
        if isinstance(fields, dict) and old in fields and new not in fields:
            fields[new] = fields.pop(old)
    for block in _ADDED_BLOCKS:
        saved.setdefault(block, {})
    for block, name, value in _ADDED_FIELDS:
        fields = saved.get(block)
        if isinstance(fields, dict):
            fields.setdefault(name, value)
    return saved


def save_config(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> pathlib.Path:
    """Writes the resolved ``config`` to ``workdir/config.json`` (atomically) and returns the path."""
    path = pathlib.Path(workdir) / CONFIG_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(config.to_dict(), indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return path


def load_workdir_config(workdir: str | os.PathLike) -> ml_collections.ConfigDict:
    """The config a training run saved in ``workdir`` (locked, like the one it ran with), with
    fields renamed since then under their new names (:func:`upgrade_saved_config`).

    Raises:
      FileNotFoundError: ``workdir`` holds no ``config.json``.
    """
    path = pathlib.Path(workdir) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {workdir} is not a gcc_jax training workdir")
    config = ml_collections.ConfigDict(upgrade_saved_config(json.loads(path.read_text())))
    config.lock()
    return config


def config_for_command(
    config: ml_collections.ConfigDict | None, workdir: str | os.PathLike | None
) -> ml_collections.ConfigDict:
    """The config of a command that takes ``--config`` and / or ``--workdir`` (evaluation,
    submission files): ``--config`` when given (its training recipe resolved, as a run
    would), else the one the training run saved in ``workdir``.

    Raises:
      ValueError: neither is given.
      FileNotFoundError: ``workdir`` holds no saved config.
    """
    if config is not None:
        return resolve_recipe(config)
    if workdir is not None:
        return load_workdir_config(workdir)
    raise ValueError("give --workdir (a training run) or --config (with --checkpoint MODEL_DIR)")


def load_config_module(path: str | os.PathLike) -> types.ModuleType:
    """Imports a config file by path (how the dataset configs reach ``configs/default.py``
    from wherever they are loaded, without ``configs/`` being on ``sys.path``).

    Raises:
      FileNotFoundError: no file at ``path``.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} not found")
    spec = importlib.util.spec_from_file_location(f"gcc_jax_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
