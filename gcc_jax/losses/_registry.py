"""The losses by name: what each one reads from a batch, how it reduces a batch, which network
head its official code trains.

A training program names its loss in a config (``config.loss.name``) and keeps one block of
keyword hyper-parameters per loss (``config.loss.gl``, ...). :data:`LOSSES` is the one list of
those names; everything that depends on the choice of loss reads it from here:

* the call: which batch entries become which keyword arguments (BL's ``st_size`` and
  ``targets``), and whether the loss needs the training crop size (GL normalises by it);
* the batch reduction from the per-image terms ``[B]``, so that a program that computes the
  terms on several devices reduces them exactly as the loss function does;
* the head of the VGG19 density network the official code trains with (``upsample`` /
  ``output`` of :class:`gcc_jax.models.VGG19Density`), so that a model matches its loss.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import jax

from gcc_jax.losses import _bayesian, _dm_count, _generalized, _pixel

__all__ = ["LOSSES", "LOSS_NAMES", "RegisteredLoss", "get_loss"]

# (per-image terms {name: [B]}, the loss's keyword options) -> scalar batch loss.
BatchReduction = Callable[[Mapping[str, jax.Array], Mapping[str, Any]], jax.Array]


@dataclasses.dataclass(frozen=True)
class RegisteredLoss:
    """One loss of :mod:`gcc_jax.losses` and what a training program needs to know about it.

    Attributes:
      name: the config name (``"gl"``, ``"bl"``, ``"dm_count"``, ``"l2"``).
      function: the loss, ``function(density, points, point_mask, *, stride, ...)`` returning
        ``(loss, terms)``.
      batch_arguments: keyword argument of ``function`` -> batch entry it is read from, for
        inputs beyond ``points`` and ``point_mask`` (BL: ``st_size`` ``[B]``, ``targets``
        ``[B, M]``).
      needs_crop_size: ``function`` takes ``crop_size=`` (the side of the training crop).
      reduce: the batch loss from the per-image terms ``[B]`` and the keyword options the
        loss was called with; ``function`` returns exactly this value.
      upsample: ``VGG19Density.upsample`` of the official code's network.
      output: ``VGG19Density.output`` of the official code's network.
      source: where the official code defines that network.
    """

    name: str
    function: Callable[..., tuple[jax.Array, dict[str, jax.Array]]]
    batch_arguments: Mapping[str, str]
    needs_crop_size: bool
    reduce: BatchReduction
    upsample: str
    output: str
    source: str

    @property
    def batch_keys(self) -> tuple[str, ...]:
        """Every batch entry the loss reads."""
        return ("points", "point_mask", *self.batch_arguments.values())

    @property
    def head(self) -> dict[str, str]:
        """``{"upsample": ..., "output": ...}``, keyword arguments of ``VGG19Density``."""
        return {"upsample": self.upsample, "output": self.output}

    def __call__(
        self,
        density: jax.Array,
        batch: Mapping[str, jax.Array],
        options: Mapping[str, Any],
        *,
        stride: int,
        crop_size: int | None = None,
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """The loss of ``density`` ``[B, h, w]`` against ``batch`` with keyword ``options``.

        Args:
          density: ``[B, h, w]`` density maps at ``stride``.
          batch: holds :attr:`batch_keys` (``points`` ``[B, M, 2]`` (x, y) crop pixels,
            ``point_mask`` ``[B, M]``, and the loss's own entries).
          options: the loss's keyword hyper-parameters (its config block).
          stride: density cell size in input pixels.
          crop_size: the training crop side in pixels, for a loss that needs it.

        Returns:
          ``(loss, terms)`` of :attr:`function`.

        Raises:
          ValueError: the loss needs ``crop_size`` and none was given.
        """
        extra = {argument: batch[key] for argument, key in self.batch_arguments.items()}
        if self.needs_crop_size:
            if crop_size is None:
                raise ValueError(f"loss {self.name!r} needs crop_size")
            extra["crop_size"] = crop_size
        return self.function(
            density, batch["points"], batch["point_mask"], stride=stride, **extra, **options
        )


LOSSES: Mapping[str, RegisteredLoss] = {
    loss.name: loss
    for loss in (
        RegisteredLoss(
            name="gl",
            function=_generalized.generalized_loss,
            batch_arguments={},
            needs_crop_size=True,
            reduce=_generalized.batch_loss,
            # F.interpolate(scale_factor=2), i.e. nearest, and final="abs".
            upsample="nearest",
            output="abs",
            source="jia-wan/GeneralizedLoss-Counting-Pytorch models/vgg.py",
        ),
        RegisteredLoss(
            name="bl",
            function=_bayesian.bayesian_loss,
            # BL's loaders pass the fraction of each head box inside the crop as its target.
            batch_arguments={"st_size": "st_size", "targets": "targets"},
            needs_crop_size=False,
            reduce=_bayesian.batch_loss,
            # F.upsample_bilinear (align_corners=True) and torch.abs, 2019 and 2021 alike.
            upsample="bilinear",
            output="abs",
            source="ZhihengCV/Bayesian-Crowd-Counting models/vgg.py",
        ),
        RegisteredLoss(
            name="dm_count",
            function=_dm_count.dm_count_loss,
            batch_arguments={},
            needs_crop_size=False,
            reduce=_dm_count.batch_loss,
            # F.upsample_bilinear and density_layer = Conv 1×1 + ReLU.
            upsample="bilinear",
            output="relu",
            source="cvlab-stonybrook/DM-Count models.py",
        ),
        RegisteredLoss(
            name="l2",
            function=_pixel.l2_loss,
            batch_arguments={},
            needs_crop_size=False,
            reduce=_pixel.batch_loss,
            # The GL code base has one network, vgg19(down=8, final="abs"), and the GL paper
            # compares its losses, L2 among them, on that backbone.
            upsample="nearest",
            output="abs",
            source="jia-wan/GeneralizedLoss-Counting-Pytorch models/vgg.py",
        ),
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
