"""Counting and localization metrics of crowd counting (host-side numpy).

Counting (per image ``i``: predicted count ``ĉ_i``, ground-truth count ``c_i``):

* MAE  ``= mean_i |ĉ_i − c_i|``;
* RMSE ``= sqrt(mean_i (ĉ_i − c_i)²)`` — the column the crowd-counting literature calls
  "MSE" (GL, BL, DM-Count, NWPU tables all report this square root under that name);
* NAE  ``= mean over images with c_i > 0 of |ĉ_i − c_i| / c_i``;
* GAME(L) ``= mean_i Σ_cells |ĉ_{i,k} − c_{i,k}|`` over the ``4^L`` cells of a ``2^L × 2^L``
  grid (Guerrero-Gómez-Olmedo et al., 2015); GAME(0) is the MAE.

Localization (NWPU-Crowd protocol, Wang et al., TPAMI 2020): per image, a prediction may be
paired with a ground-truth head whose radius contains it (``distance ≤ radius``), and a
maximum-cardinality bipartite matching gives the true positives; TP, FP and FN are summed over
the whole split before ``P = TP/(TP+FP)``, ``R = TP/(TP+FN)``, ``F1 = 2PR/(P+R)``.

The accumulators (:class:`CountingAccumulator`, :class:`LocalizationAccumulator`) take one image
(or a batch of counts) at a time and hold only plain sums, so accumulators from several
processes merge by adding them (``a + b``, or summing :meth:`sums` vectors).

Coordinates are ``(x, y)`` = (column, row) in image pixels throughout.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, NamedTuple

import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import maximum_bipartite_matching
from scipy.spatial import cKDTree

__all__ = [
    "GAME_LEVELS",
    "CountingAccumulator",
    "LocalizationAccumulator",
    "MatchResult",
    "game",
    "grid_counts",
    "mae",
    "match_points",
    "nae",
    "nwpu_radii",
    "precision_recall_f1",
    "rmse",
]

# The GAME levels reported by the accumulator (1, 4, 16 and 64 cells).
GAME_LEVELS = (0, 1, 2, 3)


# ----------------------------------------------------------------------------------------------
# Counting metrics.


def _counts_pair(pred_counts, gt_counts) -> tuple[np.ndarray, np.ndarray]:
    pred = np.asarray(pred_counts, np.float64).reshape(-1)
    gt = np.asarray(gt_counts, np.float64).reshape(-1)
    if pred.shape != gt.shape:
        raise ValueError(
            f"pred_counts and gt_counts must have the same number of images, got {pred.size} and {gt.size}"
        )
    if pred.size == 0:
        raise ValueError("pred_counts is empty: a metric over zero images is undefined")
    return pred, gt


def mae(pred_counts, gt_counts) -> float:
    """Mean absolute count error ``mean_i |ĉ_i − c_i|``.

    Args:
      pred_counts: ``[n]`` predicted counts (e.g. density-map sums).
      gt_counts: ``[n]`` ground-truth counts.

    Returns:
      The MAE in people per image.

    Example:
      >>> mae([10.0, 0.0, 5.0], [8, 0, 10])  # (2 + 0 + 5) / 3
      2.3333333333333335
    """
    pred, gt = _counts_pair(pred_counts, gt_counts)
    return float(np.mean(np.abs(pred - gt)))


def rmse(pred_counts, gt_counts) -> float:
    """Root-mean-square count error ``sqrt(mean_i (ĉ_i − c_i)²)``.

    This is the number the crowd-counting literature reports as "MSE" (the official GL, BL,
    DM-Count and NWPU evaluation code all take the square root); gcc_jax calls it RMSE.

    Args:
      pred_counts: ``[n]`` predicted counts.
      gt_counts: ``[n]`` ground-truth counts.

    Returns:
      The RMSE in people per image.
    """
    pred, gt = _counts_pair(pred_counts, gt_counts)
    return float(np.sqrt(np.mean((pred - gt) ** 2)))


def nae(pred_counts, gt_counts) -> float:
    """Normalised absolute error ``mean |ĉ_i − c_i| / c_i`` over the images with ``c_i > 0``.

    Images without people are left out (as in the NWPU-Crowd evaluator), because the ratio is
    undefined for them.

    Args:
      pred_counts: ``[n]`` predicted counts.
      gt_counts: ``[n]`` ground-truth counts.

    Returns:
      The NAE (a fraction, not a percentage); ``nan`` when no image has people.
    """
    pred, gt = _counts_pair(pred_counts, gt_counts)
    crowded = gt > 0
    if not crowded.any():
        return float("nan")
    return float(np.mean(np.abs(pred[crowded] - gt[crowded]) / gt[crowded]))


# ----------------------------------------------------------------------------------------------
# GAME.


def _grid_bounds(size: int, splits: int) -> np.ndarray:
    """Cell boundaries ``floor(k · size / splits)``, ``k = 0..splits``, in density cells."""
    return (np.arange(splits + 1) * size) // splits


def _check_density(density) -> np.ndarray:
    density = np.asarray(density, np.float64)
    if density.ndim != 2:
        raise ValueError(f"density must be one [h, w] map, got shape {density.shape}")
    return density


def _check_points(name: str, points) -> np.ndarray:
    points = np.asarray(points, np.float64)
    if points.size == 0:
        return np.zeros((0, 2), np.float64)
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"{name} must be [n, 2] (x, y) pixel coordinates, got shape {points.shape}")
    return points


def grid_counts(density, points, *, level: int, stride: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Predicted and ground-truth counts in the ``2^L × 2^L`` cells of GAME(L).

    The grid is laid on the density map: with ``n = 2^L``, cell row ``k`` holds density rows
    ``floor(k·h/n) ≤ i < floor((k+1)·h/n)`` (columns likewise with ``w``). When ``h`` (or
    ``w``) is not divisible by ``n``, the cells differ by at most one density row (column),
    the larger ones towards the bottom (right); e.g. ``h = 5, n = 2`` gives rows ``[0, 2)`` and
    ``[2, 5)`` (a map with fewer than ``n`` rows has empty cells, which hold no count). A cell covers the image pixels of its density cells, so its pixel boundaries
    are the density boundaries times ``stride``; a point goes to the cell whose half-open pixel
    range ``[lo, hi)`` contains it, and points outside the map (beyond ``h·stride`` or below 0)
    are counted in the nearest edge cell, so every point is counted once.

    Args:
      density: ``[h, w]`` predicted density map of one image (people per cell).
      points: ``[m, 2]`` ground-truth heads ``(x, y)`` in image pixels (``m`` may be 0).
      level: GAME level ``L ≥ 0``.
      stride: image pixels per density cell.

    Returns:
      ``(pred, gt)``: two ``[2^L, 2^L]`` float64 arrays of counts, indexed ``[cell_row,
      cell_col]``.

    Raises:
      ValueError: for a bad shape, a negative level or a non-positive stride.
    """
    density = _check_density(density)
    points = _check_points("points", points)
    if int(level) != level or level < 0:
        raise ValueError(f"level must be a non-negative integer, got {level!r}")
    if int(stride) != stride or stride <= 0:
        raise ValueError(f"stride must be a positive integer, got {stride!r}")
    splits = 2 ** int(level)
    h, w = density.shape
    rows, cols = _grid_bounds(h, splits), _grid_bounds(w, splits)
    # Differences of a zero-padded 2-D cumulative sum at the boundaries: cell sums that are
    # also right (zero) for the empty cells of a map with fewer than 2^L rows or columns.
    cumulative = np.zeros((h + 1, w + 1))
    cumulative[1:, 1:] = density.cumsum(axis=0).cumsum(axis=1)
    corners = cumulative[np.ix_(rows, cols)]
    pred = corners[1:, 1:] - corners[:-1, 1:] - corners[1:, :-1] + corners[:-1, :-1]
    # Interior boundaries only, so points outside the map clip into the edge cells.
    cell_row = np.searchsorted(rows[1:-1] * stride, points[:, 1], side="right")
    cell_col = np.searchsorted(cols[1:-1] * stride, points[:, 0], side="right")
    gt = np.bincount(cell_row * splits + cell_col, minlength=splits * splits).astype(np.float64)
    return pred, gt.reshape(splits, splits)


