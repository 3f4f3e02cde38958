"""One optimizer step of each official trainer, in PyTorch, for parity checks and studies.

Written from the three trainers, step by step as they run it:

* GL — jia-wan/GeneralizedLoss-Counting-Pytorch ``utils/emd_dot_trainer.py`` with the defaults
  of its ``train.py``: ``Adam(lr=1e-5, weight_decay=1e-5)``; at the start of epoch ``e < 10``
  every parameter group whose rate is still ``≥ 0.1·lr`` is set to ``lr·(e + 1)/10``; the loss
  is :func:`benchmarks.official_gl.official_gl_loss` (its per-image geomloss loop, the OT,
  point and pixel terms divided by the batch size, the entropy terms not); the network ends in
  a nearest ×2 upsampling and ``abs``.
* BL — ZhihengCV/Bayesian-Crowd-Counting ``utils/regression_trainer.py`` and ``train.py``:
  ``Adam(lr=1e-5, weight_decay=1e-4)``, constant rate; ``Post_Prob`` + ``Bay_Loss`` with the
  2021 background, sigma 8, background ratio 1, the loader's head targets
  (:func:`benchmarks.official_bl.official_bl_loss`); bilinear upsampling, ``abs``.
* DM-Count — cvlab-stonybrook/DM-Count ``train_helper.py`` and ``train.py``:
  ``Adam(lr=1e-5, weight_decay=1e-4)``, constant rate; ``OT_Loss`` (summed over the batch)
  · wot + the count L1 + the TV term · wtv (:func:`benchmarks.official_dm_count.official_dm_count_loss`,
  which also forms the normalised map as ``models.py`` does); bilinear upsampling, then
  ``density_layer`` = Conv 1×1 + ReLU.

Every trainer runs ``zero_grad(); loss.backward(); optimizer.step()`` on the whole batch.
The network is ``tests/models/torch_vgg_reference.py`` (the official ``models`` written out
in plain ``torch.nn``, any width). Needs torch and, for GL, geomloss (the ``bench`` extra).
"""

from __future__ import annotations

import pathlib
import sys
from collections.abc import Mapping, Sequence

import numpy as np

_ROOT = pathlib.Path(__file__).resolve().parents[1]

__all__ = ["OFFICIAL_SETTINGS", "OfficialTrainer", "official_network"]

# What each official train.py / trainer sets: Adam's rate and weight decay, GL's warm-up.
OFFICIAL_SETTINGS: Mapping[str, Mapping[str, float]] = {
    "gl": {"learning_rate": 1e-5, "weight_decay": 1e-5, "warmup_epochs": 10},
    "bl": {"learning_rate": 1e-5, "weight_decay": 1e-4, "warmup_epochs": 0},
    "dm_count": {"learning_rate": 1e-5, "weight_decay": 1e-4, "warmup_epochs": 0},
}

# (upsample, output, DM-Count's separate density_layer) of each official network.
_NETWORKS = {"gl": ("nearest", "abs", False), "bl": ("bilinear", "abs", False), "dm_count": ("bilinear", "relu", True)}


def official_network(loss: str, params: Mapping):
    """The official network of ``loss`` in torch (``[B, 3, H, W] → [B, H/8, W/8]``), holding
    the weights of a :class:`gcc_jax.models.VGG19Density`.

    Args:
      loss: ``"gl"``, ``"bl"`` or ``"dm_count"``.
      params: ``variables["params"]`` of a ``VGG19Density`` (any width); its kernels
        ``[k, k, in, out]`` become torch's ``[out, in, k, k]``, layer by layer.
        :func:`gcc_jax.models.params_from_torch` of the network's ``state_dict()`` gives them
        back exactly.
    """
    import torch

    sys.path.insert(0, str(_ROOT / "tests" / "models"))
    from torch_vgg_reference import TorchVGGDensity

    from gcc_jax.models import conv_layers

    kernel = np.asarray(params["features"]["conv1_1"]["kernel"])
    specs = conv_layers(kernel.shape[-1] / 64)
    upsample, output, density_layer = _NETWORKS[loss]
    network = TorchVGGDensity(specs[0].out_channels / 64, upsample=upsample, output=output, density_layer=density_layer)
    convs = [m for m in network.modules() if isinstance(m, torch.nn.Conv2d)]  # registration order
    with torch.no_grad():
        for spec, conv in zip(specs, convs, strict=True):
            layer = params[spec.path[0]][spec.path[1]]
            conv.weight.copy_(torch.from_numpy(np.asarray(layer["kernel"]).transpose(3, 2, 0, 1).copy()))
            conv.bias.copy_(torch.from_numpy(np.asarray(layer["bias"]).copy()))
    return network


