"""The training objective named by ``config.loss``: a loss function on density maps and batches.

Each loss of :mod:`gcc_jax.losses` takes its own extra inputs (GL the crop size, BL each
crop's source-image size and head targets); :func:`make_loss_fn` binds them from the batch
and the loss's own hyper-parameter block of the config, so the training step calls every
loss the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import jax
import ml_collections

from gcc_jax import losses
from gcc_jax.models import STRIDE

__all__ = ["LossFn", "make_loss_fn"]

# (density [B, h, w], batch) -> (scalar batch loss, {term: [B]}).
LossFn = Callable[[jax.Array, Mapping[str, jax.Array]], tuple[jax.Array, dict[str, jax.Array]]]


def make_loss_fn(loss_config: ml_collections.ConfigDict, *, crop_size: int) -> LossFn:
    """The loss ``config.loss.name`` with the hyper-parameters of its config block.

    =========== ===================================================================
    name        call
    =========== ===================================================================
    ``gl``      ``generalized_loss(..., crop_size=crop_size, **loss.gl)``
    ``bl``      ``bayesian_loss(..., st_size=batch["st_size"],
                targets=batch["targets"], **loss.bl)`` (targets: the fraction of
                each head box inside the crop, as BL's loaders pass it)
    ``dm_count`` ``dm_count_loss(..., **loss.dm_count)``
    ``l2``      ``l2_loss(..., **loss.l2)``
    =========== ===================================================================

    Args:
      loss_config: ``config.loss`` (``name`` plus one block per loss).
      crop_size: training crop side in pixels.

    Returns:
      ``loss_fn(density [B, h, w], batch) -> (loss, terms)``; ``batch`` holds ``points``
      ``[B, M, 2]``, ``point_mask`` ``[B, M]`` and, for BL, ``st_size`` ``[B]`` and
      ``targets`` ``[B, M]``.

    Raises:
      ValueError: an unknown loss name.
    """
    name = loss_config.name
    if name not in ("gl", "bl", "dm_count", "l2"):
        raise ValueError(f"config.loss.name must be one of gl, bl, dm_count, l2; got {name!r}")
    options = loss_config[name].to_dict()

    def loss_fn(density, batch):
        points, mask = batch["points"], batch["point_mask"]
        if name == "gl":
            return losses.generalized_loss(density, points, mask, crop_size=crop_size, stride=STRIDE, **options)
        if name == "bl":
            return losses.bayesian_loss(
                density, points, mask, st_size=batch["st_size"], targets=batch["targets"], stride=STRIDE, **options
            )
        if name == "dm_count":
            return losses.dm_count_loss(density, points, mask, stride=STRIDE, **options)
        return losses.l2_loss(density, points, mask, stride=STRIDE, **options)

    return loss_fn
