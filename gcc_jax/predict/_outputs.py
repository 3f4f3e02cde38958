"""What ``python -m gcc_jax.predict`` writes per image, and the summary of a run.

Per image ``<name>`` (``OUT/<name>_...``):

* ``<name>_density.png`` — the density map as a heat map over the image (colour and opacity
  grow with the density, scaled to the map's maximum), with the count in a banner;
* ``<name>_points.png`` — the image with a circle on every detected head;
* ``<name>_points.csv`` — ``x,y,score`` per head (``(x, y)`` image pixels, score = the
  upsampled density value), by decreasing score;
* ``<name>_points.json`` — ``{"image", "name", "height", "width", "count", "num_points",
  "num_tiles", "threshold", "pixel_offset", "points": [[x, y], ...], "scores": [...]}``.

Pictures show the image at most ``max_side`` pixels on its longer side (the image is shrunk,
the points scaled with it), so a huge input does not give a huge PNG, below a black strip with
the count. Summary of a run:
``OUT/summary.csv`` (one row per image), ``OUT/summary_videos.csv`` (one row per video, when
there are videos; what is written per video is :mod:`gcc_jax.predict._video_outputs`'s) and
``OUT/summary.json`` (the rows plus the predictor's settings and compilation count);
:func:`format_table` and :func:`format_video_table` give the console tables.
"""

from __future__ import annotations

import csv
import json
import os
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib import colormaps
from PIL import Image, ImageDraw, ImageFont

from gcc_jax.localization import PeakSettings
from gcc_jax.models import STRIDE
from gcc_jax.predict._predictor import Prediction

__all__ = [
    "SUMMARY_FIELDS",
    "VIDEO_SUMMARY_FIELDS",
    "annotated_picture",
    "density_overlay",
    "format_table",
    "format_video_table",
    "points_picture",
    "write_prediction",
    "write_summary",
]

# "error" is empty for an image that was processed, else why it could not be.
SUMMARY_FIELDS = ("image", "name", "height", "width", "count", "num_points", "num_tiles", "seconds", "error")
# One row per video: frames decoded / counted, the count's mean and maximum over the counted
# frames, processing time and rate; "error" as above (a damaged video's other fields describe
# the frames that decoded).
VIDEO_SUMMARY_FIELDS = (
    "video", "name", "height", "width", "fps", "frames_decoded", "frames_counted", "duration_s", "mean_count",
    "max_count", "max_count_time_s", "seconds", "frames_per_s", "error",
)  # fmt: skip


def _shrink(image: np.ndarray, max_side: int) -> tuple[Image.Image, float]:
    """The image as PIL, shrunk so that its longer side is at most ``max_side``, and the factor."""
    h, w = image.shape[:2]
    factor = min(1.0, max_side / max(h, w))
    picture = Image.fromarray(image)
    if factor < 1.0:
        picture = picture.resize((max(1, round(w * factor)), max(1, round(h * factor))), Image.BILINEAR)
    return picture, factor


def _banner(picture: Image.Image, text: str) -> Image.Image:
    """The picture below a black strip with ``text`` in white (nothing of the image is hidden)."""
    size = max(12, round(max(picture.size) / 45))
    font = ImageFont.load_default(size=size)
    left, top, right, bottom = ImageDraw.Draw(picture).textbbox((0, 0), text, font=font)
    pad = size // 3
    strip = bottom - top + 2 * pad
    out = Image.new("RGB", (picture.width, picture.height + strip), (0, 0, 0))
    out.paste(picture, (0, strip))
    ImageDraw.Draw(out).text((pad - left, pad - top), text, fill=(255, 255, 255), font=font)
    return out


def _blend_heat(picture: Image.Image, density: np.ndarray, factor: float) -> Image.Image:
    """``density`` as a heat map blended over ``picture`` (the image shrunk by ``factor``)."""
    peak = float(density.max()) if density.size else 0.0
    # The map resized to the picture as if it covered density.shape · 8 pixels, then cut to
    # the image's area (the last cells may stick out of it).
    cells_h, cells_w = density.shape
    full = (max(1, round(cells_w * STRIDE * factor)), max(1, round(cells_h * STRIDE * factor)))
    heat = np.asarray(Image.fromarray(density).resize(full, Image.BILINEAR))[: picture.height, : picture.width]
    level = np.clip(heat / peak, 0.0, 1.0) if peak > 0 else np.zeros_like(heat)
    colour = colormaps["jet"](level)[..., :3] * 255.0
    alpha = (0.8 * level**0.75)[..., None]
    blended = np.asarray(picture, np.float32) * (1 - alpha) + colour * alpha
    return Image.fromarray(np.clip(np.rint(blended), 0, 255).astype(np.uint8))


