"""Density maps whose one head (GL's peak recipe, stride 8) sits at a pixel known in advance,
for tests that score detections against points placed at chosen distances from it."""

import numpy as np

from gcc_jax.localization import density_to_point_list


def blob(shape=(8, 8), cell=(1, 2)) -> np.ndarray:
    """A float32 density map ``[h, w]`` of total 2.0 whose only peak is near cell ``(i, j)``."""
    density = np.zeros(shape, np.float32)
    i, j = cell
    density[i, j] = 1.0
    density[i, j + 1] = 0.5
    density[i + 1, j] = 0.5
    return density


def peak(density: np.ndarray) -> np.ndarray:
    """The one head of ``density`` as float64 ``(x, y)`` image pixels (image = 8 × the map)."""
    (point,) = density_to_point_list(density, stride=8, image_hw=(density.shape[0] * 8, density.shape[1] * 8))[0]
    return np.asarray(point, np.float64)


def record(density, points, *, scale=1.0, boxes=None, count=None) -> dict:
    """A per-image evaluation record (:func:`gcc_jax.runtime.iterate_predictions`'s keys) of a
    ``[h, w]`` map over an ``8h × 8w`` image, its heads ``points`` ``(x, y)`` resized pixels,
    resized by ``scale``; ``count`` defaults to the number of points (NaN: unannotated)."""
    h, w = density.shape
    return {
        "density": density,
        "points": np.asarray(points, np.float32).reshape(-1, 2),
        "boxes": None if boxes is None else np.asarray(boxes, np.float32).reshape(-1, 4),
        "count": float(len(points)) if count is None else count,
        "image_hw": (h * 8, w * 8),
        "scale": scale,
        "scale_xy": (scale, scale),
        "filename": "x",
    }
