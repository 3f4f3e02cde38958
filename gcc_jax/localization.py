"""Head locations from predicted density maps.

The recipe of GL's authors (jia-wan/GeneralizedLoss-Counting-Pytorch, issue #3), which gives
the paper's localization results:

1. upsample the ``[h, w]`` density map by the stride with bilinear interpolation, PyTorch's
   ``F.interpolate(density, scale_factor=stride, mode="bilinear")`` (``align_corners=False``:
   output pixel ``p`` reads source position ``max((p + ½)/stride − ½, 0)``); the values are
   **not** divided by ``stride²``, so the threshold is on the per-cell density scale;
2. a pixel is a peak when it equals the maximum of its ``window × window`` neighbourhood
   (``F.max_pool2d(x, window, 1, window // 2)``, which pads with −∞);
3. keep the peaks whose value is at least the threshold (the recipe zeroes values below it
   and keeps the non-zero ones, so a peak needs ``value ≥ threshold`` and ``value > 0``);
4. a peak at row ``y``, column ``x`` of the upsampled map is a head at ``(x, y)`` image pixels.

Quirk kept by default: step 2 marks every pixel of a flat-topped maximum. A density cell that
stands alone (equal neighbours on both sides) upsamples to a 2 × 2 block of equal values, so
the recipe reports four heads there (sixteen in an image corner, where the clamped source index
makes a 4 × 4 plateau). Trained models rarely produce exact ties; synthetic maps do.
``one_per_plateau=True`` keeps only the first pixel (in row-major order) of each plateau.

The three settings a user chooses — threshold, pixel offset, one point per plateau — travel
together as one :class:`PeakSettings`, whose defaults (GL's recipe) are the only ones: every
tool (evaluation, threshold choice, predict, the NWPU writer, export) takes the settings whole.
:func:`density_to_points` is jit-compiled on a batch with a fixed number of output slots;
:func:`density_to_point_list` (or :meth:`PeakSettings.point_list`) returns plain numpy arrays.
Matching the points to annotated heads and choosing the threshold on validation images is
:mod:`gcc_jax.localization_scoring`'s job.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "DEFAULT_MAX_POINTS",
    "DEFAULT_THRESHOLD",
    "PeakDetections",
    "PeakSettings",
    "density_to_point_list",
    "density_to_points",
    "upsample_bilinear",
]

# Output slots of density_to_points per image. NWPU-Crowd images hold up to ~20k heads, most
# far fewer; the overflow is reported (PeakDetections.num_peaks) rather than silently lost.
DEFAULT_MAX_POINTS = 4096
# Peak threshold of GL's recipe (per-cell density scale), wherever no other one is given:
# better, one chosen on validation data (gcc_jax.localization_scoring.choose_threshold).
DEFAULT_THRESHOLD = 0.05


@dataclasses.dataclass(frozen=True)
class PeakSettings:
    """How head points are read off density maps: the settings a user chooses, passed whole.

    The defaults are GL's recipe, and the only defaults of these settings in gcc_jax (the
    keyword defaults of :func:`density_to_points` are these fields').

    Attributes:
      threshold: minimum peak value on the per-cell density scale (``≥ 0``); choose it on
        validation data (``python -m gcc_jax.evaluate --choose_threshold``).
      pixel_offset: added to both ``(x, y)`` coordinates of every point, in image pixels. A
        model trained with GL's reference cell positions puts its peaks about 4 px up-left of
        the heads; 4.0 compensates.
      one_per_plateau: one point (the first in row-major order) per plateau of equal
        neighbouring maxima, instead of the recipe's every pixel of it (see the module docstring).

    Raises:
      ValueError: a negative or non-finite threshold, a non-finite offset, or a
        ``one_per_plateau`` that is not a bool.
    """

    threshold: float = DEFAULT_THRESHOLD
    pixel_offset: float = 0.0
    one_per_plateau: bool = False

    def __post_init__(self):
        threshold, offset = float(self.threshold), float(self.pixel_offset)
        if not (math.isfinite(threshold) and threshold >= 0):
            raise ValueError(f"peak threshold must be a finite number >= 0, got {self.threshold!r}")
        if not math.isfinite(offset):
            raise ValueError(f"pixel_offset must be a finite number of pixels, got {self.pixel_offset!r}")
        if not isinstance(self.one_per_plateau, (bool, np.bool_)):
            raise ValueError(f"one_per_plateau must be True or False, got {self.one_per_plateau!r}")
        # A frozen dataclass sets its own fields through object.__setattr__.
        object.__setattr__(self, "threshold", threshold)
        object.__setattr__(self, "pixel_offset", offset)
        object.__setattr__(self, "one_per_plateau", bool(self.one_per_plateau))

    def point_list(self, density, *, stride: int = 8, image_hw=None, return_scores: bool = False) -> list:
        """:func:`density_to_point_list` of ``density`` with these settings (every peak kept).

        Args:
          density: a ``[h, w]`` map, a ``[B, h, w]`` batch or a list of ``[h, w]`` maps.
          stride: image pixels per density cell.
          image_hw: optional ``(height, width)`` per image (``[B, 2]``, or ``[2]`` for all).
          return_scores: also return the peak values.

        Returns:
          Per image, ``[n, 2]`` float32 ``(x, y)`` image pixels by decreasing score (with
          ``return_scores``, ``(points, scores)`` pairs).
        """
        return density_to_point_list(
            density, stride=stride, image_hw=image_hw, return_scores=return_scores, threshold=self.threshold,
            pixel_offset=self.pixel_offset, one_per_plateau=self.one_per_plateau,
        )  # fmt: skip


class PeakDetections(NamedTuple):
    """Heads found by :func:`density_to_points` in a batch of density maps.

    Slots are sorted by decreasing score; unused slots have ``mask = False`` and zeros.

    Attributes:
      points: ``[B, max_points, 2]`` float ``(x, y)`` image pixels (pixel indices of the
        upsampled map, plus ``pixel_offset``).
      mask: ``[B, max_points]`` bool, True for a detected head.
      scores: ``[B, max_points]`` upsampled density value at each head (per-cell scale).
      num_peaks: ``[B]`` int32, all peaks that passed the threshold, including those beyond
        ``max_points`` (which are dropped: the lowest-scoring ones).
    """

    points: jax.Array
    mask: jax.Array
    scores: jax.Array
    num_peaks: jax.Array

    @property
    def overflow(self) -> jax.Array:
        """``[B]`` int32 number of peaks dropped because they did not fit in ``max_points``."""
        return jnp.maximum(self.num_peaks - self.mask.shape[-1], 0)


def _check_int(name: str, value, *, odd: bool = False) -> int:
    if isinstance(value, bool) or int(value) != value or value < 1 or (odd and value % 2 == 0):
        kind = "a positive odd integer" if odd else "a positive integer"
        raise ValueError(f"{name} must be {kind}, got {value!r}")
    return int(value)


def _source_weights(size: int, stride: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per output pixel: the two source indices and their weights, as PyTorch computes them.

    PyTorch (``align_corners=False``, ``scale_factor`` given) uses the source position
    ``src = (1/stride)·(p + ½) − ½`` in float32, clamps it at 0, takes ``i0 = ⌊src⌋``,
    ``i1 = min(i0 + 1, size − 1)``, ``λ1 = src − i0`` and ``λ0 = 1 − λ1``.
    """
    p = np.arange(size * stride, dtype=np.float32)
    src = np.maximum(np.float32(1.0 / stride) * (p + np.float32(0.5)) - np.float32(0.5), np.float32(0))
    i0 = src.astype(np.int64)
    i1 = np.minimum(i0 + 1, size - 1)
    lam1 = src - i0.astype(np.float32)
    return i0, i1, np.float32(1) - lam1, lam1


