"""Pixel-wise L2 baseline: Gaussian-smoothed ground-truth density and the squared error to it.

The classic recipe (MCNN, CSRNet and most density-map regressors) smooths a dot map with a
Gaussian at full resolution, with a fixed ``σ`` (15 px is the ShanghaiTech B habit) or the
geometry-adaptive ``σ_j = 0.1 · (d₁ + d₂ + d₃)`` from each head's three nearest neighbours, and
regresses the density map onto it with a summed squared error.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping

import jax
import jax.numpy as jnp

from gcc_jax.losses import _geometry
# L2's batch loss: the mean of its per-image losses, as its official trainer computes it.
from gcc_jax.losses._reduction import mean_of_totals as batch_loss

__all__ = ["L2HyperParameters", "batch_loss", "gaussian_density", "l2_loss"]

# Geometry-adaptive kernels: σ_j = 0.3 · mean distance to the 3 nearest neighbours.
_NEIGHBOURS = 3
_ADAPTIVE_FACTOR = 0.3
# Floor of σ in pixels. Duplicate heads give d = 0 and σ = 0; below this floor the Gaussian
# already puts all of its mass on one pixel, so the floor changes nothing else.
_MIN_SIGMA = 1e-3


def _adaptive_sigmas(points, point_mask, *, image_height, image_width):
    """Geometry-adaptive ``σ_j`` ``[M]`` (pixels) of one image's heads.

    ``0.3 ×`` the mean distance to the 3 nearest other heads (``= 0.1 (d₁ + d₂ + d₃)``); with
    ``m ≤ 3`` heads the mean runs over the ``m − 1`` there are; a lone head gets
    ``mean(image height, image width) / 4``, as the CSRNet recipe gives it.
    """
    num = points.shape[0]
    diff = points[:, None, :] - points[None, :, :]
    # sqrt of 0 has an infinite derivative; keep 0 out of the sqrt for the self/duplicate pairs.
    squared = jnp.sum(diff * diff, axis=-1)
    distance = jnp.where(squared > 0, jnp.sqrt(jnp.where(squared > 0, squared, 1.0)), 0.0)
    valid = point_mask[:, None] & point_mask[None, :] & ~jnp.eye(num, dtype=bool)
    k = min(_NEIGHBOURS, max(num - 1, 1))
    negated, _ = jax.lax.top_k(jnp.where(valid, -distance, -jnp.inf), k)  # k nearest, [M, k]
    found = jnp.isfinite(negated)
    count = jnp.sum(found, axis=1)
    mean = jnp.sum(jnp.where(found, -negated, 0.0), axis=1) / jnp.maximum(count, 1)
    lone = (image_height + image_width) / 2 / 4
    return jnp.where(count > 0, _ADAPTIVE_FACTOR * mean, lone)


def _cell_weights(coordinate, sigma, *, cells, stride):
    """Share of a 1-D Gaussian in each of ``cells`` cells, ``[M, cells]``, each row summing to 1.

    The Gaussian is sampled at the pixel centres ``p + ½`` of the ``cells·stride`` pixels and
    normalised over them (truncated to the image, mass preserved), then summed per cell.
    """
    centres = jnp.arange(cells * stride, dtype=coordinate.dtype) + 0.5
    logits = -((centres[None, :] - coordinate[:, None]) ** 2) / (2.0 * sigma[:, None] ** 2)
    per_pixel = jax.nn.softmax(logits, axis=1)
    return per_pixel.reshape(coordinate.shape[0], cells, stride).sum(axis=2)


def _image_density(points, point_mask, *, height, width, stride, sigma, adaptive):
    """Gaussian ground truth of one image, ``[h, w]``; ``Σ = m``."""
    points = jnp.where(point_mask[:, None], points, 0.0)  # keep garbage padding out of the math
    if adaptive:
        sigmas = _adaptive_sigmas(
            points, point_mask, image_height=height * stride, image_width=width * stride
        )
    else:
        sigmas = jnp.full(points.shape[:1], sigma, points.dtype)
    sigmas = jnp.maximum(sigmas, _MIN_SIGMA)
    rows = _cell_weights(points[:, 1], sigmas, cells=height, stride=stride)  # [M, h]
    columns = _cell_weights(points[:, 0], sigmas, cells=width, stride=stride)  # [M, w]
    weights = point_mask.astype(points.dtype)
    return jnp.einsum("m,mh,mw->hw", weights, rows, columns)


@functools.partial(jax.jit, static_argnames=("height", "width", "stride", "sigma", "adaptive"))
def _batch_densities(points, point_mask, **static):
    if points.shape[1] == 0:
        return jnp.zeros((points.shape[0], static["height"], static["width"]), points.dtype)
    return jax.vmap(functools.partial(_image_density, **static))(points, point_mask)


def _check_hyper(stride, sigma, adaptive) -> int:
    _geometry.check_positive("stride", stride)
    if float(stride) != int(stride):
        raise ValueError(f"stride must be a positive integer (pixels per cell), got {stride!r}")
    _geometry.check_positive("sigma", sigma)
    if not isinstance(adaptive, bool):
        raise ValueError(f"adaptive must be a bool, got {adaptive!r}")
    return int(stride)


def gaussian_density(
    points: jnp.ndarray,
    point_mask: jnp.ndarray,
    *,
    height: int,
    width: int,
    stride: int = 8,
    sigma: float = 15.0,
    adaptive: bool = False,
) -> jnp.ndarray:
    """Gaussian-smoothed ground-truth density, summed into ``stride × stride`` cells.

    The image has ``H × W = (height·stride) × (width·stride)`` pixels, pixel ``(r, c)``
    centred at ``(c + ½, r + ½)``. Head ``j`` at ``(x_j, y_j)`` spreads a unit of mass as the
    isotropic Gaussian ``exp(−‖p − P_j‖² / (2σ_j²))`` sampled at the pixel centres and
    normalised over the image's pixels (so its mass stays 1 even near or beyond the border);
    the pixels are then summed per cell::

      D_ik = Σ_j Σ_{(r, c) ∈ cell (i, k)} G_j(r, c),     Σ_ik D_ik = m

    ``σ_j = sigma`` or, with ``adaptive=True``, ``σ_j = 0.1 (d₁ + d₂ + d₃)`` with ``d_l`` the
    distance to the ``l``-th nearest other head (with fewer than 4 heads, 0.3 × the mean over
    the others; a lone head gets ``(H + W) / 8``); ``σ_j`` is floored at 1e-3 px so duplicate
    heads stay finite.

    Args:
      points: ``[B, M, 2]`` head points ``(x, y)`` = (column, row) in input pixels, padded.
      point_mask: ``[B, M]`` boolean, ``False`` marks padding rows of ``points``.
      height: number of rows ``h`` of the density map (cells, not pixels).
      width: number of columns ``w`` of the density map (cells).
      stride: size of one cell in pixels (a positive integer).
      sigma: standard deviation of the fixed kernel in pixels (ignored when ``adaptive``).
      adaptive: use the geometry-adaptive kernels instead of ``sigma``.

    Returns:
      ``[B, h, w]`` density maps in the dtype of ``points`` (at least float32).

    Raises:
      ValueError: on inconsistent shapes or invalid hyper-parameters.
    """
    stride = _check_hyper(stride, sigma, adaptive)
    for name, value in (("height", height), ("width", width)):
        _geometry.check_positive(name, value)
        if float(value) != int(value):
            raise ValueError(f"{name} must be a positive integer (cells), got {value!r}")
    points_shape, mask_shape = jnp.shape(points), jnp.shape(point_mask)
    if len(points_shape) != 3 or points_shape[-1] != 2:
        raise ValueError(
            f"gaussian_density: points must have shape [B, M, 2], got shape {points_shape}"
        )
    if mask_shape != points_shape[:2]:
        raise ValueError(
            f"gaussian_density: point_mask must have shape [B, M] = {points_shape[:2]}, "
            f"got shape {mask_shape}"
        )
    points = jnp.asarray(points)
    if not jnp.issubdtype(points.dtype, jnp.floating):
        points = points.astype(jnp.float32)
    return _batch_densities(
        points, jnp.asarray(point_mask, bool), height=int(height), width=int(width),
        stride=stride, sigma=float(sigma), adaptive=adaptive,
    )  # fmt: skip


@dataclasses.dataclass(frozen=True, kw_only=True)
class L2HyperParameters:
    """The pixel-wise L2 loss's hyper-parameters, checked once when made (frozen and hashable).

    Attributes:
      stride: size of one density cell in pixels (a positive integer).
      sigma: standard deviation of the fixed kernel in pixels (ignored when ``adaptive``).
      adaptive: geometry-adaptive kernels (see :func:`gaussian_density`).

    Raises:
      ValueError: a hyper-parameter out of its range (the message names it).
    """

    stride: int = 8
    sigma: float = 15.0
    adaptive: bool = False

    def __post_init__(self):
        # A frozen dataclass sets its own fields through object.__setattr__.
        object.__setattr__(self, "stride", _check_hyper(self.stride, self.sigma, self.adaptive))
        object.__setattr__(self, "sigma", float(self.sigma))

    def batch_loss(self, terms: Mapping[str, jnp.ndarray]) -> jnp.ndarray:
        """L2's batch loss, :func:`batch_loss` of the per-image ``terms``."""
        return batch_loss(terms)


