"""The official Bayesian Loss computation in PyTorch, for side-by-side benchmarks and checks.

Written from ZhihengCV/Bayesian-Crowd-Counting (``losses/post_prob.py`` + ``losses/bay_loss.py``,
2021 version) and computing the same thing the same way:

* ``Post_Prob``: the points of the whole batch are concatenated, the squared distances to the
  cell centres ``(i + 1/2)·s`` are expanded per axis as ``−2·x·c + x² + c²`` (float32, the
  reference's rounding), split back per image, and — in a Python loop over the images — the
  background row is appended and a softmax over the rows gives the posterior ``[m + 1, n]``;
* ``Bay_Loss``: a second Python loop over the images sums ``|target − Σ_k prob·A|`` (the
  background's target is 0; an image without heads contributes ``|0 − Σ A|``), divided by
  the batch size; one ``backward`` gives the gradient.

The background distance is the 2021 form ``(st_size·ratio)² / (min_j D_jk + 1e-5)`` or,
with ``background="2019"``, the 2019 form ``(st_size·ratio − sqrt(min_j D_jk))²``.
Needs torch (``pip install "gcc_jax[bench]"``). ``tests/benchmarks/test_official_bl_dm_count.py``
checks it against ``tests/data/bl_dmcount_reference.npz`` (produced by the official code).
"""

from __future__ import annotations

import numpy as np

__all__ = ["official_bl_loss", "official_bl_value_and_grad"]


def _posteriors(points, st_sizes, *, height, width, stride, sigma, use_background, background_ratio, background):
    """Post_Prob: one posterior ``[m_b (+1), h·w]`` per image, ``None`` for an image without heads."""
    import torch

    counts = [len(p) for p in points]
    everything = torch.cat(list(points), dim=0)
    if len(everything) == 0:
        return [None] * len(points)
    columns = (torch.arange(0, width * stride, step=stride, dtype=torch.float32) + stride / 2).unsqueeze(0)
    rows = (torch.arange(0, height * stride, step=stride, dtype=torch.float32) + stride / 2).unsqueeze(0)
    x = everything[:, 0].unsqueeze(1)
    y = everything[:, 1].unsqueeze(1)
    # The reference's expansion, same order of operations (its float32 rounding matters).
    x_dist = -2 * torch.matmul(x, columns) + x * x + columns * columns  # [N, w]
    y_dist = -2 * torch.matmul(y, rows) + y * y + rows * rows  # [N, h]
    dist = (y_dist.unsqueeze(2) + x_dist.unsqueeze(1)).reshape(len(everything), -1)
    posteriors = []
    for image_dist, st_size in zip(torch.split(dist, counts), st_sizes):
        if len(image_dist) == 0:
            posteriors.append(None)
            continue
        if use_background:
            nearest = torch.clamp(torch.min(image_dist, dim=0, keepdim=True)[0], min=0.0)
            d = st_size * background_ratio
            if background == "2021":
                bg_dist = d * d / (nearest + 1e-5)
            else:
                bg_dist = (d - torch.sqrt(nearest)) ** 2
            image_dist = torch.cat([image_dist, bg_dist], 0)
        posteriors.append(torch.softmax(-image_dist / (2.0 * sigma**2), dim=0))
    return posteriors


def official_bl_loss(
    outputs,
    points,
    st_sizes,
    *,
    targets=None,
    stride: int = 8,
    sigma: float = 8.0,
    use_background: bool = True,
    background_ratio: float = 1.0,
    background: str = "2021",
):
    """BL batch loss as a torch scalar (differentiable in ``outputs``), the official way.

    Args:
      outputs: torch ``[B, h, w]`` float32 density maps (the model output).
      points: ``B`` torch tensors ``[m_b, 2]`` of ``(x, y)`` crop pixels (no padding).
      st_sizes: ``B`` floats (or a torch ``[B]``), ``min(H, W)`` of each source image.
      targets: ``None`` (1 per head) or ``B`` torch tensors ``[m_b]`` of head targets.
      stride, sigma, use_background, background_ratio, background: as
        :func:`gcc_jax.losses.bayesian_loss`.

    Returns:
      The scalar loss ``(1/B) Σ_b L_b``.
    """
    import torch

    if background not in ("2021", "2019"):
        raise ValueError(f"background must be '2021' or '2019', got {background!r}")
    batch, height, width = outputs.shape
    posteriors = _posteriors(
        points, st_sizes, height=height, width=width, stride=stride, sigma=sigma,
        use_background=use_background, background_ratio=background_ratio, background=background,
    )  # fmt: skip
    loss = 0
    for index, prob in enumerate(posteriors):
        if prob is None:
            predicted = torch.sum(outputs[index])
            target = torch.zeros((1,), dtype=torch.float32)
        else:
            heads = torch.ones(len(points[index])) if targets is None else targets[index].to(torch.float32)
            target = torch.cat([heads, torch.zeros(1)]) if use_background else heads
            predicted = torch.sum(outputs[index].reshape(1, -1) * prob, dim=1)
        loss = loss + torch.sum(torch.abs(target - predicted))
    return loss / batch


def official_bl_value_and_grad(
    density: np.ndarray,
    points: list[np.ndarray],
    *,
    st_sizes,
    targets: list[np.ndarray] | None = None,
    **options,
):
    """BL batch loss and its gradient with respect to ``density``, computed the official way.

    Args:
      density: ``[B, h, w]`` float32 density maps.
      points: ``B`` arrays ``[m_b, 2]`` of ``(x, y)`` crop pixels (no padding).
      st_sizes: ``[B]`` source-image sizes (``min(H, W)``, pixels).
      targets: ``None`` or ``B`` arrays ``[m_b]`` of head targets.
      **options: keyword arguments of :func:`official_bl_loss`.

    Returns:
      ``(loss, grad)``: float and ``[B, h, w]`` float32 numpy array.
    """
    import torch

    outputs = torch.tensor(np.asarray(density, np.float32), requires_grad=True)
    point_tensors = [torch.tensor(np.asarray(p, np.float32).reshape(-1, 2)) for p in points]
    target_tensors = None if targets is None else [torch.tensor(np.asarray(t, np.float32)) for t in targets]
    loss = official_bl_loss(
        outputs, point_tensors, torch.tensor(np.asarray(st_sizes, np.float32)), targets=target_tensors, **options
    )
    loss.backward()
    return float(loss.detach()), outputs.grad.cpu().numpy()