def _draw_points(picture: Image.Image, points: np.ndarray, factor: float) -> None:
    """Draws a red-and-white circle on ``picture`` (the image shrunk by ``factor``) per point."""
    draw = ImageDraw.Draw(picture)
    radius = max(3.0, max(picture.size) / 250)
    width = max(1, round(radius / 3))
    # Pixel index p spans [p, p + 1): draw at its centre.
    for x, y in (np.asarray(points, np.float64).reshape(-1, 2) + 0.5) * factor:
        box = (x - radius, y - radius, x + radius, y + radius)
        draw.ellipse(box, outline=(255, 255, 255), width=width + 2)
        draw.ellipse(box, outline=(255, 0, 0), width=width)


def density_overlay(
    image: np.ndarray, density: np.ndarray, *, count: float | None = None, max_side: int = 2048
) -> np.ndarray:
    """The density map as a heat map blended over the image.

    Each cell covers its ``8 × 8`` pixels (bilinear between cell centres); colour (matplotlib
    ``jet``) and opacity (``0.8 · (d / max d)^0.75``) grow with the density, so empty areas
    show the image.

    Args:
      image: uint8 ``[h, w, 3]``.
      density: ``[ceil(h/8), ceil(w/8)]`` density map.
      count: written in the banner (default: the map's sum).
      max_side: longest side of the picture in pixels.

    Returns:
      uint8 ``[strip + h', w', 3]`` picture: the banner strip above the image shrunk to
      ``max_side`` (``h' × w'``).
    """
    picture, factor = _shrink(image, max_side)
    density = np.asarray(density, np.float32)
    peak = float(density.max()) if density.size else 0.0
    out = _blend_heat(picture, density, factor)
    count = float(density.sum()) if count is None else count
    return np.asarray(_banner(out, f"count {count:.1f}   (max {peak:.3g} per cell)"))


def points_picture(
    image: np.ndarray, points: np.ndarray, *, label: str | None = None, max_side: int = 2048
) -> np.ndarray:
    """The image with a red-and-white circle on every point.

    Args:
      image: uint8 ``[h, w, 3]``.
      points: ``[n, 2]`` ``(x, y)`` image pixels.
      label: banner text (default: ``"<n> heads"``).
      max_side: longest side of the picture in pixels.

    Returns:
      uint8 ``[strip + h', w', 3]`` picture (as :func:`density_overlay`).
    """
    picture, factor = _shrink(image, max_side)
    _draw_points(picture, points, factor)
    return np.asarray(_banner(picture, label if label is not None else f"{len(points)} heads"))


def annotated_picture(
    image: np.ndarray, density: np.ndarray, points: np.ndarray, *, label: str, max_side: int = 2048
) -> np.ndarray:
    """The density heat map (as :func:`density_overlay`) and the head circles (as
    :func:`points_picture`) on one picture, below a banner with ``label``.

    Args:
      image: uint8 ``[h, w, 3]``.
      density: ``[ceil(h/8), ceil(w/8)]`` density map.
      points: ``[n, 2]`` ``(x, y)`` image pixels.
      label: banner text.
      max_side: longest side of the picture in pixels.

    Returns:
      uint8 ``[strip + h', w', 3]`` picture (as :func:`density_overlay`).
    """
    picture, factor = _shrink(image, max_side)
    picture = _blend_heat(picture, np.asarray(density, np.float32), factor)
    _draw_points(picture, points, factor)
    return np.asarray(_banner(picture, label))


