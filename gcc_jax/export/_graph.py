"""The function that is exported: uint8 images in; density, count and peak map out.

Everything a user would otherwise re-implement outside Python happens inside the graph, with
operations that keep every size symbolic (no shape-dependent numpy constants):

1. ImageNet normalisation (:func:`gcc_jax.imagenet.normalize_images`: the same float32
   ``(x − 255·mean) · 1/(255·std)``);
2. the network (:class:`gcc_jax.models.VGG19Density`, padded to a multiple of 16 by its own
   rule): density ``[N, ceil(H/8), ceil(W/8)]``;
3. count = the sum of each map;
4. the peak map of :func:`gcc_jax.localization.density_to_points`'s rule, written with
   shape-free operations: bilinear ×8 upsampling (PyTorch ``align_corners=False``: output pixel
   ``8j + k`` interpolates cells ``j − 1, j`` for ``k < 4`` and ``j, j + 1`` for ``k ≥ 4`` with
   the weights ``(7 − 2k)/16, (9 + 2k)/16`` resp. ``(15 − 2k)/16, (2k − 7)/16``, the border
   clamped, the same float32 products and sums in the same order as ``upsample_bilinear``),
   cropped to the image's ``H × W`` pixels (the recipe's valid region), a pixel is a peak when
   it equals the maximum of its ``window × window`` neighbourhood (max-pooling, −∞ outside),
   is ``≥ threshold`` and ``> 0``; with ``one_per_plateau`` it must also be strictly above the
   neighbours before it in row-major order (one pixel per plateau of equal maxima). The map
   holds the upsampled density at the peaks and 0 elsewhere, so
   ``np.argwhere(peaks[i] > 0)[:, ::-1]`` are the ``(x, y)`` pixels of image ``i``'s heads
   and ``peaks[i][y, x]`` their scores.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from gcc_jax.imagenet import normalize_images
from gcc_jax.models import STRIDE, VGG19Density

__all__ = ["OUTPUT_NAMES", "serving_function", "upsample_peak_values"]

# Names of the outputs, in order, in every format.
OUTPUT_NAMES = ("density", "count", "peaks")


def _shifted(values: jax.Array, axis: int, step: int) -> jax.Array:
    """``values`` moved by one cell along ``axis`` with the border cell repeated:
    ``out[j] = values[clamp(j + step)]`` for ``step`` ±1 (the clamping of PyTorch's source index).

    Built by slicing and concatenation, which keep sizes symbolic and which ONNX converters
    convert at symbolic sizes (jax2onnx does not convert ``lax.pad`` there).
    """
    size = values.shape[axis]
    if step < 0:
        parts = [lax.slice_in_dim(values, 0, 1, axis=axis), lax.slice_in_dim(values, 0, size - 1, axis=axis)]
    else:
        parts = [lax.slice_in_dim(values, 1, size, axis=axis), lax.slice_in_dim(values, size - 1, size, axis=axis)]
    return lax.concatenate(parts, axis)


def _upsample_axis(values: jax.Array, axis: int) -> jax.Array:
    """×``STRIDE`` bilinear upsampling of one axis, PyTorch ``align_corners=False`` (see the
    module docstring); works on symbolic sizes."""
    size = values.shape[axis]
    before, after = _shifted(values, axis, -1), _shifted(values, axis, 1)
    phases = []
    for k in range(STRIDE):
        # λ1 = src − ⌊src⌋ with src = j + (2k + 1 − STRIDE) / (2 STRIDE): exact in float32.
        offset = (2 * k + 1 - STRIDE) / (2 * STRIDE)
        if offset < 0:
            low, high, weight_high = before, values, 1 + offset
        else:
            low, high, weight_high = values, after, offset
        weight_low = 1 - weight_high
        phases.append(jnp.asarray(weight_low, values.dtype) * low + jnp.asarray(weight_high, values.dtype) * high)
    stacked = jnp.stack(phases, axis=axis + 1)
    shape = list(values.shape)
    shape[axis] = size * STRIDE
    out = stacked.reshape(shape)
    # PyTorch clamps src at 0, so the first half-cell reads cell 0 alone (weights 1 and 0):
    # copy it rather than mixing it with its own copy, which can round differently.
    first = lax.slice_in_dim(values, 0, 1, axis=axis)
    head = lax.concatenate([first] * (STRIDE // 2), axis)
    return lax.concatenate([head, lax.slice_in_dim(out, STRIDE // 2, size * STRIDE, axis=axis)], axis)


def upsample_peak_values(density: jax.Array) -> jax.Array:
    """``[N, h, w]`` density → ``[N, 8h, 8w]``, bitwise what
    :func:`gcc_jax.localization.upsample_bilinear` gives (width first, then height), on
    symbolic sizes too."""
    return _upsample_axis(_upsample_axis(density, 2), 1)


def _peak_map(density: jax.Array, height, width, *, threshold: float, window: int, one_per_plateau: bool) -> jax.Array:
    upsampled = upsample_peak_values(density)
    values = lax.slice(upsampled, (0, 0, 0), (upsampled.shape[0], height, width))
    half = window // 2
    # −∞ around the map, then the neighbour (x + dx, y + dy) of every pixel as a slice of it:
    # max-pooling and the plateau rule without lax.pad or reduce_window, which jax2onnx does
    # not convert at symbolic sizes (the maximum of the slices is reduce_window's, exactly).
    minus_inf = jnp.asarray(-jnp.inf, values.dtype)
    border = values
    for axis in (1, 2):
        strip = list(border.shape)
        strip[axis] = half
        fill = lax.full(strip, minus_inf)
        border = lax.concatenate([fill, border, fill], axis)

    def neighbour(dy, dx):
        start = (0, half + dy, half + dx)
        return lax.slice(border, start, (border.shape[0], start[1] + height, start[2] + width))

    offsets = [(dy, dx) for dy in range(-half, half + 1) for dx in range(-half, half + 1)]
    pooled = values
    for dy, dx in offsets:
        if (dy, dx) != (0, 0):
            pooled = jnp.maximum(pooled, neighbour(dy, dx))
    is_peak = (values == pooled) & (values >= jnp.asarray(threshold, values.dtype)) & (values > 0)
    if one_per_plateau:
        # Strictly above the neighbours before it in row-major order.
        for dy, dx in offsets[: len(offsets) // 2]:
            is_peak &= values > neighbour(dy, dx)
    return jnp.where(is_peak, values, jnp.zeros((), values.dtype))


def serving_function(
    model: VGG19Density,
    variables: Any,
    *,
    threshold: float,
    one_per_plateau: bool = True,
    window: int = 3,
) -> Callable[[jax.Array], tuple[jax.Array, jax.Array, jax.Array]]:
    """The deployable forward pass of a trained model, its variables closed over as constants.

    Args:
      model: the ``VGG19Density``.
      variables: its variables (``{"params": ...}``).
      threshold: peak threshold on the per-cell density scale (the model's localization
        threshold, :func:`gcc_jax.inference.resolve_peak_settings`).
      one_per_plateau: one peak pixel per plateau of equal maxima;
        ``False``: every pixel of a plateau (GL's recipe).
      window: odd side of the local-maximum window in upsampled pixels.

    Returns:
      ``serve(images)``: ``images`` uint8 RGB ``[N, H, W, 3]`` (any ``N, H, W ≥ 1``) →
      ``(density [N, ceil(H/8), ceil(W/8)], count [N], peaks [N, H, W])`` float32 (see the
      module docstring for ``peaks``).

    Raises:
      ValueError: ``window`` is not a positive odd integer or ``threshold`` is negative.
    """
    if isinstance(window, bool) or int(window) != window or window < 1 or window % 2 == 0:
        raise ValueError(f"window must be a positive odd integer, got {window!r}")
    if not threshold >= 0:
        raise ValueError(f"threshold must be >= 0, got {threshold!r}")

    def serve(images):
        height, width = images.shape[1:3]
        density = model.apply(variables, normalize_images(images))
        count = density.sum(axis=(1, 2))
        peaks = _peak_map(
            density, height, width, threshold=float(threshold), window=int(window), one_per_plateau=one_per_plateau
        )
        return density, count, peaks

    return serve