def game(density, points, *, level: int, stride: int = 8) -> float:
    """Grid Average Mean absolute Error of one image: ``Σ_cells |ĉ_k − c_k|`` over ``4^L`` cells.

    Averaging this over the images of a split gives GAME(L); see :func:`grid_counts` for how
    the cells are laid out (also when the map size is not divisible by ``2^L``).

    Args:
      density: ``[h, w]`` predicted density map (people per cell).
      points: ``[m, 2]`` ground-truth heads ``(x, y)`` in image pixels.
      level: GAME level ``L`` (0 gives the absolute count error).
      stride: image pixels per density cell.

    Returns:
      The summed absolute cell error of this image, in people.
    """
    pred, gt = grid_counts(density, points, level=level, stride=stride)
    return float(np.abs(pred - gt).sum())


# ----------------------------------------------------------------------------------------------
# Localization matching.


class MatchResult(NamedTuple):
    """Outcome of :func:`match_points` for one image.

    Attributes:
      tp: matched predictions (= matched heads).
      fp: unmatched predictions.
      fn: unmatched ground-truth heads.
      pred_to_gt: ``[n]`` int array, the head index matched to each prediction, ``-1`` if none.
    """

    tp: int
    fp: int
    fn: int
    pred_to_gt: np.ndarray


