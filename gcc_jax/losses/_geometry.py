"""Shared geometry of the crowd-counting losses: cell positions, input checks, distances.

Every loss compares a density map ``[h, w]`` at a stride ``s`` with head points given as
``(x, y)`` = (column, row) in input-image (crop) pixels. The position of density cell
``(i, j)`` (row ``i``, column ``j``) is one of:

* ``"centre"``: the true cell centre ``((j + 1/2) s, (i + 1/2) s)`` (BL, DM-Count, L2);
* ``"reference"``: ``((j + 1) s, (i + 1) s)``, the position GL's official code uses (it adds
  half a cell twice). GL reproduces it by default so that published numbers can be reproduced.

Cells are always enumerated row-major, so cell ``k = i * w + j``.
"""

from __future__ import annotations

from typing import Sequence

import jax.numpy as jnp
import numpy as np

__all__ = [
    "CELL_OFFSETS",
    "abs_zero_subgradient",
    "cell_positions",
    "check_choice",
    "check_positive",
    "expanded_axis_squared_distances",
    "expanded_squared_distances",
    "pairwise_squared_distances",
    "prepare_batch",
]

# Offset of a cell's position inside the cell, in units of the stride.
CELL_OFFSETS = {"centre": 0.5, "reference": 1.0}


def cell_positions(height: int, width: int, *, stride: float, offset: str = "centre") -> jnp.ndarray:
    """Pixel positions of the cells of a density map, row-major.

    Args:
      height: number of rows ``h`` of the density map.
      width: number of columns ``w`` of the density map.
      stride: size of one cell in input pixels (``s``).
      offset: ``"centre"`` for ``((j + 1/2) s, (i + 1/2) s)`` or ``"reference"`` for GL's
        ``((j + 1) s, (i + 1) s)``.

    Returns:
      ``[h * w, 2]`` float32 array of ``(x, y)`` positions in input pixels; row ``k`` is cell
      ``(k // w, k % w)``.
    """
    check_choice("offset", offset, CELL_OFFSETS)
    shift = CELL_OFFSETS[offset]
    xs = (np.arange(width, dtype=np.float32) + shift) * np.float32(stride)
    ys = (np.arange(height, dtype=np.float32) + shift) * np.float32(stride)
    grid_y, grid_x = np.meshgrid(ys, xs, indexing="ij")
    return jnp.asarray(np.stack([grid_x.ravel(), grid_y.ravel()], axis=-1))


def pairwise_squared_distances(a: jnp.ndarray, b: jnp.ndarray) -> jnp.ndarray:
    """Squared Euclidean distances ``‖a_i − b_j‖²`` computed from coordinate differences.

    Differences (rather than the ``‖a‖² + ‖b‖² − 2⟨a, b⟩`` expansion) keep full float32
    precision for the pixel-scale coordinates used here.

    Args:
      a: ``[n, 2]`` positions.
      b: ``[m, 2]`` positions, same units as ``a``.

    Returns:
      ``[n, m]`` squared distances.
    """
    diff = a[:, None, :] - b[None, :, :]
    return jnp.sum(diff * diff, axis=-1)


def expanded_axis_squared_distances(
    coordinates: jnp.ndarray, *, cells: int, stride: float
) -> jnp.ndarray:
    """Squared distances along one axis to the cell centres, rounded as BL and DM-Count round them.

    The official BL and DM-Count code expand each axis as ``−2·(x·c) + x² + c²`` in float32, with
    cell centres ``c = (i + 1/2) s``. At crop-pixel scale (``x² ≈ 2.6e5`` for a 512 crop) that
    rounds to about ±0.03 px², which moves their posteriors and Sinkhorn kernels by ~1e-4
    relative; computing the same expression in the same order reproduces their gradients to
    float32 round-off, where exact differences would not.

    Args:
      coordinates: ``[m]`` coordinates along one axis (``x`` or ``y``) in input pixels.
      cells: number of cells along that axis.
      stride: size of one cell in input pixels (``s``).

    Returns:
      ``[m, cells]`` squared distances in pixels², in the dtype of ``coordinates``.
    """
    centres = (jnp.arange(cells, dtype=coordinates.dtype) * stride + stride / 2)[None, :]
    x = coordinates[:, None]
    return -2 * (x * centres) + x * x + centres * centres


