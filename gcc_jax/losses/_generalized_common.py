"""Pieces of GL shared by its dense and chunked implementations: costs, hyper-parameters,
normalised geometry, log-weights, the diameter and the ε-scaling schedule of the official
geomloss loop (written out in ``docs/losses.md``)."""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import jax.numpy as jnp

from gcc_jax.losses import _geometry

__all__ = [
    "GL_COSTS",
    "Hyper",
    "diameter",
    "epsilon_schedule",
    "exp_cost",
    "image_geometry",
    "log_weights",
    "perspective_cost",
]

# log-weight the reference gives to zero-mass cells and points (geomloss ``log_weights``).
LOG_ZERO = -100000.0
# Cap on exponents that only exceed it in degenerate cases (e.g. an all-zero density map makes
# the potentials blow up): keeps values and gradients finite where the reference gives inf/NaN.
MAX_EXPONENT = 60.0
# Floor of the normalised diameter, so that a degenerate one-cell problem stays finite.
_MIN_DIAMETER = 1e-6


def _distances(cells: jnp.ndarray, points: jnp.ndarray) -> jnp.ndarray:
    return jnp.sqrt(_geometry.pairwise_squared_distances(cells, points))


def exp_cost(cells: jnp.ndarray, points: jnp.ndarray, *, scale: float = 0.6) -> jnp.ndarray:
    """GL's exponential cost ``C_kj = exp(‖x_k − y_j‖ / scale) − 1``.

    Args:
      cells: ``[n, 2]`` cell positions ``(x, y)``, normalised by the crop size.
      points: ``[m, 2]`` head points ``(x, y)``, normalised by the crop size.
      scale: length scale of the cost, in normalised units.

    Returns:
      ``[n, m]`` cost matrix.
    """
    # exp(·) − 1 rather than expm1, as the reference computes it (bit-for-bit parity).
    return jnp.exp(_distances(cells, points) / scale) - 1.0


def perspective_cost(cells: jnp.ndarray, points: jnp.ndarray, *, scale: float = 0.6) -> jnp.ndarray:
    """GL's perspective-guided cost ``C_kj = exp(‖x_k − y_j‖ / σ_kj) − 1``.

    ``σ_kj = 0.5 + 0.2 · (x_k[1] + y_j[1]) / 2`` grows with the (normalised) vertical coordinate
    of both ends: heads lower in the image are nearer the camera and larger, so the same pixel
    distance costs less there.

    Args:
      cells: ``[n, 2]`` cell positions ``(x, y)``, normalised by the crop size.
      points: ``[m, 2]`` head points ``(x, y)``, normalised by the crop size.
      scale: unused (the reference's perspective cost has its own fixed scale); accepted so that
        every cost has the same signature.

    Returns:
      ``[n, m]`` cost matrix.
    """
    del scale
    sigma = 0.5 + 0.2 * (cells[:, None, 1] + points[None, :, 1]) / 2.0
    return jnp.exp(_distances(cells, points) / sigma) - 1.0


GL_COSTS = {"exp": exp_cost, "per": perspective_cost}
CostFn = Callable[..., jnp.ndarray]


class Hyper(NamedTuple):
    """Static hyper-parameters of one GL evaluation (hashable, so usable as a jit static arg)."""

    crop_size: float
    stride: float
    cost: CostFn
    scale: float
    blur: float
    reach: float
    scaling: float
    p: float
    tau: float
    d_point: str
    d_pixel: str
    solver: str
    cell_offset: str
    max_iterations: int
    threshold: float
    implementation: str

    @property
    def eps(self) -> float:
        return self.blur**self.p

    @property
    def rho(self) -> float:
        return self.reach**self.p


def image_geometry(height: int, width: int, points, point_mask, hyper: Hyper):
    """Normalised cell positions ``[n, 2]`` and points ``[M, 2]`` (padding rows at the origin)."""
    cells = _geometry.cell_positions(height, width, stride=hyper.stride, offset=hyper.cell_offset)
    points = jnp.where(point_mask[:, None], points / hyper.crop_size, 0.0)
    return cells / hyper.crop_size, points


def log_weights(weights):
    """``log w`` with ``log 0`` replaced by ``−100000``, as geomloss does."""
    return jnp.where(weights > 0, jnp.log(jnp.where(weights > 0, weights, 1.0)), LOG_ZERO)


def diameter(cells, points, point_mask):
    """Norm of the extent of the bounding box of the cells and the real points together."""
    big = jnp.finfo(points.dtype).max
    lo = jnp.minimum(cells.min(axis=0), jnp.where(point_mask[:, None], points, big).min(axis=0))
    hi = jnp.maximum(cells.max(axis=0), jnp.where(point_mask[:, None], points, -big).max(axis=0))
    return jnp.linalg.norm(hi - lo)


def epsilon_schedule(diameter_value, hyper: Hyper):
    """geomloss's ε-scaling schedule for a diameter ``D``.

    ``E = [D^p] + [exp(t) for t in arange(p log D, p log blur, p log scaling)] + [blur^p]``.
    Its length depends on the data, so it is returned as a dynamic step count and a function of
    the step index (the loops that use it are ``lax.while_loop``s).

    Returns:
      ``(num_steps, epsilon)``: int32 scalar ``len(E)`` and ``epsilon(i) = E[i]``.
    """
    p = hyper.p
    log_d = jnp.log(jnp.maximum(diameter_value, _MIN_DIAMETER))
    log_step = p * math.log(hyper.scaling)
    # numpy.arange(start, stop, step) has ceil((stop - start) / step) entries.
    num_arange = jnp.maximum(jnp.ceil((p * math.log(hyper.blur) - p * log_d) / log_step), 0.0)

    def epsilon(i):
        scheduled = jnp.exp(p * log_d + (i - 1).astype(log_d.dtype) * log_step)
        return jnp.where(
            i == 0, jnp.exp(p * log_d), jnp.where(i > num_arange, hyper.eps, scheduled)
        )

    return num_arange.astype(jnp.int32) + 2, epsilon


def dampening(eps, hyper: Hyper):
    """geomloss's ``λ = 1 / (1 + ε/ρ)``, the unbalanced update's shrinkage."""
    return 1.0 / (1.0 + eps / hyper.rho)