def nwpu_radii(boxes) -> tuple[np.ndarray, np.ndarray]:
    """NWPU-Crowd matching radii of each head from its box.

    ``σ_s = int(min(w, h) / 2)`` and ``σ_l = int(sqrt(w² + h²) / 2)`` with ``w = x2 − x1``,
    ``h = y2 − y1`` (``int`` truncates, as in the benchmark's ground-truth files). σ_l is the
    benchmark's headline setting.

    Args:
      boxes: ``[m, 4]`` head boxes ``(x1, y1, x2, y2)`` in image pixels.

    Returns:
      ``(sigma_s, sigma_l)``: two ``[m]`` float64 arrays of radii in pixels (whole numbers).

    Raises:
      ValueError: if ``boxes`` is not ``[m, 4]`` or a box has ``x2 < x1`` or ``y2 < y1``.
    """
    boxes = np.asarray(boxes, np.float64)
    if boxes.size == 0:
        return np.zeros((0,), np.float64), np.zeros((0,), np.float64)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must be [m, 4] (x1, y1, x2, y2), got shape {boxes.shape}")
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    if (w < 0).any() or (h < 0).any():
        raise ValueError("boxes must have x2 >= x1 and y2 >= y1 (order x1, y1, x2, y2)")
    return np.trunc(np.minimum(w, h) / 2), np.trunc(np.sqrt(w * w + h * h) / 2)


def match_points(pred_points, gt_points, radii) -> MatchResult:
    """Maximum-cardinality matching of predicted points to ground-truth heads in one image.

    Prediction ``p`` may be paired with head ``g`` when ``‖p − g‖₂ ≤ r_g``; each prediction
    and each head is used at most once, and the number of pairs is maximised (Hopcroft–Karp,
    ``scipy.sparse.csgraph.maximum_bipartite_matching``). This is the NWPU-Crowd protocol (its
    evaluator uses augmenting paths; every maximum matching has the same size, so TP/FP/FN do
    not depend on which one is found). Matching nearest pairs first can find fewer pairs.

    Args:
      pred_points: ``[n, 2]`` predicted heads ``(x, y)`` in image pixels (``n`` may be 0).
      gt_points: ``[m, 2]`` ground-truth heads ``(x, y)`` in image pixels (``m`` may be 0).
      radii: matching radius in pixels, a scalar for all heads (e.g. 4 or 8 where no boxes
        exist) or ``[m]`` per head (e.g. σ_s or σ_l from :func:`nwpu_radii`).

    Returns:
      A :class:`MatchResult` with ``tp + fp = n`` and ``tp + fn = m``.

    Raises:
      ValueError: for bad shapes or negative / non-finite radii.

    Example:
      >>> match_points([[1.0, 0.0], [-3.5, 0.0]], [[0.0, 0.0], [4.0, 0.0]], 4.0).tp
      2
    """
    pred = _check_points("pred_points", pred_points)
    gt = _check_points("gt_points", gt_points)
    radii = np.asarray(radii, np.float64)
    if radii.ndim == 0:
        radii = np.full((len(gt),), float(radii))
    if radii.shape != (len(gt),):
        raise ValueError(f"radii must be a scalar or have shape [{len(gt)}] (one per head), got {radii.shape}")
    if not np.all(np.isfinite(radii)) or (radii < 0).any():
        raise ValueError("radii must be finite and non-negative")
    n, m = len(pred), len(gt)
    pred_to_gt = np.full((n,), -1, np.int64)
    if n == 0 or m == 0:
        return MatchResult(tp=0, fp=n, fn=m, pred_to_gt=pred_to_gt)

    # Candidate pairs from a k-d tree with a slightly inflated radius, then the exact test the
    # NWPU evaluator applies (scipy.spatial.distance_matrix: (Σ|Δ|²)^(1/2) ≤ σ), so boundary
    # cases with integer coordinates (distance exactly σ) decide as they do there.
    candidates = cKDTree(pred).query_ball_point(gt, r=radii * (1 + 1e-9) + 1e-9)
    gt_index = np.repeat(np.arange(m), [len(c) for c in candidates])
    pred_index = np.fromiter((p for c in candidates for p in c), np.int64, count=len(gt_index))
    distance = np.sum(np.abs(pred[pred_index] - gt[gt_index]) ** 2, axis=-1) ** 0.5
    keep = distance <= radii[gt_index]
    graph = sparse.csr_array(
        (np.ones(int(keep.sum()), np.int8), (pred_index[keep], gt_index[keep])), shape=(n, m)
    )
    pred_to_gt = np.asarray(maximum_bipartite_matching(graph, perm_type="column"), np.int64)
    tp = int((pred_to_gt >= 0).sum())
    return MatchResult(tp=tp, fp=n - tp, fn=m - tp, pred_to_gt=pred_to_gt)


