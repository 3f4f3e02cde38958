"""Training recipes: the optimizer, batch, run length and small-image rule of each loss's
official trainer, applied to the config fields a user left unset.

The official code bases train their losses differently (GL: Adam with weight decay 1e-5 and a
10-epoch warm-up, batch 1, 500 epochs; BL: weight decay 1e-4, no warm-up, 1000 epochs;
DM-Count: weight decay 1e-4, batch 10, 1000 epochs, small images upscaled). ``configs/default.py``
leaves the fields of :data:`RECIPE_FIELDS` at ``None``; :func:`resolve_recipe`, called when a
run starts, fills each one that is still ``None`` from the recipe of ``config.loss.name`` (and
``config.dataset.name`` where the official code sets it per data set). A value that a config
file or the command line set is kept, so ``--config.loss.name=bl`` alone gives BL's recipe
and ``--config.loss.name=bl --config.optimizer.learning_rate=1e-6`` changes only the rate.
The run saves the resolved config (``config.json``) and logs which fields came from where.

L2 has no official trainer; it takes GL's recipe (the GL paper trains its L2 baseline in the GL
code base), so a comparison of the two changes only the loss.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from collections.abc import Mapping
from typing import Any

import ml_collections

from gcc_jax.losses import LOSS_NAMES

__all__ = ["RECIPE_FIELDS", "RECIPES", "Setting", "check_resolved", "recipe", "resolve_recipe"]

_log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Setting:
    """One value of a recipe and where the official code sets it.

    Attributes:
      value: the config value.
      source: ``"<repository> <file>: <what it says>"``.
    """

    value: Any
    source: str


_GL = "jia-wan/GeneralizedLoss-Counting-Pytorch"
_BL = "ZhihengCV/Bayesian-Crowd-Counting"
_DM = "cvlab-stonybrook/DM-Count"

_GL_RECIPE = {
    "optimizer.learning_rate": Setting(1e-5, f"{_GL} train.py: --lr 1e-5"),
    "optimizer.weight_decay": Setting(1e-5, f"{_GL} train.py: --weight-decay 1e-5"),
    "optimizer.warmup_epochs": Setting(
        10, f"{_GL} utils/emd_dot_trainer.py: lr · (epoch + 1) / 10 in epochs 0-9"
    ),
    "batch_size": Setting(1, f"{_GL} train.py: --batch-size 1"),
    "num_epochs": Setting(500, f"{_GL} train.py: --max-epoch 500"),
    "eval_every_epochs": Setting(5, f"{_GL} train.py: --val-epoch 5"),
    "dataset.min_size_policy": Setting(
        "pad", f"{_GL} datasets/crowd.py asserts the shorter side >= the crop; gcc_jax pads"
    ),
}
_BL_RECIPE = {
    "optimizer.learning_rate": Setting(1e-5, f"{_BL} train.py: --lr 1e-5"),
    "optimizer.weight_decay": Setting(1e-4, f"{_BL} train.py: --weight-decay 1e-4"),
    "optimizer.warmup_epochs": Setting(0, f"{_BL} utils/regression_trainer.py: constant lr"),
    "batch_size": Setting(1, f"{_BL} train.py: --batch-size 1"),
    "num_epochs": Setting(1000, f"{_BL} train.py: --max-epoch 1000"),
    "eval_every_epochs": Setting(5, f"{_BL} train.py: --val-epoch 5"),
    "dataset.min_size_policy": Setting(
        "pad", f"{_BL} datasets/crowd.py asserts the shorter side >= the crop; gcc_jax pads"
    ),
}
_DM_COUNT_RECIPE = {
    "optimizer.learning_rate": Setting(1e-5, f"{_DM} train.py: --lr 1e-5"),
    "optimizer.weight_decay": Setting(1e-4, f"{_DM} train.py: --weight-decay 1e-4"),
    "optimizer.warmup_epochs": Setting(0, f"{_DM} train_helper.py: constant lr"),
    "batch_size": Setting(10, f"{_DM} train.py: --batch-size 10"),
    "num_epochs": Setting(1000, f"{_DM} train.py: --max-epoch 1000"),
    "eval_every_epochs": Setting(5, f"{_DM} datasets/dataset_cfg.json: val_epoch 5"),
    "dataset.min_size_policy": Setting(
        "upscale", f"{_DM} datasets/crowd.py: images below the crop are resized up to it"
    ),
}
# loss name -> {dotted config field: Setting}; L2 trains with GL's recipe.
RECIPES: Mapping[str, Mapping[str, Setting]] = {
    "gl": _GL_RECIPE, "bl": _BL_RECIPE, "dm_count": _DM_COUNT_RECIPE, "l2": _GL_RECIPE,
}

# The config fields a recipe sets (dotted paths); configs/default.py leaves them at None.
RECIPE_FIELDS = tuple(_GL_RECIPE)

# Settings the official code sets per data set: (loss, dataset name) -> {field: Setting}.
_DATASET_RECIPES: Mapping[tuple[str, str], Mapping[str, Setting]] = {
    ("dm_count", "nwpu_crowd"): {
        "eval_every_epochs": Setting(50, f"{_DM} datasets/dataset_cfg.json: nwpu val_epoch 50"),
    },
}


def recipe(loss: str, dataset: str) -> dict[str, Setting]:
    """The recipe of ``loss`` on ``dataset``: ``{dotted config field: Setting}``.

    Args:
      loss: a loss name (:data:`gcc_jax.losses.LOSS_NAMES`).
      dataset: a data set name (per-data-set settings apply where the official code has them).

    Raises:
      ValueError: an unknown loss name.
    """
    if loss not in RECIPES:
        raise ValueError(f"config.loss.name={loss!r} is not one of {LOSS_NAMES}")
    return {**RECIPES[loss], **_DATASET_RECIPES.get((loss, dataset), {})}


def _get(config: ml_collections.ConfigDict, path: str) -> Any:
    *blocks, name = path.split(".")
    for block in blocks:
        config = config[block]
    return config[name]


def _set(config: ml_collections.ConfigDict, path: str, value: Any) -> None:
    *blocks, name = path.split(".")
    for block in blocks:
        config = config[block]
    config[name] = value


def check_resolved(values: Mapping[str, Any]) -> None:
    """Fails, naming them, when recipe fields are still ``None``.

    Args:
      values: config path (``"optimizer.weight_decay"``) -> its value.

    Raises:
      ValueError: some values are ``None``; the message says to resolve the recipe.
    """
    unset = [f"config.{path}" for path, value in values.items() if value is None]
    if unset:
        raise ValueError(
            f"{', '.join(unset)} unset: resolve the loss's training recipe first "
            "(gcc_jax.runtime.resolve_recipe, which train_and_evaluate applies)"
        )


def resolve_recipe(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """A copy of ``config`` whose :data:`RECIPE_FIELDS` left at ``None`` hold the recipe of
    ``config.loss.name`` on ``config.dataset.name``; fields already set are kept.

    Resolving a resolved config changes nothing. Logs each field's value and origin.

    Args:
      config: a run config (``configs/default.py``'s fields).

    Returns:
      The resolved copy (locked if ``config`` was).

    Raises:
      ValueError: an unknown ``config.loss.name``.
    """
    settings = recipe(config.loss.name, config.dataset.name)
    resolved = copy.deepcopy(config)
    origins = []
    for path, setting in settings.items():
        if _get(resolved, path) is None:
            _set(resolved, path, setting.value)
            origins.append(f"{path}={setting.value!r} ({setting.source})")
        else:
            origins.append(f"{path}={_get(resolved, path)!r} (set by the config)")
    _log.info("training recipe of loss %r: %s", config.loss.name, "; ".join(origins))
    return resolved