def upsample_bilinear(density, *, stride: int = 8) -> jax.Array:
    """Bilinear ×stride upsampling of density maps, as PyTorch's ``align_corners=False``.

    ``out[y, x] = λ0(y)·(λ0(x)·d[i0(y), i0(x)] + λ1(x)·d[i0(y), i1(x)])
    + λ1(y)·(λ0(x)·d[i1(y), i0(x)] + λ1(x)·d[i1(y), i1(x)])`` with PyTorch's source indices
    and weights (see the module docstring). Values are not rescaled: a constant map stays
    constant, so the sum grows by ``stride²``.

    Args:
      density: ``[B, h, w]`` density maps.
      stride: integer upsampling factor.

    Returns:
      ``[B, h·stride, w·stride]`` array of the input's float dtype.
    """
    stride = _check_int("stride", stride)
    density = jnp.asarray(density)
    if not jnp.issubdtype(density.dtype, jnp.floating):
        density = density.astype(jnp.float32)
    if density.ndim != 3:
        raise ValueError(f"density must be [B, h, w], got shape {density.shape}")
    _, h, w = density.shape
    dtype = density.dtype
    r0, r1, a0, a1 = _source_weights(h, stride)
    c0, c1, b0, b1 = _source_weights(w, stride)
    b0, b1 = jnp.asarray(b0, dtype), jnp.asarray(b1, dtype)
    # Interpolate along the width inside each of the two source rows, then along the height:
    # the order of PyTorch's CPU kernel.
    def along_w(rows):
        return b0 * jnp.take(rows, c0, axis=2) + b1 * jnp.take(rows, c1, axis=2)

    top = along_w(jnp.take(density, r0, axis=1))
    bottom = along_w(jnp.take(density, r1, axis=1))
    return jnp.asarray(a0, dtype)[:, None] * top + jnp.asarray(a1, dtype)[:, None] * bottom