def precision_recall_f1(tp, fp, fn) -> tuple[float, float, float]:
    """Precision, recall and F1 from counts summed over a split.

    ``P = TP / (TP + FP)``, ``R = TP / (TP + FN)``, ``F1 = 2PR / (P + R)``. A zero denominator
    gives 0 (the NWPU evaluator adds 1e-20 to the denominators of P and R, which gives the
    same), so a split with no predictions has ``P = 0`` and ``F1 = 0``.

    Args:
      tp: true positives (matched predictions).
      fp: false positives (unmatched predictions).
      fn: false negatives (unmatched heads).

    Returns:
      ``(precision, recall, f1)`` as fractions in ``[0, 1]``.
    """
    tp, fp, fn = float(tp), float(fp), float(fn)
    if min(tp, fp, fn) < 0:
        raise ValueError(f"tp, fp and fn must be non-negative, got {tp}, {fp}, {fn}")
    precision = tp / (tp + fp) if tp + fp > 0 else 0.0
    recall = tp / (tp + fn) if tp + fn > 0 else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return precision, recall, f1


# ----------------------------------------------------------------------------------------------
# Accumulators.


@dataclasses.dataclass
class CountingAccumulator:
    """Running sums for MAE, RMSE, NAE and GAME(0..3) over a split, fed image by image.

    Use :meth:`add` for counts only (any number of images at once) or :meth:`add_density` for
    one image's density map and head points (adds its count errors and its GAME terms). Merge
    accumulators of several processes with ``a + b`` or by summing their :meth:`sums` vectors
    and calling :meth:`from_sums`.

    Attributes:
      num_images: images added.
      abs_error: ``Σ |ĉ − c|``.
      squared_error: ``Σ (ĉ − c)²``.
      relative_error: ``Σ |ĉ − c| / c`` over images with ``c > 0``.
      num_crowded: images with ``c > 0``.
      game_error: ``[4]`` sums of the per-image GAME(L) terms, ``L = 0..3``.
      num_game_images: images added with a density map (GAME is averaged over these).
    """

    num_images: float = 0.0
    abs_error: float = 0.0
    squared_error: float = 0.0
    relative_error: float = 0.0
    num_crowded: float = 0.0
    game_error: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(len(GAME_LEVELS)))
    num_game_images: float = 0.0

    def add(self, pred_counts, gt_counts) -> None:
        """Adds images by their counts (``[n]`` arrays or scalars)."""
        pred, gt = _counts_pair(pred_counts, gt_counts)
        error = pred - gt
        crowded = gt > 0
        self.num_images += pred.size
        self.abs_error += float(np.abs(error).sum())
        self.squared_error += float((error * error).sum())
        self.relative_error += float((np.abs(error[crowded]) / gt[crowded]).sum())
        self.num_crowded += float(crowded.sum())

    def add_density(self, density, points, *, stride: int = 8) -> None:
        """Adds one image from its predicted density map and its ground-truth heads.

        The predicted count is ``density.sum()``, the true count ``len(points)``; the GAME
        terms follow :func:`grid_counts`. For a map of a padded input, crop it to the image's
        cells first if the padding should not enlarge the edge cells.

        Args:
          density: ``[h, w]`` predicted density map (people per cell).
          points: ``[m, 2]`` ground-truth heads ``(x, y)`` in image pixels.
          stride: image pixels per density cell.
        """
        density = _check_density(density)
        points = _check_points("points", points)
        terms = [game(density, points, level=level, stride=stride) for level in GAME_LEVELS]
        self.add(density.sum(), len(points))
        self.game_error = self.game_error + np.asarray(terms)
        self.num_game_images += 1

    def sums(self) -> np.ndarray:
        """All running sums as one float64 vector (sum these across processes)."""
        head = [self.num_images, self.abs_error, self.squared_error, self.relative_error, self.num_crowded]
        return np.concatenate([np.asarray(head, np.float64), self.game_error, [self.num_game_images]])

    @classmethod
    def from_sums(cls, sums) -> "CountingAccumulator":
        """Inverse of :meth:`sums`."""
        sums = np.asarray(sums, np.float64)
        expected = 6 + len(GAME_LEVELS)
        if sums.shape != (expected,):
            raise ValueError(f"sums must have shape [{expected}], got {sums.shape}")
        return cls(*map(float, sums[:5]), game_error=sums[5:-1].copy(), num_game_images=float(sums[-1]))

    def __add__(self, other: "CountingAccumulator") -> "CountingAccumulator":
        return CountingAccumulator.from_sums(self.sums() + other.sums())

    def result(self) -> dict[str, float]:
        """The metrics: ``mae``, ``rmse``, ``nae`` and, when density maps were added, ``game0..3``.

        ``rmse`` is the literature's "MSE". ``nae`` is ``nan`` when no image had people.

        Raises:
          ValueError: if no image was added.
        """
        if self.num_images == 0:
            raise ValueError("no images were added to the CountingAccumulator")
        out = {
            "mae": self.abs_error / self.num_images,
            "rmse": float(np.sqrt(self.squared_error / self.num_images)),
            "nae": self.relative_error / self.num_crowded if self.num_crowded else float("nan"),
        }
        if self.num_game_images:
            for level, total in zip(GAME_LEVELS, self.game_error):
                out[f"game{level}"] = float(total / self.num_game_images)
        return out


