"""The official DM-Count loss computation in PyTorch, for side-by-side benchmarks and checks.

Written from cvlab-stonybrook/DM-Count and computing the same thing the same way:

* ``losses/ot_loss.py`` — a Python loop over the images: squared distances from the heads to
  the cell centres ``(i + 1/2)·s`` expanded per axis as ``−2·x·c + x² + c²`` (float32),
  ``losses/bregman_pytorch.py``'s Sinkhorn–Knopp on the dense ``[m, h·w]`` kernel (below), the
  cell potential ``β = reg·log(v + 1e-16)``, the hand-made gradient
  ``g = S/(S² + 1e-8)·β − ⟨A, β⟩/(S² + 1e-8)`` (``S = Σ A``, detached) and the surrogate
  ``Σ A·g``; it also logs ``Σ C ⊙ P`` and ``⟨Â, β⟩``;
* ``train_helper.py`` — the count term ``mean_b |Σ A_b − m_b|`` (``nn.L1Loss``), the TV term
  ``mean_b m_b·Σ |Â_b − T_b/(m_b + 1e-6)|`` and ``loss = wot·ot + count + wtv·tv``;
* ``models.py`` — ``Â = A / (Σ A + 1e-6)``, computed here from ``A`` (our network returns ``A``
  only).

Sinkhorn–Knopp (``sinkhorn_knopp`` of ``bregman_pytorch.py``): ``K = exp(−C/reg)``,
``u = 1/m``, ``v = 1/n``; while ``err > 1e-9`` and at most ``num_iters`` iterations:
``v = b / (Kᵀu + 1e-16)``, ``u = a / (K v + 1e-16)``; on any NaN/inf in ``u`` or ``v`` keep the
previous pair and stop; every 10th iteration ``err = ‖b − v ⊙ Kᵀu‖²`` (a host sync, as there).

The ground-truth dot map ``T`` comes from the data loader in the reference
(``datasets/crowd.py``'s ``gen_discrete_map``); :func:`discrete_map` reproduces it in numpy.
Needs torch (``pip install "gcc_jax[bench]"``). ``tests/benchmarks/test_official_bl_dm_count.py``
checks it against ``tests/data/bl_dmcount_reference.npz`` (produced by the official code).
"""

from __future__ import annotations

import numpy as np

__all__ = ["discrete_map", "official_dm_count_loss", "official_dm_count_value_and_grad"]

_EPS = 1e-16  # bregman_pytorch's M_EPS


def discrete_map(points: np.ndarray, *, height: int, width: int, stride: int = 8) -> np.ndarray:
    """Heads per density cell, ``[h, w]`` float32, as the reference's data loader makes it.

    Points ``(x, y)`` are rounded half to even (``np.round``), capped at the last pixel row /
    column, counted per pixel and summed into ``stride × stride`` cells.
    """
    pixels = np.zeros((height * stride, width * stride), np.float32)
    if len(points):
        rounded = np.round(np.asarray(points)).astype(int)
        rows = np.minimum(rounded[:, 1], height * stride - 1)
        cols = np.minimum(rounded[:, 0], width * stride - 1)
        np.add.at(pixels, (rows, cols), 1.0)
    return pixels.reshape(height, stride, width, stride).sum(axis=(1, 3))


def _sinkhorn_knopp(a, b, cost, *, reg, num_iters):
    """``(u, v, K)`` of bregman_pytorch's ``sinkhorn_knopp`` (``a`` ``[m]``, ``b`` ``[n]``, ``cost`` ``[m, n]``)."""
    import torch

    u = torch.ones(len(a), dtype=a.dtype) / len(a)
    v = torch.ones(len(b), dtype=b.dtype) / len(b)
    kernel = torch.exp(cost / -reg)
    iteration, error = 1, 1.0
    while error > 1e-9 and iteration <= num_iters:
        previous_u, previous_v = u, v
        v = b / (torch.matmul(u, kernel) + _EPS)
        u = a / (torch.matmul(kernel, v) + _EPS)
        if torch.any(torch.isnan(u)) or torch.any(torch.isnan(v)) or torch.any(torch.isinf(u)) or torch.any(torch.isinf(v)):
            u, v = previous_u, previous_v
            break
        if iteration % 10 == 0:
            error = (b - torch.matmul(u, kernel) * v).pow(2).sum().item()
        iteration += 1
    return u, v, kernel