@functools.partial(jax.jit, static_argnames=("stride", "window", "max_points", "one_per_plateau"))
def _detect(density, threshold, image_hw, pixel_offset, *, stride, window, max_points, one_per_plateau):
    values = upsample_bilinear(density, stride=stride)
    batch, height, width = values.shape
    rows = jnp.arange(height)[None, :, None]
    cols = jnp.arange(width)[None, None, :]
    valid = (rows < image_hw[:, 0, None, None]) & (cols < image_hw[:, 1, None, None])
    # Padding is -inf for the max-pool (as F.max_pool2d pads), and so are invalid pixels, so
    # a peak on the edge of the valid region is judged on its valid neighbours only.
    pool_in = jnp.where(valid, values, -jnp.inf)
    half = window // 2
    pooled = jax.lax.reduce_window(
        pool_in, -jnp.inf, jax.lax.max, (1, window, window), (1, 1, 1), ((0, 0), (half, half), (half, half))
    )
    is_peak = valid & (values == pooled) & (values >= threshold) & (values > 0)
    if one_per_plateau:
        # Among equal neighbours keep the first in row-major order: a peak must be strictly
        # above every neighbour that comes before it (those above it, and those left of it).
        padded = jnp.pad(pool_in, ((0, 0), (half, half), (half, half)), constant_values=-jnp.inf)
        for dy in range(-half, 1):
            for dx in range(-half, half + 1 if dy < 0 else 0):
                neighbour = padded[:, half + dy : half + dy + height, half + dx : half + dx + width]
                is_peak &= values > neighbour
    num_peaks = is_peak.sum(axis=(1, 2)).astype(jnp.int32)
    flat_scores = jnp.where(is_peak, values, -jnp.inf).reshape(batch, height * width)
    slots = min(max_points, height * width)
    _, index = jax.lax.top_k(flat_scores, slots)
    mask = jnp.take_along_axis(is_peak.reshape(batch, -1), index, axis=1)
    scores = jnp.where(mask, jnp.take_along_axis(values.reshape(batch, -1), index, axis=1), 0)
    xy = jnp.stack([index % width, index // width], axis=-1).astype(values.dtype) + pixel_offset
    points = jnp.where(mask[..., None], xy, 0)
    if slots < max_points:
        extra = max_points - slots
        points = jnp.pad(points, ((0, 0), (0, extra), (0, 0)))
        mask = jnp.pad(mask, ((0, 0), (0, extra)))
        scores = jnp.pad(scores, ((0, 0), (0, extra)))
    return PeakDetections(points=points, mask=mask, scores=scores, num_peaks=num_peaks)


def _image_hw_array(image_hw, batch: int, density_shape, stride: int) -> jax.Array:
    if image_hw is None:
        return jnp.tile(jnp.asarray([[density_shape[1] * stride, density_shape[2] * stride]], jnp.int32), (batch, 1))
    image_hw = jnp.asarray(image_hw)
    if image_hw.shape == (2,):
        image_hw = jnp.broadcast_to(image_hw, (batch, 2))
    if image_hw.shape != (batch, 2):
        raise ValueError(f"image_hw must be [B, 2] or [2] (height, width) in pixels, got shape {image_hw.shape}")
    return image_hw.astype(jnp.int32)


def density_to_points(
    density,
    *,
    stride: int = 8,
    threshold=PeakSettings.threshold,
    window: int = 3,
    max_points: int = DEFAULT_MAX_POINTS,
    image_hw=None,
    one_per_plateau: bool = PeakSettings.one_per_plateau,
    pixel_offset=PeakSettings.pixel_offset,
) -> PeakDetections:
    """Head locations from a batch of density maps (GL authors' recipe; jit-compiled).

    Upsample ×``stride`` (bilinear, PyTorch ``align_corners=False``, values not rescaled),
    find the pixels equal to their ``window × window`` maximum, keep those with
    ``value ≥ threshold`` (and ``> 0``) inside the valid region, and return the
    ``max_points`` highest as ``(x, y)`` = (column, row) image pixels. See the module
    docstring for the recipe and its plateau quirk.

    Args:
      density: ``[B, h, w]`` predicted density maps (people per cell) at ``stride``.
      stride: image pixels per density cell (integer); also the upsampling factor.
      threshold: minimum peak value on the per-cell density scale (0.05 in the recipe); may
        be a traced scalar, so changing it does not recompile. Choose it on validation data
        with :func:`gcc_jax.localization_scoring.choose_threshold`.
      window: odd side of the local-maximum neighbourhood, in upsampled pixels.
      max_points: output slots per image. When more peaks pass the threshold, the
        ``max_points`` highest-scoring are kept (ties: row-major order) and
        ``num_peaks`` tells how many there were.
      image_hw: optional ``[B, 2]`` (or ``[2]`` for all) integer ``(height, width)`` of the
        real image in pixels, for inputs padded at the bottom and right (e.g. to a multiple
        of 16): pixels with ``row ≥ height`` or ``col ≥ width`` give no points and do not
        count as neighbours. Default: the whole upsampled map.
      one_per_plateau: keep one peak (the first in row-major order) per group of equal
        neighbouring maxima instead of all of them (the recipe's behaviour, the default).
      pixel_offset: added to both coordinates. 0 gives the recipe's pixel indices; 0.5 gives
        pixel centres in the continuous convention of the losses (pixel ``p`` spans
        ``[p, p + 1)``; ``gcc_jax.losses`` places cell ``j`` at ``(j + ½)·stride``).

    Returns:
      :class:`PeakDetections` with ``points [B, max_points, 2]``, ``mask [B, max_points]``,
      ``scores [B, max_points]`` and ``num_peaks [B]`` (``.overflow`` = dropped peaks).

    Raises:
      ValueError: if ``density`` is not ``[B, h, w]``, ``image_hw`` has a wrong shape,
        ``stride`` or ``max_points`` is not a positive integer, or ``window`` is not a
        positive odd integer.

    Example:
      >>> d = jnp.zeros((1, 5, 5)).at[0, 1, 2].set(1.0).at[0, 1, 3].set(0.5).at[0, 2, 2].set(0.5)
      >>> found = density_to_points(d, stride=8, max_points=8)
      >>> found.points[0, :int(found.mask[0].sum())].tolist()
      [[20.0, 12.0]]
    """
    stride = _check_int("stride", stride)
    window = _check_int("window", window, odd=True)
    max_points = _check_int("max_points", max_points)
    density = jnp.asarray(density)
    if density.ndim != 3:
        hint = " (squeeze the channel axis of a [B, h, w, 1] model output)" if density.ndim == 4 else ""
        raise ValueError(f"density must be [B, h, w], got shape {density.shape}{hint}")
    if not jnp.issubdtype(density.dtype, jnp.floating):
        density = density.astype(jnp.float32)
    if jnp.ndim(threshold) != 0 or jnp.ndim(pixel_offset) != 0:
        raise ValueError("threshold and pixel_offset must be scalars")
    hw = _image_hw_array(image_hw, density.shape[0], density.shape, stride)
    return _detect(
        density,
        jnp.asarray(threshold, density.dtype),
        hw,
        jnp.asarray(pixel_offset, density.dtype),
        stride=stride,
        window=window,
        max_points=max_points,
        one_per_plateau=bool(one_per_plateau),
    )


def _as_batch_list(density) -> list[np.ndarray]:
    """A [h, w] map, a [B, h, w] batch or a sequence of [h, w] maps → list of [h, w] arrays."""
    if isinstance(density, (list, tuple)):
        maps = [np.asarray(d) for d in density]
    else:
        array = np.asarray(density)
        if array.ndim == 2:
            array = array[None]
        if array.ndim != 3:
            raise ValueError(f"density must be [h, w] or [B, h, w], got shape {array.shape}")
        maps = list(array)
    for i, d in enumerate(maps):
        if d.ndim != 2:
            raise ValueError(f"density map {i} must be [h, w], got shape {d.shape}")
    return maps


def density_to_point_list(
    density,
    *,
    stride: int = 8,
    threshold: float = PeakSettings.threshold,
    window: int = 3,
    image_hw=None,
    max_points: int | None = None,
    one_per_plateau: bool = PeakSettings.one_per_plateau,
    pixel_offset: float = PeakSettings.pixel_offset,
    return_scores: bool = False,
):
    """Head locations as one plain numpy array per image (convenience over :func:`density_to_points`).

    Args:
      density: a ``[h, w]`` map, a ``[B, h, w]`` batch, or a list of ``[h, w]`` maps of
        different sizes (each size compiles once).
      stride, threshold, window, one_per_plateau, pixel_offset: as in
        :func:`density_to_points`.
      image_hw: optional ``(height, width)`` per image (``[B, 2]``, or ``[2]`` for all) of
        the real image inside a padded input.
      max_points: cap per image (highest scores kept). ``None`` returns every peak: the
        maps are rerun with enough slots when the first pass overflows.
      return_scores: also return the peak values.

    Returns:
      A list of ``[n_i, 2]`` float32 ``(x, y)`` arrays in image pixels, sorted by decreasing
      score; with ``return_scores``, a list of ``(points, scores)`` pairs.
    """
    maps = _as_batch_list(density)
    if image_hw is not None:
        image_hw = np.asarray(image_hw)
        image_hw = np.broadcast_to(image_hw, (len(maps), 2)) if image_hw.shape == (2,) else image_hw
        if image_hw.shape != (len(maps), 2):
            raise ValueError(f"image_hw must be [{len(maps)}, 2] or [2] (height, width), got shape {image_hw.shape}")
    out = []
    for i, d in enumerate(maps):
        hw = None if image_hw is None else image_hw[i : i + 1]
        slots = max_points if max_points is not None else min(1024, d.size * stride * stride)
        found = density_to_points(
            d[None], stride=stride, threshold=threshold, window=window, max_points=slots,
            image_hw=hw, one_per_plateau=one_per_plateau, pixel_offset=pixel_offset,
        )
        if max_points is None and int(found.num_peaks[0]) > slots:
            found = density_to_points(
                d[None], stride=stride, threshold=threshold, window=window, max_points=int(found.num_peaks[0]),
                image_hw=hw, one_per_plateau=one_per_plateau, pixel_offset=pixel_offset,
            )
        keep = np.asarray(found.mask[0])
        points = np.asarray(found.points[0])[keep].astype(np.float32)
        out.append((points, np.asarray(found.scores[0])[keep]) if return_scores else points)
    return out
