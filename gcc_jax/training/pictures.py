"""Density-map pictures of evaluation images: the image with its heads beside the predicted map.

One row per image: left, the image with the ground-truth heads as dots; right, the predicted
density map (people per 8 × 8 cell) as a heat map at the image's size, with the predicted and
true counts in the titles. Rendered with matplotlib's Agg backend (no display needed).
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from gcc_jax.imagenet import denormalize_images  # noqa: E402
from gcc_jax.models import STRIDE  # noqa: E402

__all__ = ["density_picture", "save_picture"]


def density_picture(examples: Sequence[Mapping[str, Any]], *, title: str = "", panel_inches: float = 3.2) -> np.ndarray:
    """Renders evaluation records as one picture.

    Args:
      examples: records of :func:`gcc_jax.runtime.evaluation.iterate_predictions`
        (``image`` normalised ``[h, w, 3]``, ``points`` ``[m, 2]`` ``(x, y)`` pixels,
        ``density`` ``[ceil(h/8), ceil(w/8)]``, ``count``, ``filename``).
      title: a line above the picture (e.g. the step).
      panel_inches: size of each panel's longer side, in inches at 100 dpi.

    Returns:
      uint8 ``[H, W, 3]`` RGB picture.

    Raises:
      ValueError: if ``examples`` is empty.
    """
    if not examples:
        raise ValueError("density_picture needs at least one example")
    fig, axes = plt.subplots(len(examples), 2, figsize=(2 * panel_inches, panel_inches * len(examples)), dpi=100, squeeze=False)
    for (ax_image, ax_density), example in zip(axes, examples):
        image = denormalize_images(np.asarray(example["image"]))
        height, width = image.shape[:2]
        ax_image.imshow(image)
        points = np.asarray(example["points"]).reshape(-1, 2)
        ax_image.scatter(points[:, 0], points[:, 1], s=4, c="red", linewidths=0)
        ax_image.set_title(f"{example['filename']}: {example['count']:.0f} heads", fontsize=8)
        density = np.asarray(example["density"])
        # Cell (i, j) covers pixels [8i, 8i + 8) × [8j, 8j + 8): draw it over that area.
        shown = ax_density.imshow(
            density, cmap="jet", extent=(0, density.shape[1] * STRIDE, density.shape[0] * STRIDE, 0), vmin=0.0
        )
        ax_density.set_xlim(0, width)
        ax_density.set_ylim(height, 0)
        ax_density.set_title(f"predicted {density.sum():.1f}", fontsize=8)
        fig.colorbar(shown, ax=ax_density, fraction=0.046, pad=0.04)
        for ax in (ax_image, ax_density):
            ax.set_xticks([])
            ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.canvas.draw()
    picture = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    return picture


def save_picture(picture: np.ndarray, path: str | os.PathLike) -> pathlib.Path:
    """Writes a uint8 ``[H, W, 3]`` picture as PNG (creating the folder) and returns the path."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(picture).save(path)
    return path