class OfficialTrainer:
    """The optimizer and the training step of one official trainer, around a torch network.

    Attributes:
      network: the torch module being trained.
      optimizer: its ``torch.optim.Adam``.
    """

    def __init__(
        self,
        loss: str,
        network,
        *,
        crop_size: int,
        learning_rate: float | None = None,
        weight_decay: float | None = None,
        loss_options: Mapping | None = None,
    ):
        """
        Args:
          loss: ``"gl"``, ``"bl"`` or ``"dm_count"``.
          network: the torch network (:func:`official_network`).
          crop_size: training crop side in pixels (GL normalises coordinates by it).
          learning_rate, weight_decay: Adam's; ``None`` = the official ``train.py`` default.
          loss_options: keyword options of the loss beyond the official defaults (e.g. BL's
            ``use_background``).
        """
        import torch

        if loss not in OFFICIAL_SETTINGS:
            raise ValueError(f"loss must be one of {tuple(OFFICIAL_SETTINGS)}, got {loss!r}")
        settings = OFFICIAL_SETTINGS[loss]
        self.loss = loss
        self.network = network
        self.crop_size = crop_size
        self.base_rate = settings["learning_rate"] if learning_rate is None else learning_rate
        self.warmup_epochs = settings["warmup_epochs"]
        decay = settings["weight_decay"] if weight_decay is None else weight_decay
        self.optimizer = torch.optim.Adam(network.parameters(), lr=self.base_rate, weight_decay=decay)
        self.loss_options = dict(loss_options or {})

    def start_epoch(self, epoch: int) -> None:
        """What the trainer does before epoch ``epoch``: GL's warm-up staircase, as
        ``emd_dot_trainer.py`` writes it (the others keep a constant rate)."""
        if epoch < self.warmup_epochs:
            for group in self.optimizer.param_groups:
                if group["lr"] >= 0.1 * self.base_rate:
                    group["lr"] = self.base_rate * (epoch + 1) / self.warmup_epochs

    def batch_loss(self, outputs, points: Sequence, targets: Sequence, st_sizes):
        """The trainer's batch loss of ``outputs`` ``[B, h, w]`` (a torch scalar)."""
        import torch

        if self.loss == "gl":
            from benchmarks.official_gl import official_gl_loss

            return official_gl_loss(outputs, points, crop_size=self.crop_size, **self.loss_options)
        if self.loss == "bl":
            from benchmarks.official_bl import official_bl_loss

            return official_bl_loss(outputs, points, st_sizes, targets=targets, **self.loss_options)
        from benchmarks.official_dm_count import discrete_map, official_dm_count_loss

        _, height, width = outputs.shape
        discrete = np.stack([discrete_map(p.numpy(), height=height, width=width) for p in points])
        loss, _ = official_dm_count_loss(outputs, points, torch.from_numpy(discrete), **self.loss_options)
        return loss

    def step(self, batch: Mapping[str, np.ndarray]) -> float:
        """One optimizer step on a batch laid out as gcc_jax's training batches.

        Args:
          batch: ``image`` ``[B, c, c, 3]`` normalised, ``points`` ``[B, M, 2]`` (x, y) crop
            pixels, ``point_mask`` ``[B, M]``, ``targets`` ``[B, M]``, ``st_size`` ``[B]``;
            the padding is dropped (the official loaders pass one tensor per image).

        Returns:
          The batch loss before the update.
        """
        import torch

        images = torch.from_numpy(np.ascontiguousarray(np.asarray(batch["image"], np.float32).transpose(0, 3, 1, 2)))
        masks = np.asarray(batch["point_mask"], bool)
        points = [torch.from_numpy(np.asarray(p, np.float32)[m]) for p, m in zip(batch["points"], masks)]
        targets = [torch.from_numpy(np.asarray(t, np.float32)[m]) for t, m in zip(batch["targets"], masks)]
        st_sizes = torch.from_numpy(np.asarray(batch["st_size"], np.float32))
        outputs = self.network(images)
        loss = self.batch_loss(outputs, points, targets, st_sizes)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())
