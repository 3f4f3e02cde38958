"""The training objective named by ``config.loss``: a loss function on density maps and batches.

Each loss of :mod:`gcc_jax.losses` takes its own extra inputs (GL the crop size, BL each
crop's source-image size and head targets); :func:`make_loss_fn` binds them from the batch
and the loss's own hyper-parameter block of the config, so the training step calls every
loss the same way.

Given the mesh, every device computes the per-image terms of its own slice of the batch
(``shard_map`` over the ``data`` axis) and the batch loss is reduced from them. The losses are
per-image computations anyway; running them per device keeps XLA from gathering the batch
onto every device, which it would do for GL's CPU layout (a sequential map over the images,
see ``gcc_jax.losses._generalized_chunked``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import ml_collections
from jax.sharding import Mesh, PartitionSpec

from gcc_jax import losses
from gcc_jax.models import STRIDE
from gcc_jax.training.mesh import DATA_AXIS

__all__ = ["LossFn", "batch_loss_from_terms", "make_loss_fn"]

# (density [B, h, w], batch) -> (scalar batch loss, {term: [B]}).
LossFn = Callable[[jax.Array, Mapping[str, jax.Array]], tuple[jax.Array, dict[str, jax.Array]]]


# Batch entries each loss reads.
_LOSS_INPUTS = {
    "gl": ("points", "point_mask"),
    "bl": ("points", "point_mask", "st_size", "targets"),
    "dm_count": ("points", "point_mask"),
    "l2": ("points", "point_mask"),
}


def batch_loss_from_terms(name: str, options: Mapping, terms: Mapping[str, jax.Array]) -> jax.Array:
    """The batch loss as the reference reduces its per-image terms ``[B]``.

    GL, BL and L2 average the per-image totals; DM-Count sums its OT term over the batch and
    averages the count and TV terms, as the official DM-Count trainer does.
    """
    if name == "dm_count":
        return (
            options["wot"] * jnp.sum(terms["ot"])
            + jnp.mean(terms["count"])
            + options["wtv"] * jnp.mean(terms["tv"])
        )
    return jnp.mean(terms["total"])


def make_loss_fn(
    loss_config: ml_collections.ConfigDict, *, crop_size: int, mesh: Mesh | None = None
) -> LossFn:
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
      mesh: the training mesh; when given, each device computes the terms of its slice of the
        batch (the batch must be split evenly over the ``data`` axis) and the batch loss is
        :func:`batch_loss_from_terms` of them — the same value as without a mesh.

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

    if mesh is None:
        return loss_fn

    def terms_on_device(density, inputs):
        return loss_fn(density, inputs)[1]

    batch_spec = PartitionSpec(DATA_AXIS)
    # check_vma=False: the losses are device-local (no collectives); their loops start from
    # constants, which the varying-manual-axes type check would otherwise reject.
    sharded_terms = jax.shard_map(
        terms_on_device, mesh=mesh, in_specs=(batch_spec, batch_spec), out_specs=batch_spec,
        check_vma=False,
    )  # fmt: skip

    def sharded_loss_fn(density, batch):
        terms = sharded_terms(density, {key: batch[key] for key in _LOSS_INPUTS[name]})
        return batch_loss_from_terms(name, options, terms), terms

    return sharded_loss_fn
