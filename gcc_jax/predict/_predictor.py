"""Counting and head locations for images of any size, with a bounded number of compilations.

How an image of ``h × w`` pixels is run (:class:`Predictor`):

* **Buckets.** A side of at most ``tile_size`` pixels is padded at the bottom / right to the
  next multiple of ``bucket`` (ImageNet mean colour, i.e. zeros after normalisation: what the
  model's own pad-to-16 rule and the evaluation pipeline add), so all images whose padded sizes
  agree share one compiled program: at most ``(tile_size / bucket)²`` programs however many
  sizes come in. The density map is cut back to the image's ``ceil(h/8) × ceil(w/8)`` cells.
  Padding to ``bucket`` instead of 16 can change the cells within the network's receptive
  field of the bottom / right edge slightly (the padded area is image content to the network);
  ``bucket=16`` reproduces the evaluation pipeline's numbers exactly.
* **Tiles.** A side longer than ``tile_size`` is cut into tiles of ``tile_size`` pixels that
  overlap by ``overlap`` pixels (origins on multiples of 16, so the network's pooling grid and
  the stride-8 cells of every tile line up with the whole image's). Each tile runs alone (memory
  is that of one tile, whatever the image size) and contributes only its *core*: the cells up
  to the middle of each overlap, so every cell of the image comes from exactly one tile, with
  at least ``overlap / 2`` pixels of real context on every inner side. The network's receptive
  field reaches 142 px from a cell, so with ``overlap ≥ 288`` the stitched map equals the
  whole-image map up to float round-off; smaller overlaps trade exactness near the seams for
  speed. All tiles of all large images share the ``tile_size`` shape: one program.
* **Peaks.** Head points come from :func:`gcc_jax.localization.density_to_points` (GL's recipe)
  on the stitched map, in windows of ``tile_size / 8`` cells plus a 2-cell halo (the bilinear
  upsampling and the 3 × 3 local-maximum test look at most one cell away, so the result is the
  whole-map result exactly), padded to the same bucketed shapes as the images.

Coordinates are ``(x, y)`` = (column, row) pixels of the input image: the recipe's pixel
indices plus ``pixel_offset``, clipped into the image.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import pathlib
from typing import Any, NamedTuple

import numpy as np
from PIL import Image, ImageOps

from gcc_jax.imagenet import normalize_images
from gcc_jax.inference import open_trained_model, resolve_peak_settings
from gcc_jax.localization import DEFAULT_MAX_POINTS, PeakSettings, density_to_points
from gcc_jax.models import STRIDE, output_shape
from gcc_jax.predict._engines import make_engine
from gcc_jax.runtime.evaluation import local_eval_mesh

__all__ = [
    "IMAGE_SUFFIXES",
    "Prediction",
    "Predictor",
    "count",
    "load_image",
]
# Files a folder argument contributes (lower-case suffixes).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
# Density cells of halo around each peak-search window: the upsampling reads one cell on each
# side, the local-maximum test one pixel more; 2 cells cover both.
_HALO_CELLS = 2
# The network's pooling grid: tile origins and sizes are multiples of it.
_GRID = 16


class Prediction(NamedTuple):
    """What :class:`Predictor` returns for one image.

    Attributes:
      name: the image's name (file stem, or ``image_<k>`` for an array).
      count: predicted number of people, the sum of ``density``.
      density: ``[ceil(h/8), ceil(w/8)]`` float32 density map (people per 8 × 8 cell).
      points: ``[n, 2]`` float32 detected heads ``(x, y)`` in image pixels, by decreasing score.
      scores: ``[n]`` float32 upsampled density value at each head.
      image_hw: ``(h, w)`` of the image in pixels.
      num_tiles: network runs the image took (1 unless it was tiled).
    """

    name: str
    count: float
    density: np.ndarray
    points: np.ndarray
    scores: np.ndarray
    image_hw: tuple[int, int]
    num_tiles: int


def load_image(image) -> np.ndarray:
    """An image as uint8 RGB ``[H, W, 3]``.

    Args:
      image: a path (any format Pillow reads; greyscale, palette and RGBA are converted to RGB;
        the EXIF orientation of phone photos is applied, so the image and its points are upright
        as a photo viewer shows them), or a uint8 array ``[H, W, 3]``, ``[H, W, 4]`` (alpha
        dropped), ``[H, W, 1]`` or ``[H, W]`` (grey).

    Raises:
      ValueError: an array that is not uint8 or has another shape, or a file that is not a
        readable image (truncated, not an image at all); the message names the file.
      FileNotFoundError: a path that does not exist.
    """
    if isinstance(image, (str, os.PathLike)):
        if not os.path.isfile(image):
            raise FileNotFoundError(f"{image}: no such image file")
        try:
            with Image.open(image) as opened:
                return np.asarray(ImageOps.exif_transpose(opened).convert("RGB"))
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
            # Pillow reports a truncated or foreign file without naming it.
            raise ValueError(f"{image}: not a readable image ({err})") from err
    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise ValueError(f"image arrays must be uint8 RGB in [0, 255], got dtype {array.dtype}")
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[-1] not in (1, 3, 4) or min(array.shape[:2]) < 1:
        raise ValueError(f"image arrays must be [H, W, 3] (or [H, W], [H, W, 1], [H, W, 4]), got shape {array.shape}")
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    return np.ascontiguousarray(array[..., :3])


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


@dataclasses.dataclass(frozen=True)
class _Span:
    """One tile along an axis: network input ``[origin, origin + length)`` pixels, of which
    the density cells ``[core_start, core_stop)`` (whole-image cell indices) are kept."""

    origin: int
    length: int
    core_start: int
    core_stop: int


def _tile_spans(size: int, *, tile_size: int, overlap: int, bucket: int) -> list[_Span]:
    """Tiles along one axis of ``size`` pixels (see the module docstring)."""
    cells = -(-size // STRIDE)
    if size <= tile_size:
        return [_Span(0, _round_up(size, bucket), 0, cells)]
    padded = _round_up(size, _GRID)
    origins = [0]
    while origins[-1] + tile_size < padded:
        origins.append(min(origins[-1] + tile_size - overlap, padded - tile_size))
    # Core boundaries in the middle of each overlap; (o_k+1 + o_k + T) / 2 is a multiple of 8
    # because origins and T are multiples of 16.
    bounds = [0] + [(nxt + prev + tile_size) // 2 // STRIDE for prev, nxt in zip(origins, origins[1:])] + [cells]
    return [_Span(o, tile_size, bounds[k], bounds[k + 1]) for k, o in enumerate(origins)]


def _window_spans(cells: int, padded_cells: int, window_cells: int) -> list[tuple[int, int, int, int]]:
    """Peak-search windows along one axis: ``(start, length, core_start, core_stop)`` in cells.

    A map of at most ``window_cells`` cells is one window of ``padded_cells`` (its bucketed
    size); a longer one is cut into cores of ``window_cells`` cells, each searched in a window
    of ``window_cells + 2·halo`` cells starting ``halo`` cells before it (clamped at 0).
    """
    if cells <= window_cells:
        return [(0, padded_cells, 0, cells)]
    length = window_cells + 2 * _HALO_CELLS
    return [
        (max(core - _HALO_CELLS, 0), length, core, min(core + window_cells, cells))
        for core in range(0, cells, window_cells)
    ]


class Predictor:
    """A loaded model that counts and locates heads in images of any size.

    Build one with :meth:`from_checkpoint` and call :meth:`predict` per image; the compiled
    programs are kept, so images whose padded shapes agree never recompile
    (:attr:`num_compilations`). See the module docstring for buckets, tiles and peaks.

    Args:
      model: a ``VGG19Density``.
      variables: its variables, placed on ``mesh``.
      mesh: a one-device mesh (``gcc_jax.runtime.local_eval_mesh(1)``).
      peaks: how heads are read off the density map (threshold, pixel offset, one point per
        plateau; default GL's recipe).
      tile_size: longest side run whole, and the side of the tiles of larger images; a
        multiple of ``bucket`` (and of 16).
      overlap: pixels shared by neighbouring tiles; a multiple of 16 below ``tile_size``.
      bucket: sides up to ``tile_size`` are padded to a multiple of it; a multiple of 16.
      window: odd side of the local-maximum window (upsampled pixels).
      engine: what runs the network (:mod:`gcc_jax.predict._engines`): ``"jax"`` (``jax.jit``)
        or ``"onnxruntime"`` (the network converted to ONNX, faster on CPUs; needs the
        ``export`` extra).
      step: training step of the variables (for the record), or ``None``.
      peaks_source: where ``peaks`` came from (for the record;
        :attr:`gcc_jax.inference.ResolvedPeaks.source`).

    Raises:
      ValueError: sizes that break the rules above, or an unknown engine.
      ImportError: the engine's runtime is not installed.
    """

    def __init__(
        self,
        model,
        variables,
        mesh,
        *,
        peaks: PeakSettings = PeakSettings(),
        tile_size: int = 1024,
        overlap: int = 256,
        bucket: int = 128,
        window: int = 3,
        engine: str = "jax",
        step: int | None = None,
        peaks_source: str = "argument",
    ):
        for name, value in (("tile_size", tile_size), ("overlap", overlap), ("bucket", bucket)):
            if isinstance(value, bool) or int(value) != value or value < 0 or value % _GRID:
                raise ValueError(f"{name} must be a non-negative multiple of {_GRID} pixels, got {value!r}")
        if bucket < _GRID or tile_size < bucket or tile_size % bucket:
            raise ValueError(f"tile_size ({tile_size}) must be a positive multiple of bucket ({bucket})")
        if overlap >= tile_size:
            raise ValueError(f"overlap ({overlap}) must be smaller than tile_size ({tile_size})")
        if not isinstance(peaks, PeakSettings):
            raise ValueError(f"peaks must be a gcc_jax.localization.PeakSettings, got {peaks!r}")
        self.model = model
        self.variables = variables
        self.mesh = mesh
        self.peaks = peaks
        self.tile_size, self.overlap, self.bucket = int(tile_size), int(overlap), int(bucket)
        self.window = window
        self.step = step
        self.peaks_source = peaks_source
        self._engine = make_engine(engine, model, variables, mesh)
        self.engine = self._engine.name
        self._model_shapes: set[tuple[int, int]] = set()
        self._peak_shapes: set[tuple[int, int, int]] = set()

    @classmethod
    def from_checkpoint(
        cls,
        checkpoint: str | os.PathLike,
        *,
        which: str = "best",
        threshold: float | None = None,
        pixel_offset: float | None = None,
        one_per_plateau: bool | None = None,
        **kwargs,
    ) -> "Predictor":
        """A predictor for a training workdir or a model directory.

        Args:
          checkpoint: a training workdir (holds ``config.json``: its ``which`` checkpoint and
            saved config are used) or a model directory (holds ``model.json``: written by
            ``save_variables`` / ``python -m gcc_jax.convert_weights``).
          which: ``"best"``, ``"latest"`` or a step number (workdirs only).
          threshold, pixel_offset, one_per_plateau: the peak settings the caller gives
            (``None``: not given); the settings are resolved from them, the choice stored
            with the checkpoint, the config and the defaults by
            :func:`gcc_jax.inference.resolve_peak_settings` (a stored threshold comes with the
            detector it was chosen for).
          **kwargs: the other arguments of :class:`Predictor` (``tile_size``, ...).

        Raises:
          FileNotFoundError: ``checkpoint`` is neither kind of directory, or lacks ``which``.
        """
        mesh = local_eval_mesh(1)
        trained = open_trained_model(checkpoint, mesh=mesh, which=which)
        if trained.config is not None and trained.config.dataset.name == "synthetic_crowd":
            logging.getLogger(__name__).warning(
                "%s was trained on synthetic_crowd only (drawn blobs, not photographs): its counts on photographs "
                "mean little; train on a real data set (e.g. configs/sha.py) for those",
                checkpoint,
            )
        given = {"threshold": threshold, "pixel_offset": pixel_offset, "one_per_plateau": one_per_plateau}
        peaks = resolve_peak_settings(
            trained.checkpoint, workdir=trained.workdir, config=trained.config, given=given, step=trained.step
        )
        return cls(
            trained.model, trained.variables, mesh, peaks=peaks.settings, step=trained.step, peaks_source=peaks.source,
            **kwargs,
        )  # fmt: skip

    @property
    def num_compilations(self) -> int:
        """Programs this predictor has needed: one per distinct padded input shape of the
        network, plus one per distinct peak-search window shape (each compiled once)."""
        return len(self._model_shapes) + len(self._peak_shapes)

    def _density(self, image: np.ndarray) -> tuple[np.ndarray, int]:
        """Stitched ``[ceil(h/8), ceil(w/8)]`` density of a uint8 image, and the tile count."""
        h, w = image.shape[:2]
        rows = _tile_spans(h, tile_size=self.tile_size, overlap=self.overlap, bucket=self.bucket)
        cols = _tile_spans(w, tile_size=self.tile_size, overlap=self.overlap, bucket=self.bucket)
        density = np.zeros(output_shape(h, w), np.float32)
        for row in rows:
            for col in cols:
                # Normalised per tile, so a huge image never exists as float32.
                tile = normalize_images(image[row.origin : row.origin + row.length, col.origin : col.origin + col.length])
                pad = ((0, row.length - tile.shape[0]), (0, col.length - tile.shape[1]), (0, 0))
                tile = np.pad(tile, pad)[None]
                self._model_shapes.add(tile.shape[1:3])
                out = self._engine(tile)[0]
                r0, c0 = row.origin // STRIDE, col.origin // STRIDE
                density[row.core_start : row.core_stop, col.core_start : col.core_stop] = out[
                    row.core_start - r0 : row.core_stop - r0, col.core_start - c0 : col.core_stop - c0
                ]
        return density, len(rows) * len(cols)

    def _peaks(self, density: np.ndarray, image_hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """Head points (recipe pixel indices, whole image) and scores, in bucketed windows."""
        h, w = image_hw
        cells_h, cells_w = density.shape
        window_cells = self.tile_size // STRIDE
        bucket_cells = self.bucket // STRIDE
        found_points, found_scores = [], []
        for r_start, r_len, r_core0, r_core1 in _window_spans(cells_h, _round_up(cells_h, bucket_cells), window_cells):
            for c_start, c_len, c_core0, c_core1 in _window_spans(cells_w, _round_up(cells_w, bucket_cells), window_cells):
                piece = density[r_start : r_start + r_len, c_start : c_start + c_len]
                # Edge padding equals the upsampling's clamping at the map's border, and cells
                # beyond the image are outside image_hw anyway.
                piece = np.pad(piece, ((0, r_len - piece.shape[0]), (0, c_len - piece.shape[1])), mode="edge")
                origin = np.array([c_start, r_start]) * STRIDE
                local_hw = np.array([[h - origin[1], w - origin[0]]], np.int32)
                slots = DEFAULT_MAX_POINTS
                while True:
                    self._peak_shapes.add((r_len, c_len, slots))
                    found = density_to_points(
                        piece[None], stride=STRIDE, threshold=self.peaks.threshold, window=self.window,
                        max_points=slots, image_hw=local_hw, one_per_plateau=self.peaks.one_per_plateau,
                    )  # fmt: skip
                    peaks = int(found.num_peaks[0])
                    if peaks <= slots:
                        break
                    slots = 1 << (peaks - 1).bit_length()  # rare: rerun with every peak in
                keep = np.asarray(found.mask[0])
                points = np.asarray(found.points[0])[keep] + origin
                scores = np.asarray(found.scores[0])[keep]
                core = (
                    (points[:, 0] >= c_core0 * STRIDE) & (points[:, 0] < c_core1 * STRIDE)
                    & (points[:, 1] >= r_core0 * STRIDE) & (points[:, 1] < r_core1 * STRIDE)
                )  # fmt: skip
                found_points.append(points[core])
                found_scores.append(scores[core])
        points = np.concatenate(found_points).astype(np.float32)
        scores = np.concatenate(found_scores).astype(np.float32)
        order = np.argsort(-scores, kind="stable")
        return points[order], scores[order]

    def predict(self, image, *, name: str | None = None) -> Prediction:
        """Counts and locates the heads of one image.

        Args:
          image: a path or a uint8 array (see :func:`load_image`).
          name: a name for the record (default: the file stem, or ``"image"``).

        Returns:
          A :class:`Prediction`.
        """
        if name is None:
            name = pathlib.Path(image).stem if isinstance(image, (str, os.PathLike)) else "image"
        pixels = load_image(image)
        h, w = pixels.shape[:2]
        density, tiles = self._density(pixels)
        points, scores = self._peaks(density, (h, w))
        points = points + np.float32(self.peaks.pixel_offset)
        # An offset may push a point over the border: keep it on the image.
        points = np.clip(points, 0, np.array([w - 1, h - 1], np.float32))
        return Prediction(
            name=name, count=float(density.sum(dtype=np.float64)), density=density, points=points,
            scores=scores, image_hw=(h, w), num_tiles=tiles,
        )  # fmt: skip

    def describe(self) -> dict[str, Any]:
        """The settings of this predictor, for summaries."""
        return {
            "step": self.step, "threshold": self.peaks.threshold, "threshold_source": self.peaks_source,
            "pixel_offset": self.peaks.pixel_offset, "one_per_plateau": self.peaks.one_per_plateau,
            "tile_size": self.tile_size, "overlap": self.overlap, "bucket": self.bucket, "engine": self.engine,
            "num_compilations": self.num_compilations,
        }  # fmt: skip


def count(
    images,
    *,
    checkpoint: str | os.PathLike,
    which: str = "best",
    threshold: float | None = None,
    pixel_offset: float | None = None,
    one_per_plateau: bool | None = None,
    tile_size: int = 1024,
    overlap: int = 256,
    bucket: int = 128,
    engine: str = "jax",
) -> list[Prediction]:
    """Counts and locates the people in images with a trained model.

    Loads the model once (:meth:`Predictor.from_checkpoint`) and runs every image
    (:meth:`Predictor.predict`); keep a :class:`Predictor` to reuse the model across calls.

    Args:
      images: a path, a uint8 ``[H, W, 3]`` array, or a sequence of them.
      checkpoint: a training workdir or a model directory.
      which: ``"best"``, ``"latest"`` or a step (workdirs).
      threshold: peak threshold; ``None``: the one chosen for the checkpoint
        (``evaluate --choose_threshold``), else its config's, else
        :data:`gcc_jax.localization.DEFAULT_THRESHOLD`.
      pixel_offset: added to point coordinates; ``None``: the offset that goes with that
        threshold (stored choice, else config), default 0.
      one_per_plateau: ``True``: one point per plateau of equal maxima, i.e. per head;
        ``False``: every pixel of a plateau (GL's recipe, which paper-protocol evaluation uses:
        the bilinear upsampling makes pairs of equal maxima along every image border);
        ``None``: the detector the threshold was chosen for (stored choice, else config,
        else every pixel), see :func:`gcc_jax.inference.resolve_peak_settings`.
      tile_size, overlap, bucket, engine: see :class:`Predictor`.

    Returns:
      One :class:`Prediction` per image (``count``, ``density``, ``points``, ...).

    Example:
      >>> found = count(["crowd.jpg"], checkpoint="runs/synthetic")
      >>> found[0].count, found[0].points.shape
    """
    if isinstance(images, (str, os.PathLike)) or (isinstance(images, np.ndarray) and images.ndim in (2, 3)):
        images = [images]
    predictor = Predictor.from_checkpoint(
        checkpoint, which=which, threshold=threshold, pixel_offset=pixel_offset, one_per_plateau=one_per_plateau,
        tile_size=tile_size, overlap=overlap, bucket=bucket, engine=engine,
    )  # fmt: skip
    out = []
    for k, image in enumerate(images):
        name = None if isinstance(image, (str, os.PathLike)) else f"image_{k}"
        out.append(predictor.predict(image, name=name))
    return out