@dataclasses.dataclass
class LocalizationAccumulator:
    """TP / FP / FN summed over a split, for precision, recall and F1 at one radius setting.

    Keep one accumulator per radius setting (e.g. NWPU's σ_s and σ_l). Merge accumulators
    of several processes with ``a + b`` (plain sums).

    Attributes:
      tp: matched predictions.
      fp: unmatched predictions.
      fn: unmatched ground-truth heads.
    """

    tp: int = 0
    fp: int = 0
    fn: int = 0

    def add(self, pred_points, gt_points, radii) -> MatchResult:
        """Matches one image (see :func:`match_points`), adds its counts and returns them."""
        match = match_points(pred_points, gt_points, radii)
        self.tp += match.tp
        self.fp += match.fp
        self.fn += match.fn
        return match

    def sums(self) -> np.ndarray:
        """``[tp, fp, fn]`` as an int64 vector (sum these across processes)."""
        return np.asarray([self.tp, self.fp, self.fn], np.int64)

    @classmethod
    def from_sums(cls, sums) -> "LocalizationAccumulator":
        """Inverse of :meth:`sums`."""
        sums = np.asarray(sums)
        if sums.shape != (3,):
            raise ValueError(f"sums must be [tp, fp, fn], got shape {sums.shape}")
        return cls(*(int(v) for v in sums))

    def __add__(self, other: "LocalizationAccumulator") -> "LocalizationAccumulator":
        return LocalizationAccumulator(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn)

    def result(self) -> Mapping[str, float]:
        """``precision``, ``recall``, ``f1`` (see :func:`precision_recall_f1`) and the counts."""
        precision, recall, f1 = precision_recall_f1(self.tp, self.fp, self.fn)
        return {"precision": precision, "recall": recall, "f1": f1, "tp": self.tp, "fp": self.fp, "fn": self.fn}