def write_prediction(
    prediction: Prediction,
    image: np.ndarray,
    out_dir: str | os.PathLike,
    *,
    source: str = "",
    peaks: PeakSettings | None = None,
    max_side: int = 2048,
) -> dict[str, pathlib.Path]:
    """Writes the two pictures, the CSV and the JSON of one image (see the module docstring).

    Args:
      prediction: the image's :class:`~gcc_jax.predict.Prediction` (its ``name`` names the files).
      image: the uint8 ``[h, w, 3]`` image it was made from.
      out_dir: output folder (created).
      source: the input's path, for the JSON.
      peaks: the peak settings used, for the JSON (``threshold``, ``pixel_offset``) and the
        banner (``None``: not known, written as ``null``).
      max_side: longest side of the pictures.

    Returns:
      ``{"density_png", "points_png", "points_csv", "points_json"}`` paths.
    """
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / prediction.name
    paths = {
        "density_png": stem.with_name(f"{prediction.name}_density.png"),
        "points_png": stem.with_name(f"{prediction.name}_points.png"),
        "points_csv": stem.with_name(f"{prediction.name}_points.csv"),
        "points_json": stem.with_name(f"{prediction.name}_points.json"),
    }
    Image.fromarray(density_overlay(image, prediction.density, count=prediction.count, max_side=max_side)).save(
        paths["density_png"]
    )
    label = f"{len(prediction.points)} heads" + (f" (threshold {peaks.threshold:g})" if peaks is not None else "")
    Image.fromarray(points_picture(image, prediction.points, label=label, max_side=max_side)).save(paths["points_png"])
    with open(paths["points_csv"], "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["x", "y", "score"])
        for (x, y), score in zip(prediction.points.tolist(), prediction.scores.tolist()):
            writer.writerow([f"{x:.2f}", f"{y:.2f}", f"{score:.6g}"])
    record = {
        "image": source, "name": prediction.name, "height": prediction.image_hw[0], "width": prediction.image_hw[1],
        "count": prediction.count, "num_points": len(prediction.points), "num_tiles": prediction.num_tiles,
        "threshold": None if peaks is None else peaks.threshold,
        "pixel_offset": None if peaks is None else peaks.pixel_offset,
        "points": np.round(prediction.points.astype(np.float64), 2).tolist(),
        "scores": [float(f"{s:.6g}") for s in prediction.scores.tolist()],
    }  # fmt: skip
    paths["points_json"].write_text(json.dumps(record) + "\n")
    return paths


def write_summary(
    rows: Sequence[Mapping[str, Any]], out_dir: str | os.PathLike, *, settings: Mapping[str, Any]
) -> tuple[pathlib.Path, pathlib.Path]:
    """Writes ``summary.csv`` (the image rows, columns :data:`SUMMARY_FIELDS`), for a run with
    videos ``summary_videos.csv`` (the video rows, columns
    :data:`VIDEO_SUMMARY_FIELDS`), and ``summary.json``
    (``{"settings": ..., "images": [...], "videos": [...]}``); returns the paths of
    ``summary.csv`` and ``summary.json``.

    A row with a ``"video"`` entry is a video's, any other an image's.
    """
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    images = [row for row in rows if "video" not in row]
    videos = [row for row in rows if "video" in row]
    csv_path, json_path = out_dir / "summary.csv", out_dir / "summary.json"
    tables = [(csv_path, SUMMARY_FIELDS, images)]
    if videos:
        tables.append((out_dir / "summary_videos.csv", VIDEO_SUMMARY_FIELDS, videos))
    for path, fields, table in tables:
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(table)
    record = {"settings": dict(settings), "images": images, "videos": videos}
    json_path.write_text(json.dumps(record, indent=2) + "\n")
    return csv_path, json_path


def format_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """A plain-text table of the summary rows (name, size, count, heads, tiles, seconds)
    with a total line over the images that were processed; a failed image shows ``failed``.
    Video rows are left out (:func:`format_video_table`)."""
    rows = [r for r in rows if "video" not in r]
    header = ("image", "size (h x w)", "count", "heads", "tiles", "seconds")
    done = [r for r in rows if not r.get("error")]
    lines = [
        (str(r["name"]), f"{r['height']} x {r['width']}", f"{r['count']:.1f}", str(r["num_points"]),
         str(r["num_tiles"]), f"{r['seconds']:.2f}")
        if not r.get("error") else (str(r["name"]), "", "failed", "", "", "")
        for r in rows
    ]  # fmt: skip
    failed = f", {len(rows) - len(done)} failed" if len(done) < len(rows) else ""
    total = (
        f"total ({len(done)}{failed})", "", f"{sum(r['count'] for r in done):.1f}",
        str(sum(r["num_points"] for r in done)), str(sum(r["num_tiles"] for r in done)),
        f"{sum(r['seconds'] for r in done):.2f}",
    )  # fmt: skip
    widths = [max(len(row[k]) for row in (header, *lines, total)) for k in range(len(header))]

    def fmt(row):
        cells = (cell.ljust(width) if k == 0 else cell.rjust(width) for k, (cell, width) in enumerate(zip(row, widths)))
        return "  ".join(cells)

    rule = "-" * len(fmt(header))
    return "\n".join([fmt(header), rule, *map(fmt, lines), rule, fmt(total)])


def format_video_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """A plain-text table of the video rows of a summary (name, size, frames counted /
    decoded, mean and maximum count, frames per second); a damaged video is marked ``error``."""
    header = ("video", "size (h x w)", "frames", "mean count", "max count (at s)", "frames/s", "")
    lines = []
    for r in rows:
        if "video" not in r:
            continue
        counted = bool(r.get("frames_counted"))
        lines.append((
            str(r["name"]), f"{r['height']} x {r['width']}" if r.get("height") else "",
            f"{r.get('frames_counted') or 0}/{r.get('frames_decoded') or 0}",
            f"{r['mean_count']:.1f}" if counted else "",
            f"{r['max_count']:.1f} ({r['max_count_time_s']:.2f})" if counted else "",
            f"{r['frames_per_s']:.2f}" if counted else "", "error" if r.get("error") else "",
        ))  # fmt: skip
    widths = [max(len(row[k]) for row in (header, *lines)) for k in range(len(header))]

    def fmt(row):
        cells = (cell.ljust(width) if k == 0 else cell.rjust(width) for k, (cell, width) in enumerate(zip(row, widths)))
        return "  ".join(cells).rstrip()

    return "\n".join([fmt(header), "-" * len(fmt(header)), *map(fmt, lines)])
