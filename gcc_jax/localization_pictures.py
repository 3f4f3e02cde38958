"""Pictures of one evaluated image's localization: what was found, missed and falsely detected.

Drawn as the GL paper's localization figures draw them, on the evaluated image (the data set's
resize rule applied, so coordinates are those of the evaluation), with a caption below it:

* **green circle** — a *true positive*: an annotated head that a detection matched. The circle
  is centred on the annotated head and its radius is the matching radius (the matching
  detection lies inside it);
* **red dot** — a *false negative*: an annotated head that no detection matched (a miss);
* **yellow cross** — a *false positive*: a detection that matched no annotated head.

Matching is that of the evaluation's metrics (:func:`gcc_jax.localization_scoring.match_heads`)
at one radius setting (e.g. ``r8``, or ``sigma_l`` for data sets with head boxes). The marks'
line width grows with the image (1 px up to 400 px on the shorter side), so they stay visible
on large photos.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from gcc_jax.imagenet import denormalize_images
from gcc_jax.localization_scoring import ImageMatches

__all__ = ["FALSE_POSITIVE_COLOUR", "MISS_COLOUR", "TRUE_POSITIVE_COLOUR", "localization_picture"]

TRUE_POSITIVE_COLOUR = (0, 255, 0)
MISS_COLOUR = (255, 0, 0)
FALSE_POSITIVE_COLOUR = (255, 255, 0)
# The caption strip: dark text on white, below the image so image pixel (x, y) stays (x, y).
_CAPTION_BACKGROUND = (255, 255, 255)
_CAPTION_TEXT = (0, 0, 0)


def _line_width(height: int, width: int) -> int:
    return max(1, round(min(height, width) / 400))


def localization_picture(record: Mapping[str, Any], matches: ImageMatches, *, setting: str) -> np.ndarray:
    """Draws one image's true positives, misses and false detections at one radius setting.

    Args:
      record: a per-image evaluation record (:func:`gcc_jax.runtime.iterate_predictions`):
        ``image`` normalised ``[h, w, 3]``, ``points`` ``[m, 2]`` annotated heads ``(x, y)``
        in pixels of that image, ``count``, ``density`` (its sum is the predicted count) or
        ``predicted_count``, ``filename``.
      matches: the record's detections and matches (:func:`gcc_jax.localization_scoring.match_heads`).
      setting: the radius setting whose matching is drawn (a key of ``matches.matches``).

    Returns:
      uint8 ``[h + caption, max(w, caption width), 3]`` RGB picture: the image with the marks
      (module docstring) at its own pixel coordinates (top left), then a caption with the file,
      the true and predicted counts and the TP / FN / FP counts.

    Raises:
      ValueError: ``setting`` is not one of the record's settings.
    """
    if setting not in matches.matches:
        raise ValueError(f"no radius setting {setting!r} for {record['filename']}; settings: {sorted(matches.matches)}")
    match = matches.matches[setting]
    image = denormalize_images(np.asarray(record["image"]))
    height, width = image.shape[:2]
    heads = np.asarray(record["points"], np.float64).reshape(-1, 2)
    detected = np.asarray(matches.detected, np.float64).reshape(-1, 2)
    radii = np.broadcast_to(np.asarray(matches.radii[setting], np.float64), (len(heads),))
    found = np.zeros(len(heads), bool)
    found[match.pred_to_gt[match.pred_to_gt >= 0]] = True

    line = _line_width(height, width)
    dot = 1.5 * line + 1.5
    arm = 3.0 * line + 2.0
    canvas = Image.fromarray(image)
    draw = ImageDraw.Draw(canvas)
    for (x, y), radius in zip(heads[found], radii[found]):
        radius = max(float(radius), arm)
        draw.ellipse((x - radius, y - radius, x + radius, y + radius), outline=TRUE_POSITIVE_COLOUR, width=line)
    for x, y in detected[match.pred_to_gt < 0]:
        draw.line((x - arm, y - arm, x + arm, y + arm), fill=FALSE_POSITIVE_COLOUR, width=line)
        draw.line((x - arm, y + arm, x + arm, y - arm), fill=FALSE_POSITIVE_COLOUR, width=line)
    for x, y in heads[~found]:
        draw.ellipse((x - dot, y - dot, x + dot, y + dot), fill=MISS_COLOUR)

    predicted = float(record["predicted_count"]) if "predicted_count" in record else float(np.sum(record["density"]))
    true = float(record["count"])
    lines = [
        str(record["filename"]),
        f"true {true:g}  predicted {predicted:.1f}  error {predicted - true:+.1f}",
        f"{setting}: {match.tp} found (green circles)  {match.fn} missed (red dots)  {match.fp} false (yellow crosses)",
    ]
    font = ImageFont.load_default(size=max(10, min(height, width) // 40))
    line_height = int(font.size * 1.3)
    margin = line_height // 4
    text_width = max(int(np.ceil(draw.textlength(words, font=font))) for words in lines) + 2 * margin
    # A caption wider than a small image widens the picture (white on the right): the image
    # keeps its pixel coordinates.
    picture = Image.new("RGB", (max(width, text_width), height + line_height * len(lines) + 2 * margin), _CAPTION_BACKGROUND)
    picture.paste(canvas, (0, 0))
    text = ImageDraw.Draw(picture)
    for k, words in enumerate(lines):
        text.text((margin, height + margin + k * line_height), words, fill=_CAPTION_TEXT, font=font)
    return np.asarray(picture)
