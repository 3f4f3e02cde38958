"""The official GL computation in PyTorch + geomloss, for side-by-side benchmarks and checks.

This mirrors what jia-wan/GeneralizedLoss-Counting-Pytorch does in one training step
(``utils/emd_dot_trainer.py``): a Python loop over the images of the batch, geomloss's
tensorized ``SamplesLoss`` (ε-scaling, debias off) for the dual potentials, then the cost
matrix, the plan and the loss terms, summed as the trainer sums them — the OT, point and pixel
terms of each image divided by the batch size, its entropy term **not** — and one
``backward``. It needs the ``bench`` extra (torch and geomloss from PyPI); stock geomloss 0.3
returns the same potentials as the repository's vendored copy (checked against the fixtures in
``tests/data/gl_reference.npz`` by ``tests/benchmarks/test_official_gl.py`` when installed).
"""

from __future__ import annotations

import numpy as np

__all__ = ["official_gl_loss", "official_gl_value_and_grad"]


def _costs(name: str, scale: float):
    import torch

    def distances(x, y):
        return torch.sqrt(torch.sum((x.unsqueeze(-2) - y.unsqueeze(-3)) ** 2, -1))

    def perspective(x, y):
        sigma = (x.unsqueeze(-2)[..., -1] + y.unsqueeze(-3)[..., -1]) / 2 * 0.2 + 0.5
        return torch.exp(distances(x, y) / sigma) - 1

    def exponential(x, y):
        return torch.exp(distances(x, y) / scale) - 1.0

    return {"per": perspective, "exp": exponential}[name]


def official_gl_loss(
    outputs,
    points,
    *,
    crop_size: float,
    stride: int = 8,
    cost: str = "per",
    scale: float = 0.6,
    blur: float = 0.01,
    reach: float = 0.5,
    scaling: float = 0.5,
    p: int = 1,
    tau: float = 0.1,
    d_point: str = "l1",
    d_pixel: str = "l2",
):
    """GL batch loss as a torch scalar (differentiable in ``outputs``), the official trainer's way.

    Args:
      outputs: torch ``[B, h, w]`` float32 density maps (the model output).
      points: ``B`` torch tensors or arrays ``[m_b, 2]`` of ``(x, y)`` crop pixels (no padding).
      crop_size, stride, cost, ...: as :func:`gcc_jax.losses.generalized_loss`.

    Returns:
      ``emd + tau · (pixel + point) + blur · entropy``, where ``emd``, ``point`` and ``pixel``
      sum each image's term divided by ``B`` and ``entropy`` sums the images' terms undivided.
    """
    import torch
    from geomloss import SamplesLoss

    cost_fn = _costs(cost, scale)
    criterion = SamplesLoss(
        blur=blur, scaling=scaling, debias=False, backend="tensorized", cost=cost_fn,
        reach=reach, p=p, potentials=True,
    )  # fmt: skip
    eps, rho = blur**p, reach**p
    batch, h, w = outputs.shape
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij"
    )
    # The reference's grid: (j·s + s/2) + s/2 = (j + 1)·s, divided by the crop size.
    cells = (torch.stack([xs.reshape(-1), ys.reshape(-1)], -1) * stride + stride).unsqueeze(0) / crop_size
    emd = point = pixel = entropy = 0.0
    for i, pts in enumerate(points):
        a = outputs[i].reshape(1, -1, 1)
        if len(pts) == 0:
            mass = torch.abs(outputs[i].sum()) / batch
            emd, point, pixel = emd + mass, point + mass, pixel + mass
            continue
        gt = torch.ones((1, len(pts), 1))
        y = torch.as_tensor(pts, dtype=torch.float32).reshape(1, -1, 2) / crop_size
        f, g = criterion(a.reshape(1, -1), cells, gt.reshape(1, -1), y)
        f, g = f.detach().reshape(1, -1, 1), g.detach().reshape(1, -1, 1)
        emd = emd + (rho + eps / 2) * (
            torch.sum(a * (1 - torch.exp(-f / rho))) + torch.sum(gt * (1 - torch.exp(-g / rho)))
        ) / batch
        c = cost_fn(cells, y)
        plan = torch.exp((f + g.permute(0, 2, 1) - c) / eps) * a * gt.permute(0, 2, 1)
        entropy = entropy + torch.mean((1e-20 + plan) * torch.log(1e-20 + plan))
        point_residual = plan.sum(1).reshape(1, -1, 1) - gt
        pixel_residual = plan.sum(2).reshape(1, -1, 1).detach() - a
        point = point + torch.sum(point_residual.abs() if d_point == "l1" else point_residual**2) / batch
        pixel = pixel + torch.sum(pixel_residual.abs() if d_pixel == "l1" else pixel_residual**2) / batch
    return emd + tau * (pixel + point) + blur * entropy


def official_gl_value_and_grad(density: np.ndarray, points: list[np.ndarray], **options):
    """GL batch loss and its gradient, computed the official way (per-image loop).

    Args:
      density: ``[B, h, w]`` float32 density maps.
      points: ``B`` arrays ``[m_b, 2]`` of ``(x, y)`` crop pixels (no padding).
      **options: keyword arguments of :func:`official_gl_loss` (``crop_size`` required).

    Returns:
      ``(loss, grad)``: float and ``[B, h, w]`` numpy array.
    """
    import torch

    outputs = torch.tensor(density, requires_grad=True)
    loss = official_gl_loss(outputs, points, **options)
    loss.backward()
    return float(loss.detach()), outputs.grad.cpu().numpy()