def expanded_squared_distances(
    points: jnp.ndarray, height: int, width: int, *, stride: float
) -> jnp.ndarray:
    """Squared distances from points to cell centres, as BL and DM-Count compute them.

    The sum of the two axes of :func:`expanded_axis_squared_distances` (``y`` first, as the
    references add them).

    Args:
      points: ``[m, 2]`` head points ``(x, y)`` in input pixels.
      height: number of rows ``h`` of the density map.
      width: number of columns ``w`` of the density map.
      stride: size of one cell in input pixels (``s``).

    Returns:
      ``[m, h * w]`` squared distances in pixels², row-major over cells (cell ``k = i * w + j``),
      in the dtype of ``points``.
    """
    x_dist = expanded_axis_squared_distances(points[:, 0], cells=width, stride=stride)
    y_dist = expanded_axis_squared_distances(points[:, 1], cells=height, stride=stride)
    return (y_dist[:, :, None] + x_dist[:, None, :]).reshape(points.shape[0], height * width)


def abs_zero_subgradient(x: jnp.ndarray) -> jnp.ndarray:
    """``|x|`` whose derivative at ``x = 0`` is ``0``, as in PyTorch (``jnp.abs`` gives ``1``).

    The references' L1 terms meet exact zeros in practice (ReLU density cells against empty
    ground-truth cells, zero density against a zero target); PyTorch's subgradient there is 0.
    """
    return x * jnp.sign(x)


def check_positive(name: str, value, *, allow_zero: bool = False) -> None:
    """Raises ``ValueError`` unless the static hyper-parameter ``value`` is positive."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not np.isfinite(number) or number < 0 or (number == 0 and not allow_zero):
        expected = "non-negative" if allow_zero else "positive"
        raise ValueError(f"{name} must be a finite {expected} number, got {value!r}")


def check_choice(name: str, value, choices: Sequence[str] | dict) -> None:
    """Raises ``ValueError`` unless ``value`` is one of ``choices``."""
    if value not in choices:
        options = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{name} must be one of {options}; got {value!r}")


def _compute_dtype(dtype):
    """float32, or float64 where float64 comes in: narrower floats lose too much in the solvers."""
    return jnp.float64 if dtype == jnp.float64 else jnp.float32


def prepare_batch(density, points, point_mask, *, loss: str):
    """Checks a batch's shapes and dtypes and returns it in the dtypes the losses compute in.

    The losses compute in float32 whatever floating-point or integer density comes in
    (``float16`` and ``bfloat16`` density maps are cast up; ``float64`` is kept, for float64
    gradient checks). Values are not checked here: see the value contract in :mod:`gcc_jax.losses`.

    Args:
      density: ``[B, h, w]`` density maps, a floating-point or integer array.
      points: ``[B, M, 2]`` head points, ``(x, y)`` in input pixels, floating-point or integer.
      point_mask: ``[B, M]`` boolean (or 0 / 1 integers), ``False`` marks padding.
      loss: name of the calling loss, used in the error message.

    Returns:
      ``(density, points, point_mask)`` as jax arrays: density and points in float32 (float64
      if the density is float64), the mask boolean.

    Raises:
      ValueError: naming the argument whose shape or dtype is wrong and what was expected.
    """
    density_shape = jnp.shape(density)
    points_shape = jnp.shape(points)
    mask_shape = jnp.shape(point_mask)
    if len(density_shape) != 3:
        raise ValueError(
            f"{loss}: density must have shape [B, h, w], got shape {density_shape}"
        )
    if len(points_shape) != 3 or points_shape[-1] != 2:
        raise ValueError(
            f"{loss}: points must have shape [B, M, 2] ((x, y) in pixels), got shape {points_shape}"
        )
    if mask_shape != points_shape[:2]:
        raise ValueError(
            f"{loss}: point_mask must have shape [B, M] = {points_shape[:2]} to match points, "
            f"got shape {mask_shape}"
        )
    if points_shape[0] != density_shape[0]:
        raise ValueError(
            f"{loss}: density and points disagree on the batch size: density has "
            f"B={density_shape[0]}, points has B={points_shape[0]}"
        )
    if density_shape[1] < 1 or density_shape[2] < 1:
        raise ValueError(f"{loss}: density must have at least one cell, got shape {density_shape}")
    density, points, point_mask = jnp.asarray(density), jnp.asarray(points), jnp.asarray(point_mask)
    density_dtype, points_dtype, mask_dtype = density.dtype, points.dtype, point_mask.dtype
    for name, dtype in (("density", density_dtype), ("points", points_dtype)):
        if not (jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer)):
            raise ValueError(f"{loss}: {name} must hold real numbers, got dtype {dtype}")
    if not (mask_dtype == jnp.bool_ or jnp.issubdtype(mask_dtype, jnp.integer)):
        # A float mask is most likely meant as per-point weights, which no loss supports.
        raise ValueError(
            f"{loss}: point_mask must be boolean (True = real point, False = padding), "
            f"got dtype {mask_dtype}"
        )
    dtype = _compute_dtype(density_dtype)
    return density.astype(dtype), points.astype(dtype), point_mask.astype(bool)
