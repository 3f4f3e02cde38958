"""Evaluation results image by image: one CSV row per image, pictures of the worst ones.

:class:`ImageResults` is handed to :func:`gcc_jax.runtime.evaluation.evaluate_records` as its
``on_image`` consumer, so each row counts exactly the detections and matches that the split's
metrics count. The CSV (:meth:`ImageResults.write_csv`) has one row per image, sorted by file:

* ``file``: the image's file name as the data set stores it (for a folder, its path relative
  to the folder);
* ``true_count``: annotated heads; ``predicted_count``: the density map's sum;
  ``error``: ``predicted_count - true_count`` (negative = under-counted);
* ``detected``: heads detected by the localization (peaks of the density map);
* ``tp_<setting>``, ``fp_<setting>``, ``fn_<setting>`` for each radius setting of the
  evaluation (``r4``, ``r8``, and ``sigma_s`` / ``sigma_l`` where the data set has head boxes):
  matched detections, unmatched detections, unmatched heads. Summed over the rows they give the
  JSON's ``loc/precision_<setting>`` etc.

Unannotated images (NWPU-Crowd's test split) have a predicted count and ``detected`` only.
:meth:`ImageResults.write_pictures` draws the ``num_worst`` images with the largest absolute
count error and any images chosen by name (:func:`gcc_jax.localization_pictures.localization_picture`).
"""

from __future__ import annotations

import csv
import dataclasses
import os
import pathlib
import re
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from PIL import Image

from gcc_jax.localization_pictures import localization_picture
from gcc_jax.localization_scoring import ImageMatches, LocalizationOptions, headline_setting

__all__ = ["ImageResult", "ImageResults"]


@dataclasses.dataclass(frozen=True)
class ImageResult:
    """One image's row.

    Attributes:
      file: the image's file name.
      true_count: annotated heads (NaN for an unannotated image).
      predicted_count: the sum of the predicted density map.
      detected: detected heads (``None`` when localization is off).
      scores: ``{setting: (tp, fp, fn)}`` (empty for an unannotated image or without localization).
    """

    file: str
    true_count: float
    predicted_count: float
    detected: int | None
    scores: dict[str, tuple[int, int, int]]

    @property
    def error(self) -> float:
        """``predicted_count - true_count``."""
        return self.predicted_count - self.true_count


def _file_name(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _picture_name(file: str) -> str:
    # sub/IMG 1.jpg -> sub_IMG_1.png: one flat folder of pictures, whatever the nesting.
    return re.sub(r"[^\w.-]+", "_", str(pathlib.PurePosixPath(file).with_suffix(""))).strip("_") + ".png"


class ImageResults:
    """Collects per-image rows, and the records of the images to draw, during an evaluation.

    Call it as ``on_image(record, matches)`` (see
    :func:`gcc_jax.runtime.evaluation.evaluate_records`). Only the records of the current ``num_worst``
    worst images and of the chosen ``files`` are kept (their image pixels), so memory does not
    grow with the split.

    Args:
      localization: the evaluation's localization options (which radius setting the pictures
        draw: :func:`gcc_jax.localization_scoring.headline_setting`); ``None`` when
        localization is off (rows have counts only, no pictures are drawn).
      num_worst: how many images with the largest absolute count error to draw.
      files: file names of further images to draw (the ``file`` column, or its last component).
    """

    def __init__(self, localization: LocalizationOptions | None, *, num_worst: int = 0, files: Iterable[str] = ()):
        if num_worst < 0:
            raise ValueError(f"num_worst must be >= 0, got {num_worst}")
        self.localization = localization
        self.num_worst = num_worst
        self.files = tuple(files)
        self.results: list[ImageResult] = []
        self._worst: list[tuple[float, str, dict]] = []
        self._chosen: dict[str, dict] = {}
        self.images_missing = False

    def __call__(self, record: Mapping[str, Any], matches: ImageMatches | None) -> None:
        file = _file_name(record["filename"])
        predicted = float(np.asarray(record["density"], np.float64).sum())
        scores = {name: (m.tp, m.fp, m.fn) for name, m in matches.matches.items()} if matches is not None else {}
        detected = len(matches.detected) if matches is not None else None
        result = ImageResult(file, float(record["count"]), predicted, detected, scores)
        self.results.append(result)
        if matches is None or not matches.matches or self.localization is None:
            return  # nothing to draw: no localization, or no annotation to match
        wanted = self._is_chosen(file)
        if not wanted and self.num_worst == 0:
            return
        if "image" not in record:
            self.images_missing = True
            return
        kept = {
            "image": np.array(record["image"]), "points": np.asarray(record["points"]), "count": result.true_count,
            "predicted_count": predicted, "filename": file, "matches": matches,
        }  # fmt: skip
        if wanted:
            self._chosen[file] = kept
        if self.num_worst:
            self._worst.append((abs(result.error), file, kept))
            self._worst.sort(key=lambda entry: (-entry[0], entry[1]))
            del self._worst[self.num_worst :]

    def _is_chosen(self, file: str) -> bool:
        return any(name in (file, file.rsplit("/", 1)[-1]) for name in self.files)

    @property
    def unmatched_files(self) -> list[str]:
        """Chosen file names that matched no evaluated image."""
        seen = [result.file for result in self.results]
        return [name for name in self.files if not any(name in (f, f.rsplit("/", 1)[-1]) for f in seen)]

    def settings(self) -> list[str]:
        """The radius settings of the rows, in the evaluation's order (``r4``, ``r8``, ``sigma_s``, ...)."""
        names: dict[str, None] = {}
        for result in self.results:
            names.update(dict.fromkeys(result.scores))
        return list(names)

    def write_csv(self, path: str | os.PathLike) -> pathlib.Path:
        """Writes the rows (module docstring), sorted by file, and returns the path."""
        path = pathlib.Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        settings = self.settings()
        header = ["file", "true_count", "predicted_count", "error", "detected"]
        header += [f"{kind}_{name}" for name in settings for kind in ("tp", "fp", "fn")]
        with path.open("w", newline="") as stream:
            writer = csv.writer(stream)
            writer.writerow(header)
            for result in sorted(self.results, key=lambda r: r.file):
                annotated = np.isfinite(result.true_count)
                row = [
                    result.file,
                    f"{result.true_count:g}" if annotated else "",
                    f"{result.predicted_count:.4f}",
                    f"{result.error:.4f}" if annotated else "",
                    "" if result.detected is None else result.detected,
                ]
                for name in settings:
                    row += list(result.scores.get(name, ("", "", "")))
                writer.writerow(row)
        return path

    def write_pictures(self, folder: str | os.PathLike) -> list[pathlib.Path]:
        """Draws the worst images (``worst_01_<file>.png``, ... from the largest absolute count
        error) and the chosen ones (``<file>.png``) into ``folder``; returns the paths written.

        ``worst_*.png`` pictures of an earlier evaluation in ``folder`` are removed first, so
        the folder's worst pictures are this evaluation's.
        """
        folder = pathlib.Path(folder)
        for stale in folder.glob("worst_*.png"):
            stale.unlink()
        jobs = [(f"worst_{rank:02d}_{_picture_name(file)}", kept) for rank, (_, file, kept) in enumerate(self._worst, 1)]
        jobs += [(_picture_name(file), kept) for file, kept in sorted(self._chosen.items())]
        written = []
        for name, kept in jobs:
            matches = kept["matches"]
            setting = headline_setting(self.localization, has_boxes="sigma_l" in matches.matches)
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(localization_picture(kept, matches, setting=setting)).save(folder / name)
            written.append(folder / name)
        return written
