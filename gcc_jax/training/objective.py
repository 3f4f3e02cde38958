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
import ml_collections
from jax.sharding import Mesh, PartitionSpec

from gcc_jax import losses
from gcc_jax.models import STRIDE
from gcc_jax.runtime.mesh import DATA_AXIS

__all__ = ["LossFn", "make_loss_fn"]

# (density [B, h, w], batch) -> (scalar batch loss, {term: [B]}).
LossFn = Callable[[jax.Array, Mapping[str, jax.Array]], tuple[jax.Array, dict[str, jax.Array]]]


def make_loss_fn(
    loss_config: ml_collections.ConfigDict, *, crop_size: int, mesh: Mesh | None = None
) -> LossFn:
    """The loss ``config.loss.name`` with the hyper-parameters of its config block.

    The loss is the :data:`gcc_jax.losses.LOSSES` entry of that name; its hyper-parameter
    object is made (and checked) here, once, from ``config.loss[name]``, the model's stride and
    ``crop_size`` where it needs it (GL). Each call binds the loss's own batch entries (BL:
    ``st_size`` and ``targets``, the fraction of each head box inside the crop, as BL's loaders
    pass it).

    Args:
      loss_config: ``config.loss`` (``name`` plus one block per loss).
      crop_size: training crop side in pixels.
      mesh: the training mesh; when given, each device computes the terms of its slice of the
        batch (the batch must be split evenly over the ``data`` axis) and the batch loss is
        ``batch_loss(terms)`` of the hyper-parameter object, the reduction the loss itself
        applies — the same value as without a mesh.

    Returns:
      ``loss_fn(density [B, h, w], batch) -> (loss, terms)``; ``batch`` holds ``points``
      ``[B, M, 2]``, ``point_mask`` ``[B, M]`` and, for BL, ``st_size`` ``[B]`` and
      ``targets`` ``[B, M]``.

    Raises:
      ValueError: an unknown loss name, or a hyper-parameter out of its range.
      TypeError: a key of the loss's config block that the loss does not take.
    """
    if loss_config.name not in losses.LOSSES:
        raise ValueError(
            f"config.loss.name must be one of {', '.join(losses.LOSS_NAMES)}; got {loss_config.name!r}"
        )
    loss = losses.get_loss(loss_config.name)
    hyper_parameters = loss.hyper_parameters(loss_config[loss.name].to_dict(), stride=STRIDE, crop_size=crop_size)

    def loss_fn(density, batch):
        return loss(density, batch, hyper_parameters)

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
        terms = sharded_terms(density, {key: batch[key] for key in loss.batch_keys})
        return hyper_parameters.batch_loss(terms), terms

    return sharded_loss_fn