def official_dm_count_loss(
    outputs,
    points,
    discrete,
    *,
    stride: int = 8,
    wot: float = 0.1,
    wtv: float = 0.01,
    reg: float = 10.0,
    num_iters: int = 100,
):
    """DM-Count batch loss (differentiable in ``outputs``) and its logged terms, the official way.

    Args:
      outputs: torch ``[B, h, w]`` float32 un-normalised density maps (the model output).
      points: ``B`` torch tensors ``[m_b, 2]`` of ``(x, y)`` crop pixels (no padding).
      discrete: torch ``[B, h, w]`` ground-truth dot maps (:func:`discrete_map`).
      stride, wot, wtv, reg, num_iters: as :func:`gcc_jax.losses.dm_count_loss`.

    Returns:
      ``(loss, terms)``: the torch scalar ``wot·ot + count + wtv·tv`` and floats ``ot``,
      ``wd``, ``ot_obj`` (summed over the batch), ``count``, ``tv`` (batch means), all unweighted.
    """
    import torch

    batch, height, width = outputs.shape
    normed = outputs / (outputs.reshape(batch, -1).sum(1).reshape(batch, 1, 1) + 1e-6)
    columns = (torch.arange(0, width * stride, step=stride, dtype=torch.float32) + stride / 2).unsqueeze(0)
    rows = (torch.arange(0, height * stride, step=stride, dtype=torch.float32) + stride / 2).unsqueeze(0)
    ot_loss = torch.zeros([1])
    ot_objective = torch.zeros([1])
    wasserstein = 0.0
    for index, image_points in enumerate(points):
        if len(image_points) == 0:
            continue
        x = image_points[:, 0].unsqueeze(1)
        y = image_points[:, 1].unsqueeze(1)
        x_dist = -2 * torch.matmul(x, columns) + x * x + columns * columns
        y_dist = -2 * torch.matmul(y, rows) + y * y + rows * rows
        cost = (y_dist.unsqueeze(2) + x_dist.unsqueeze(1)).reshape(len(image_points), -1)
        source = normed[index].reshape(-1).detach()
        target = torch.ones([len(image_points)]) / len(image_points)
        u, v, kernel = _sinkhorn_knopp(target, source, cost, reg=reg, num_iters=num_iters)
        beta = reg * torch.log(v + _EPS)
        ot_objective = ot_objective + torch.sum(normed[index] * beta.reshape(height, width))
        density = outputs[index].reshape(-1).detach()
        mass = density.sum()
        gradient = mass / (mass * mass + 1e-8) * beta - (density * beta).sum() / (mass * mass + 1e-8)
        ot_loss = ot_loss + torch.sum(outputs[index] * gradient.detach().reshape(height, width))
        plan = u.reshape(-1, 1) * kernel * v.reshape(1, -1)
        wasserstein += torch.sum(cost * plan).item()
    counts = torch.tensor([float(len(p)) for p in points])
    count_loss = torch.nn.functional.l1_loss(outputs.sum(2).sum(1), counts)
    tv_loss = (torch.abs(normed - discrete / (counts.reshape(batch, 1, 1) + 1e-6)).sum(2).sum(1) * counts).mean(0)
    loss = wot * ot_loss + count_loss + wtv * tv_loss
    terms = {
        "ot": float(ot_loss.detach()),
        "wd": wasserstein,
        "ot_obj": float(ot_objective.detach()),
        "count": float(count_loss.detach()),
        "tv": float(tv_loss.detach()),
    }
    return loss.reshape(()), terms


def official_dm_count_value_and_grad(
    density: np.ndarray,
    points: list[np.ndarray],
    *,
    discrete: np.ndarray | None = None,
    stride: int = 8,
    **options,
):
    """DM-Count batch loss, its gradient with respect to ``density`` and its terms, the official way.

    Args:
      density: ``[B, h, w]`` float32 un-normalised density maps.
      points: ``B`` arrays ``[m_b, 2]`` of ``(x, y)`` crop pixels (no padding).
      discrete: ``[B, h, w]`` dot maps; ``None`` = :func:`discrete_map` of ``points`` (the
        reference's data loader makes them, outside the loss).
      stride: cell size in pixels.
      **options: ``wot``, ``wtv``, ``reg``, ``num_iters`` of :func:`official_dm_count_loss`.

    Returns:
      ``(loss, grad, terms)``: float, ``[B, h, w]`` float32 numpy array, dict of floats.
    """
    import torch

    density = np.asarray(density, np.float32)
    batch, height, width = density.shape
    if discrete is None:
        discrete = np.stack([discrete_map(p, height=height, width=width, stride=stride) for p in points])
    outputs = torch.tensor(density, requires_grad=True)
    point_tensors = [torch.tensor(np.asarray(p, np.float32).reshape(-1, 2)) for p in points]
    loss, terms = official_dm_count_loss(
        outputs, point_tensors, torch.tensor(np.asarray(discrete, np.float32)), stride=stride, **options
    )
    loss.backward()
    return float(loss.detach()), outputs.grad.cpu().numpy(), terms
