"""The head of :class:`gcc_jax.models.VGG19Density` that each loss's official code trains.

GL, BL and DM-Count each publish their own VGG19 density network, and they differ only in the
head: how the stride-16 features are brought to stride 8 and how the density is made
non-negative. A model that should match its loss's reference takes that loss's head; the
keys are the loss names of :data:`gcc_jax.losses.LOSS_NAMES` (a test keeps the two in step;
models import nothing of the losses).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

__all__ = ["OFFICIAL_HEADS", "OfficialHead", "official_head"]


class OfficialHead(NamedTuple):
    """One official network head.

    Attributes:
      upsample: ``VGG19Density.upsample`` (``"nearest"`` or ``"bilinear"``).
      output: ``VGG19Density.output`` (``"abs"`` or ``"relu"``).
      source: where the official code defines that network.
    """

    upsample: str
    output: str
    source: str


OFFICIAL_HEADS: Mapping[str, OfficialHead] = {
    # F.interpolate(scale_factor=2), i.e. nearest, and final="abs".
    "gl": OfficialHead("nearest", "abs", "jia-wan/GeneralizedLoss-Counting-Pytorch models/vgg.py"),
    # F.upsample_bilinear (align_corners=True) and torch.abs, 2019 and 2021 alike.
    "bl": OfficialHead("bilinear", "abs", "ZhihengCV/Bayesian-Crowd-Counting models/vgg.py"),
    # F.upsample_bilinear and density_layer = Conv 1×1 + ReLU.
    "dm_count": OfficialHead("bilinear", "relu", "cvlab-stonybrook/DM-Count models.py"),
    # The GL code base has one network, vgg19(down=8, final="abs"), and the GL paper compares
    # its losses, L2 among them, on that backbone.
    "l2": OfficialHead("nearest", "abs", "jia-wan/GeneralizedLoss-Counting-Pytorch models/vgg.py"),
}


def official_head(loss_name: str) -> dict[str, str]:
    """``{"upsample": ..., "output": ...}`` of ``loss_name``'s official network, keyword
    arguments of :class:`gcc_jax.models.VGG19Density` (a new dict each call).

    Raises:
      ValueError: a loss name without an official head (the message lists the known ones).
    """
    if loss_name not in OFFICIAL_HEADS:
        raise ValueError(f"unknown loss {loss_name!r}; the losses are {', '.join(OFFICIAL_HEADS)}")
    head = OFFICIAL_HEADS[loss_name]
    return {"upsample": head.upsample, "output": head.output}
