"""A plain PyTorch pixel-wise L2 loss on a Gaussian ground-truth map, for side-by-side benchmarks.

L2 has no single official code base: the classic recipe (MCNN, CSRNet, ...) smooths each
image's dot map with a Gaussian, usually once, offline, and trains with a summed squared
error. This is that recipe in torch, with the ground truth built per image in a Python loop
exactly as :func:`gcc_jax.losses.gaussian_density` defines it (each head's Gaussian sampled at
the pixel centres, normalised over the image, summed into ``stride × stride`` cells), so that
the benchmark compares the same computation: ground truth + ``Σ (A − D)²`` per image, averaged
over the batch. Pipelines that precompute the map pay only the squared error per step.
"""

from __future__ import annotations

import numpy as np

__all__ = ["torch_gaussian_density", "torch_l2_loss", "torch_l2_value_and_grad"]


def torch_gaussian_density(points, *, height: int, width: int, stride: int = 8, sigma: float = 15.0):
    """Gaussian ground truth ``[h, w]`` of one image's torch ``[m, 2]`` ``(x, y)`` heads (fixed ``σ``)."""
    import torch

    if len(points) == 0:
        return torch.zeros((height, width))

    def cell_weights(coordinate, cells):
        centres = torch.arange(cells * stride, dtype=torch.float32) + 0.5
        per_pixel = torch.softmax(-((centres[None, :] - coordinate[:, None]) ** 2) / (2.0 * sigma**2), dim=1)
        return per_pixel.reshape(len(coordinate), cells, stride).sum(2)

    rows = cell_weights(points[:, 1], height)  # [m, h]
    columns = cell_weights(points[:, 0], width)  # [m, w]
    return rows.T @ columns


def torch_l2_loss(outputs, points, *, stride: int = 8, sigma: float = 15.0):
    """``(1/B) Σ_b Σ_k (A_bk − D_bk)²`` with the ground truth built per image (torch scalar)."""
    import torch

    batch, height, width = outputs.shape
    loss = 0
    for index, image_points in enumerate(points):
        with torch.no_grad():
            target = torch_gaussian_density(image_points, height=height, width=width, stride=stride, sigma=sigma)
        loss = loss + torch.sum((outputs[index] - target) ** 2)
    return loss / batch


def torch_l2_value_and_grad(density: np.ndarray, points: list[np.ndarray], **options):
    """L2 batch loss and its gradient with respect to ``density`` (``[B, h, w]``); see :func:`torch_l2_loss`."""
    import torch

    outputs = torch.tensor(np.asarray(density, np.float32), requires_grad=True)
    loss = torch_l2_loss(outputs, [torch.tensor(np.asarray(p, np.float32).reshape(-1, 2)) for p in points], **options)
    loss.backward()
    return float(loss.detach()), outputs.grad.cpu().numpy()
