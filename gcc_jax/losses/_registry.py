"""The losses by name: what each one reads from a batch and which hyper-parameters it takes.

A training program names its loss in a config (``config.loss.name``) and keeps one block of
keyword hyper-parameters per loss (``config.loss.gl``, ...). :data:`LOSSES` is the one list of
those names; everything that depends on the choice of loss reads it from here:

* the call: which batch entries become which keyword arguments (BL's ``st_size`` and
  ``targets``), and whether the loss needs the training crop size (GL normalises by it);
* the hyper-parameters, one frozen object per loss (:class:`gcc_jax.losses.GLHyperParameters`,
  ...), checked once when a config block becomes one; its ``batch_loss(terms)`` is the batch
  reduction, so that a program that computes the per-image terms on several devices reduces
  them exactly as the loss function does.

The network head each loss's official code trains is a model setting:
:data:`gcc_jax.models.OFFICIAL_HEADS`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import jax

from gcc_jax.losses import _bayesian, _dm_count, _generalized, _pixel

__all__ = ["LOSSES", "LOSS_NAMES", "RegisteredLoss", "get_loss"]


@dataclasses.dataclass(frozen=True)
class RegisteredLoss:
    """One loss of :mod:`gcc_jax.losses` and what a training program needs to know about it.

    Attributes:
      name: the config name (``"gl"``, ``"bl"``, ``"dm_count"``, ``"l2"``).
      function: the loss, ``function(density, points, point_mask, **batch_arguments,
        **hyper_parameters)`` returning ``(loss, terms)``.
      hyper_parameters_type: the loss's frozen hyper-parameter class (its fields are the
        keyword hyper-parameters of ``function``; ``batch_loss(terms)`` its batch reduction).
      batch_arguments: keyword argument of ``function`` -> batch entry it is read from, for
        inputs beyond ``points`` and ``point_mask`` (BL: ``st_size`` ``[B]``, ``targets``
        ``[B, M]``).
    """

    name: str
    function: Callable[..., tuple[jax.Array, dict[str, jax.Array]]]
    hyper_parameters_type: type
    batch_arguments: Mapping[str, str]

    @property
    def batch_keys(self) -> tuple[str, ...]:
        """Every batch entry the loss reads."""
        return ("points", "point_mask", *self.batch_arguments.values())

    @property
    def needs_crop_size(self) -> bool:
        """The loss takes the side of the training crop (``crop_size``) as a hyper-parameter."""
        return "crop_size" in {field.name for field in dataclasses.fields(self.hyper_parameters_type)}

    def hyper_parameters(
        self, options: Mapping[str, Any], *, stride: int, crop_size: int | None = None
    ) -> Any:
        """The loss's checked hyper-parameter object from its keyword ``options``.

        Args:
          options: the loss's keyword hyper-parameters (its config block), without ``stride``
            and ``crop_size``.
          stride: density cell size in input pixels (the model's).
          crop_size: the training crop side in pixels, for a loss that needs it.

        Returns:
          A :attr:`hyper_parameters_type`.

        Raises:
          ValueError: the loss needs ``crop_size`` and none was given, or an option out of its
            range.
          TypeError: an option the loss does not take.
        """
        settings = dict(options, stride=stride)
        if self.needs_crop_size:
            if crop_size is None:
                raise ValueError(f"loss {self.name!r} needs crop_size")
            settings["crop_size"] = crop_size
        return self.hyper_parameters_type(**settings)

    def __call__(
        self, density: jax.Array, batch: Mapping[str, jax.Array], hyper_parameters: Any
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """The loss of ``density`` ``[B, h, w]`` against ``batch``.

        Args:
          density: ``[B, h, w]`` density maps at ``hyper_parameters.stride``.
          batch: holds :attr:`batch_keys` (``points`` ``[B, M, 2]`` (x, y) crop pixels,
            ``point_mask`` ``[B, M]``, and the loss's own entries).
          hyper_parameters: a :attr:`hyper_parameters_type` (see :meth:`hyper_parameters`).

        Returns:
          ``(loss, terms)`` of :attr:`function`.
        """
        extra = {argument: batch[key] for argument, key in self.batch_arguments.items()}
        fields = {field.name: getattr(hyper_parameters, field.name) for field in dataclasses.fields(hyper_parameters)}
        return self.function(density, batch["points"], batch["point_mask"], **extra, **fields)


LOSSES: Mapping[str, RegisteredLoss] = {
    loss.name: loss
    for loss in (
        RegisteredLoss("gl", _generalized.generalized_loss, _generalized.GLHyperParameters, {}),
        # BL's loaders pass the fraction of each head box inside the crop as its target.
        RegisteredLoss(
            "bl", _bayesian.bayesian_loss, _bayesian.BLHyperParameters, {"st_size": "st_size", "targets": "targets"}
        ),
        RegisteredLoss("dm_count", _dm_count.dm_count_loss, _dm_count.DMCountHyperParameters, {}),
        RegisteredLoss("l2", _pixel.l2_loss, _pixel.L2HyperParameters, {}),
    )
}

LOSS_NAMES = tuple(LOSSES)


def get_loss(name: str) -> RegisteredLoss:
    """The registered loss called ``name``.

    Raises:
      ValueError: an unknown name (the message lists the known ones).
    """
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; the losses are {', '.join(LOSS_NAMES)}")
    return LOSSES[name]
