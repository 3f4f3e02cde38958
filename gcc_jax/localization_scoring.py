"""Localization scores over a split: detected heads matched to the annotated ones.

The peaks of each density map (:class:`gcc_jax.localization.PeakSettings`, held whole by the
:class:`LocalizationOptions`) are matched to the heads (:func:`gcc_jax.metrics.match_points`)
at fixed radii given in original-image pixels (settings ``r4``, ``r8``, ...) and, where the
data set has head boxes (NWPU-Crowd, JHU-Crowd++), at the NWPU radii ``sigma_s`` /
``sigma_l`` of the original boxes. :class:`LocalizationSums` adds TP / FP / FN over the images
(and, as a vector, over processes) into precision, recall and F1 per setting;
:func:`choose_threshold` picks the peak threshold with the best F1 of one setting.

The images come as per-image *records* (:func:`gcc_jax.runtime.iterate_predictions`):
``density`` ``[h', w']`` (the image's own cells), ``points`` ``[m, 2]`` ``(x, y)`` pixels of
the evaluated (resized) image, ``boxes`` ``[m, 4]`` or ``None``, ``image_hw``, ``count`` and
the resize factors ``scale`` / ``scale_xy``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from gcc_jax.localization import PeakSettings
from gcc_jax.metrics import LocalizationAccumulator, MatchResult, match_points, nwpu_radii, precision_recall_f1
from gcc_jax.models import STRIDE

__all__ = [
    "DEFAULT_CANDIDATES",
    "ImageMatches",
    "LocalizationOptions",
    "LocalizationSums",
    "ThresholdChoice",
    "choose_threshold",
    "config_peak_settings",
    "detect_heads",
    "headline_setting",
    "localization_radii",
    "match_heads",
]

# Radius settings computed from head boxes (metrics.nwpu_radii), beside the fixed radii.
_BOX_SETTINGS = ("sigma_s", "sigma_l")
# Thresholds choose_threshold tries by default (per-cell density scale): 0.01, 0.02, ..., 0.30.
DEFAULT_CANDIDATES = tuple(np.round(np.arange(0.01, 0.31, 0.01), 2).tolist())


@dataclasses.dataclass(frozen=True)
class LocalizationOptions:
    """How a split's localization is scored (``config.localization``).

    Attributes:
      peaks: how heads are read off the density maps (threshold, pixel offset, one point per
        plateau; defaults: GL's recipe, see :class:`~gcc_jax.localization.PeakSettings`).
      radii: fixed matching radii in original-image pixels, one setting ``r<radius>`` each
        (e.g. ``r4``, ``r8``).
      choose_on: the setting whose F1 :func:`choose_threshold` maximises: ``"auto"``
        (``sigma_l`` when the data set has boxes, else the largest fixed radius),
        ``"sigma_l"``, ``"sigma_s"`` or ``"r<radius>"`` of ``radii``.
    """

    peaks: PeakSettings = PeakSettings()
    radii: tuple[float, ...] = (4.0, 8.0)
    choose_on: str = "auto"

    def __post_init__(self):
        if not isinstance(self.peaks, PeakSettings):
            raise ValueError(f"localization peaks must be a PeakSettings, got {self.peaks!r}")
        radii = tuple(float(r) for r in self.radii)
        if not radii or min(radii) <= 0:
            raise ValueError(f"localization radii must be positive pixels, got {self.radii!r}")
        object.__setattr__(self, "radii", radii)
        names = ("auto", *_BOX_SETTINGS, *self.fixed_settings)
        if self.choose_on not in names:
            raise ValueError(f"localization choose_on={self.choose_on!r} is not one of {names}")

    @property
    def fixed_settings(self) -> tuple[str, ...]:
        """Names of the fixed-radius settings, ``r<radius>`` in ``radii`` order."""
        return tuple(f"r{r:g}" for r in self.radii)

    @classmethod
    def from_config(cls, config) -> "LocalizationOptions | None":
        """Options of ``config.localization``; ``None`` when ``enabled`` is false. (Configs
        saved before the block or one of its fields existed get them from
        :func:`gcc_jax.runtime.config.upgrade_saved_config`.)"""
        block = config.localization
        if not block.enabled:
            return None
        return cls(peaks=config_peak_settings(config), radii=tuple(block.radii), choose_on=block.choose_on)


def config_peak_settings(config) -> PeakSettings:
    """The :class:`~gcc_jax.localization.PeakSettings` of ``config.localization``
    (``threshold``, ``pixel_offset``, ``one_per_plateau``), whether or not it is enabled."""
    block = config.localization
    return PeakSettings(
        threshold=block.threshold, pixel_offset=block.pixel_offset, one_per_plateau=block.one_per_plateau
    )


def localization_radii(record: Mapping[str, Any], radii: Sequence[float]) -> dict[str, Any]:
    """Matching radii of one image's heads, in the pixels of the evaluated (resized) image.

    The settings are defined in original-image pixels and scaled by the record's ``scale``
    (exact for the isotropic resize rules; the geometric mean of the two factors under
    ``"dmcount_fit"``). ``sigma_s`` / ``sigma_l`` come from the head boxes mapped back to
    original pixels (rounded to 0.01 px, which undoes the float32 round-off of the resize
    before ``int()`` truncates the half-sizes, as the NWPU ground truth does).

    Args:
      record: a per-image record (``scale``, optional ``scale_xy`` and
        ``boxes`` ``[m, 4]`` resized pixels or ``None``).
      radii: fixed radii in original pixels.

    Returns:
      ``{"r4": radius, ..., "sigma_s": [m], "sigma_l": [m]}`` (the sigma entries only when the
      record has boxes).
    """
    scale = float(record["scale"])
    settings: dict[str, Any] = {f"r{float(r):g}": float(r) * scale for r in radii}
    boxes = record.get("boxes")
    if boxes is not None:
        scale_xy = np.asarray(record.get("scale_xy", (scale, scale)), np.float64)
        original = np.round(np.asarray(boxes, np.float64).reshape(-1, 4) / np.tile(scale_xy, 2), 2)
        sigma_s, sigma_l = nwpu_radii(original)
        settings["sigma_s"] = sigma_s * scale
        settings["sigma_l"] = sigma_l * scale
    return settings


def detect_heads(record: Mapping[str, Any], options: LocalizationOptions) -> np.ndarray:
    """Head points ``[n, 2]`` ``(x, y)`` of a record's density map, inside its image (pixels of
    the evaluated image), found with ``options.peaks``."""
    return options.peaks.point_list(record["density"], stride=STRIDE, image_hw=record["image_hw"])[0]


class ImageMatches(NamedTuple):
    """One image's detections matched to its heads at every radius setting (:func:`match_heads`).

    Attributes:
      detected: ``[n, 2]`` detected heads ``(x, y)``, pixels of the evaluated image.
      radii: per setting, the matching radius in evaluated-image pixels: a float for the fixed
        settings (``r4``, ...), ``[m]`` per head for ``sigma_s`` / ``sigma_l``.
      matches: per setting, the :class:`~gcc_jax.metrics.MatchResult` (TP / FP / FN and which
        head each detection matched).
    """

    detected: np.ndarray
    radii: dict[str, Any]
    matches: dict[str, MatchResult]


def match_heads(record: Mapping[str, Any], options: LocalizationOptions) -> ImageMatches:
    """Detects a record's heads (:func:`detect_heads`) and matches them to its annotated heads
    at every radius setting of ``options`` (:func:`localization_radii`, :func:`gcc_jax.metrics.match_points`)."""
    detected = detect_heads(record, options)
    radii = localization_radii(record, options.radii)
    matches = {name: match_points(detected, record["points"], radius) for name, radius in radii.items()}
    return ImageMatches(detected=detected, radii=radii, matches=matches)


class LocalizationSums:
    """TP / FP / FN of every radius setting over records, mergeable over processes as a vector."""

    def __init__(self, options: LocalizationOptions):
        self.options = options
        self.names = (*options.fixed_settings, *_BOX_SETTINGS)
        self.accumulators = {name: LocalizationAccumulator() for name in self.names}
        self.num_box_images = 0

    def add(self, record: Mapping[str, Any]) -> ImageMatches:
        """Scores one annotated record and returns its :class:`ImageMatches`."""
        image = match_heads(record, self.options)
        self.num_box_images += "sigma_l" in image.matches
        for name, match in image.matches.items():
            self.accumulators[name] += LocalizationAccumulator(match.tp, match.fp, match.fn)
        return image

    def sums(self) -> np.ndarray:
        """The counts as one float64 vector (add the vectors of several processes to merge)."""
        parts = [self.accumulators[name].sums() for name in self.names]
        return np.concatenate([*parts, [self.num_box_images]]).astype(np.float64)

    def results(self, sums: np.ndarray) -> dict[str, float]:
        """Metrics from merged :meth:`sums`: ``loc/{precision,recall,f1}_<setting>``."""
        sums = np.rint(sums).astype(np.int64)
        names = self.names if sums[-1] else self.options.fixed_settings
        out = {"loc/threshold": self.options.peaks.threshold}
        for k, name in enumerate(names):
            result = LocalizationAccumulator.from_sums(sums[3 * k : 3 * k + 3]).result()
            for metric in ("precision", "recall", "f1"):
                out[f"loc/{metric}_{name}"] = result[metric]
        return out


def headline_setting(options: LocalizationOptions, *, has_boxes: bool) -> str:
    """The radius setting that ``options.choose_on`` names: for ``"auto"``, ``sigma_l`` when the
    images have head boxes, else the largest fixed radius (e.g. ``r8``)."""
    if options.choose_on != "auto":
        return options.choose_on
    return "sigma_l" if has_boxes else options.fixed_settings[int(np.argmax(options.radii))]


class ThresholdChoice(NamedTuple):
    """Result of :func:`choose_threshold`.

    Attributes:
      threshold: the candidate with the highest F1 (the smallest such candidate on ties).
      f1: its F1.
      setting: the radius setting whose F1 it is (e.g. ``"sigma_l"``, ``"r8"``).
      candidates: ``[k]`` the candidates, ascending.
      precision, recall, f1_all: ``[k]`` split-level metrics at each candidate.
    """

    threshold: float
    f1: float
    setting: str
    candidates: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    f1_all: np.ndarray


def choose_threshold(
    records: Sequence[Mapping[str, Any]],
    options: LocalizationOptions = LocalizationOptions(),
    *,
    candidates: Sequence[float] = DEFAULT_CANDIDATES,
) -> ThresholdChoice:
    """The peak threshold with the best localization F1 on (validation) records.

    The recommended way to set the threshold: run the model on the validation split, choose
    here, and use the threshold on the test split (``python -m gcc_jax.evaluate
    --choose_threshold`` does both steps' bookkeeping). Peaks are extracted once per image at
    the smallest candidate with ``options.peaks``' offset and plateau rule (its threshold is
    the one being chosen); for each candidate the peaks below it are dropped, every annotated
    image is matched (:func:`gcc_jax.metrics.match_points`) at the radii of the setting
    ``options.choose_on`` (:func:`localization_radii`), and TP / FP / FN are summed over the
    images before computing F1 — so the F1 reported equals the ``loc/f1_<setting>`` of
    :func:`gcc_jax.runtime.evaluation.evaluate_records` at the chosen threshold. Runs on this
    process's records only.

    Args:
      records: per-image records (their ``image`` entries are not needed); unannotated ones
        (NaN ``count``) are skipped.
      options: the peak settings, the radius settings and ``choose_on``.
      candidates: thresholds to try (per-cell density scale, ``≥ 0``).

    Returns:
      A :class:`ThresholdChoice` with the best threshold, its setting and the P/R/F1 curve.

    Raises:
      ValueError: no annotated record, no candidate, or ``choose_on`` names box radii the
        records lack.
    """
    candidates = np.sort(np.asarray(candidates, np.float64).reshape(-1))
    if candidates.size == 0:
        raise ValueError("choose_threshold: candidates is empty")
    annotated = [r for r in records if np.isfinite(r["count"])]
    if not annotated:
        raise ValueError("choose_threshold: no annotated record")
    radii = [localization_radii(r, options.radii) for r in annotated]
    setting = headline_setting(options, has_boxes="sigma_l" in radii[0])
    if any(setting not in r for r in radii):
        raise ValueError(f"localization choose_on={setting!r}: the records have no head boxes")
    lowest = dataclasses.replace(options.peaks, threshold=float(candidates[0]))
    counts = np.zeros((candidates.size, 3), np.int64)
    for record, radius in zip(annotated, radii):
        ((points, scores),) = lowest.point_list(
            record["density"], stride=STRIDE, image_hw=record["image_hw"], return_scores=True
        )
        for k, t in enumerate(candidates):
            # The same comparison in the same dtype as the extraction (value >= threshold).
            match = match_points(points[scores >= scores.dtype.type(t)], record["points"], radius[setting])
            counts[k] += (match.tp, match.fp, match.fn)
    prf = np.asarray([precision_recall_f1(*row) for row in counts])
    best = int(np.argmax(prf[:, 2]))
    return ThresholdChoice(
        threshold=float(candidates[best]), f1=float(prf[best, 2]), setting=setting, candidates=candidates,
        precision=prf[:, 0], recall=prf[:, 1], f1_all=prf[:, 2],
    )  # fmt: skip