def l2_loss(
    density: jnp.ndarray, points: jnp.ndarray, point_mask: jnp.ndarray, **hyper_parameters
) -> tuple[jnp.ndarray, dict[str, jnp.ndarray]]:
    """Pixel-wise L2 loss against the Gaussian ground truth of :func:`gaussian_density`.

    Per image ``L = Σ_k (A_k − D_k)²`` over the ``h·w`` cells, with ``D`` built from the points
    at the density's own size (image ``(h·stride) × (w·stride)`` pixels); the batch loss is
    ``(1/B) Σ_b L_b``.

    Args:
      density: ``[B, h, w]`` finite density maps at ``stride``, computed in float32 (float64
        stays float64); see :mod:`gcc_jax.losses` on other values.
      points: ``[B, M, 2]`` head points ``(x, y)`` = (column, row) in input pixels, padded.
      point_mask: ``[B, M]`` boolean, ``False`` marks padding rows of ``points``.
      **hyper_parameters: the fields of :class:`L2HyperParameters` (``stride``, ``sigma``,
        ``adaptive``).

    Returns:
      ``(loss, terms)``: the scalar batch loss and ``{"total": [B]}``, the per-image ``L_b``.

    Raises:
      ValueError: on inconsistent shapes, a density or points that are not real numbers, a
        point_mask that is not boolean, or invalid hyper-parameters.
      TypeError: a keyword that is not a field of :class:`L2HyperParameters`.
    """
    density, points, point_mask = _geometry.prepare_batch(density, points, point_mask, loss="l2_loss")
    hyper = L2HyperParameters(**hyper_parameters)
    losses = _batch_losses(
        density, points, point_mask,
        stride=hyper.stride, sigma=hyper.sigma, adaptive=hyper.adaptive,
    )  # fmt: skip
    terms = {"total": losses}
    return hyper.batch_loss(terms), terms


@functools.partial(jax.jit, static_argnames=("stride", "sigma", "adaptive"))
def _batch_losses(density, points, point_mask, **static):
    _, h, w = density.shape
    target = _batch_densities(points, point_mask, height=h, width=w, **static)
    residual = density - jax.lax.stop_gradient(target)
    return jnp.sum(residual * residual, axis=(1, 2))
