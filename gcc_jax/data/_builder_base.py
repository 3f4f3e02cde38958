"""What the crowd-counting TFDS builders share: bad-input policy, image checks, point checks.

Each builder reads a dataset's raw distribution layout (described in its module) from the manual download
directory. Problems with one example (an unreadable image, a missing / empty / malformed
annotation) raise :class:`BadExampleError` naming the file; the builder then fails
(``on_bad_example="raise"``, the default) or skips that example with a logged warning
(``"skip"``). Points outside the image are handled by ``out_of_image``. Everything skipped,
dropped or ignored is logged and written to the prepared dataset's ``metadata.json``
(``builder.info.metadata``), so nothing is lost silently.
"""

from __future__ import annotations

import functools
import io
import logging
import os
import pathlib
import re
import warnings
from typing import Callable, Iterator

import numpy as np
import scipy.io
import tensorflow_datasets as tfds
from PIL import Image

__all__ = [
    "BAD_EXAMPLE_POLICIES",
    "OUT_OF_IMAGE_POLICIES",
    "BadExampleError",
    "CrowdBuilder",
    "as_points",
    "child_dir",
    "find_root",
    "load_mat",
    "natural_key",
    "read_image",
]

_log = logging.getLogger(__name__)

BAD_EXAMPLE_POLICIES = ("raise", "skip")
# "drop" is what the reference preprocessing does (BL / DM-Count keep 0 ≤ x ≤ W, 0 ≤ y ≤ H).
OUT_OF_IMAGE_POLICIES = ("drop", "raise", "clip", "keep")

# Images whose pixels TensorFlow's decoder turns into RGB exactly as PIL does; their original
# bytes are stored untouched. Anything else (CMYK / 16-bit / palette files) is re-encoded
# losslessly as an RGB PNG at build time.
_KEEP_AS_IS = {("JPEG", "RGB"), ("JPEG", "L"), ("PNG", "RGB"), ("PNG", "L")}


class BadExampleError(ValueError):
    """One example of a raw dataset cannot be read.

    Attributes:
      path: the offending file.
      problem: what is wrong with it.
    """

    def __init__(self, path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


def natural_key(name: str):
    """Sort key that orders ``IMG_2`` before ``IMG_10``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def load_mat(path: pathlib.Path) -> dict:
    """The variables of a MATLAB annotation file (``scipy.io.loadmat``).

    Raises:
      BadExampleError: the file is missing, empty (0 bytes) or not a readable ``.mat`` file.
    """
    if not path.is_file():
        raise BadExampleError(path, "annotation file is missing")
    if path.stat().st_size == 0:
        raise BadExampleError(path, "annotation file is empty (0 bytes)")
    try:
        return scipy.io.loadmat(path)
    except Exception as error:  # scipy raises many types (ValueError, TypeError, OSError…)
        raise BadExampleError(path, f"cannot read the .mat file ({type(error).__name__}: {error})") from error


def read_image(path) -> tuple[bytes, int, int]:
    """Reads and fully decodes an image file to check it.

    Args:
      path: image file.

    Returns:
      ``(encoded bytes to store, height, width)``: the file's own bytes when TensorFlow
      decodes them to the same RGB pixels (JPEG / PNG, RGB or grey), else a lossless RGB PNG.

    Raises:
      BadExampleError: the file is missing, empty, truncated or not an image.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise BadExampleError(path, "image file is missing")
    data = path.read_bytes()
    if not data:
        raise BadExampleError(path, "image file is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            # Huge crowd photos (NWPU has > 20 Mpx) trip PIL's decompression-bomb warning.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                image.load()  # full decode: catches truncated and corrupt files
                fmt, mode = image.format, image.mode
                width, height = image.size
                if (fmt, mode) in _KEEP_AS_IS:
                    return data, height, width
                buffer = io.BytesIO()
                image.convert("RGB").save(buffer, format="PNG")
                _log.info("%s: %s %s image re-encoded as an RGB PNG", path, fmt, mode)
                return buffer.getvalue(), height, width
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise BadExampleError(path, f"cannot decode image ({error})") from error


def as_points(value, path, what: str = "points") -> np.ndarray:
    """Checks an annotation array and returns it as float32 ``[m, 2]`` ``(x, y)``.

    An empty array of any shape means no heads.

    Raises:
      BadExampleError: not numeric, not ``[m, 2]`` (or ``[m, ≥2]`` with ``what`` saying so),
        or containing NaN / inf.
    """
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise BadExampleError(path, f"{what} are not numeric ({error})") from error
    if array.size == 0:
        return np.zeros([0, 2], np.float32)
    if array.ndim != 2 or array.shape[1] < 2:
        raise BadExampleError(path, f"{what} must be an [m, 2] array of (x, y), got shape {array.shape}")
    array = array[:, :2]
    if not np.all(np.isfinite(array)):
        raise BadExampleError(path, f"{what} contain NaN or inf values")
    return array.astype(np.float32)


class CrowdBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Base of the crowd-counting builders (not registered itself).

    Args:
      on_bad_example: ``"raise"`` (default: the build fails with the file name and the
        problem) or ``"skip"`` (the example is left out with a logged warning and listed in
        ``info.metadata["skipped"]``).
      out_of_image: what to do with annotated points outside ``[0, W] × [0, H]``:
        ``"drop"`` (default, as the reference preprocessing does; logged and listed in
        ``info.metadata["out_of_image"]``), ``"raise"`` (a bad example, see above),
        ``"clip"`` (moved onto the image border) or ``"keep"``.
      **kwargs: passed to ``tfds.core.GeneratorBasedBuilder`` (``data_dir``, ``config``…).
        The file format defaults to ``array_record`` (random access, which the pipelines
        need for a global shuffle and per-process sharding).
    """

    def __init__(self, *, on_bad_example: str = "raise", out_of_image: str = "drop", **kwargs):
        if on_bad_example not in BAD_EXAMPLE_POLICIES:
            raise ValueError(f"on_bad_example must be one of {BAD_EXAMPLE_POLICIES}, got {on_bad_example!r}")
        if out_of_image not in OUT_OF_IMAGE_POLICIES:
            raise ValueError(f"out_of_image must be one of {OUT_OF_IMAGE_POLICIES}, got {out_of_image!r}")
        self._on_bad_example = on_bad_example
        self._out_of_image = out_of_image
        kwargs.setdefault("file_format", "array_record")
        super().__init__(**kwargs)

    # --- helpers for subclasses -------------------------------------------------------------

    def _crowd_info(
        self, *, description: str, homepage: str, citation: str, extra_features: dict | None = None
    ) -> tfds.core.DatasetInfo:
        """The ``DatasetInfo`` every crowd builder shares: ``image`` (uint8 ``[H, W, 3]``),
        ``image/filename`` and ``points`` (float32 ``[n, 2]`` ``(x, y)`` pixels), then the data
        set's own ``extra_features``."""
        features = {
            "image": tfds.features.Image(shape=(None, None, 3)),
            "image/filename": tfds.features.Text(),
            "points": tfds.features.Tensor(shape=(None, 2), dtype=np.float32),
            **(extra_features or {}),
        }
        return tfds.core.DatasetInfo(
            builder=self,
            description=description,
            features=tfds.features.FeaturesDict(features),
            homepage=homepage,
            citation=citation,
            metadata=tfds.core.MetadataDict(),
        )

    def _metadata(self) -> tfds.core.MetadataDict:
        metadata = self.info.metadata
        metadata.setdefault("on_bad_example", self._on_bad_example)
        metadata.setdefault("out_of_image_policy", self._out_of_image)
        for key in ("skipped", "out_of_image", "ignored_files", "warnings"):
            metadata.setdefault(key, [])
        return metadata

    def _guarded(self, split: str, make_examples: Iterator[tuple[str, Callable[[], dict]]]):
        """Yields ``(key, example)``, applying the bad-example policy to each one."""
        metadata = self._metadata()
        for key, make in make_examples:
            try:
                example = make()
            except BadExampleError as error:
                if self._on_bad_example == "raise":
                    raise
                _log.warning("Skipping a bad %s example: %s", split, error)
                metadata["skipped"].append({"split": split, "file": error.path, "problem": error.problem})
                continue
            yield key, example

    def _example_with_points(
        self, split: str, image_path: pathlib.Path, points: np.ndarray, annotation_path
    ) -> tuple[dict, np.ndarray]:
        """The stored example of one image and its annotated head points.

        Every builder's per-example function ends here once it has found the image and read
        the annotation: the image is read and checked (:func:`read_image`) and the points are
        held to it by the ``out_of_image`` policy.

        Args:
          split: the split being built (for the log and ``metadata.json``).
          image_path: the image file.
          points: ``[N, 2]`` float32 head points ``(x, y)`` in image pixels, as annotated.
          annotation_path: the file the points came from (named in warnings and errors).

        Returns:
          ``(example, keep)``: ``{"image", "image/filename", "points"}`` and the ``[N]`` boolean
          mask of the annotated points kept, for a builder that stores more per head (boxes,
          occlusion) to select the same rows.

        Raises:
          BadExampleError: an unreadable image, or points outside it under ``"raise"``.
        """
        encoded, height, width = read_image(image_path)
        points, keep = self._inside_image(split, points, height, width, annotation_path)
        return {"image": encoded, "image/filename": image_path.name, "points": points}, keep

    def _paired_examples(self, split: str, keys, images: dict, annotations: dict, read_points, *, describe):
        """Yields ``(key, example)`` of images paired by name with the files of their points.

        Args:
          split: the split being built.
          keys: ``(example key, pairing key)`` pairs, in the order to build them.
          images: pairing key -> image file found.
          annotations: pairing key -> annotation file found (either may lack a key).
          read_points: annotation file -> ``[N, 2]`` float32 points ``(x, y)`` (raises
            :class:`BadExampleError` on a bad file).
          describe: pairing key -> ``(problem if the image is missing, problem if the
            annotation is missing)``; the error names the file that is there.
        """

        def make(key):
            image_path, annotation_path = images.get(key), annotations.get(key)
            missing_image, missing_annotation = describe(key)
            if annotation_path is None:
                raise BadExampleError(image_path, missing_annotation)
            if image_path is None:
                raise BadExampleError(annotation_path, missing_image)
            return self._example_with_points(split, image_path, read_points(annotation_path), annotation_path)[0]

        yield from self._guarded(split, ((name, functools.partial(make, key)) for name, key in keys))

    def _ignore_files(self, split: str, folder, names) -> None:
        """Logs (and records) stray files that carry no annotation, e.g. ``Thumbs.db``."""
        names = sorted(names, key=natural_key)
        if not names:
            return
        _log.warning("Ignoring %d file(s) without an annotation in %s: %s", len(names), folder, ", ".join(names))
        metadata = self._metadata()
        metadata["ignored_files"].extend({"split": split, "file": os.path.join(str(folder), n)} for n in names)

    def _warn(self, split: str, path, message: str) -> None:
        _log.warning("%s: %s", path, message)
        self._metadata()["warnings"].append({"split": split, "file": str(path), "problem": message})

    def _inside_image(self, split: str, points: np.ndarray, height: int, width: int, path) -> tuple[np.ndarray, np.ndarray]:
        """Applies ``out_of_image`` to ``[m, 2]`` points of an ``height × width`` image.

        Returns:
          ``(points, keep)``: the resulting points and the boolean mask of the input rows they
          came from (so per-point annotations such as boxes can follow).
        """
        inside = (points[:, 0] >= 0) & (points[:, 0] <= width) & (points[:, 1] >= 0) & (points[:, 1] <= height)
        outside = int(np.sum(~inside))
        keep = np.ones(len(points), bool)
        if outside == 0 or self._out_of_image == "keep":
            return points, keep
        if self._out_of_image == "raise":
            raise BadExampleError(
                path, f"{outside} of {len(points)} points lie outside the {width}x{height} image (out_of_image='raise')"
            )
        _log.warning(
            "%s: %d of %d points lie outside the %dx%d image; out_of_image=%r",
            path, outside, len(points), width, height, self._out_of_image,
        )
        self._metadata()["out_of_image"].append(
            {"split": split, "file": str(path), "count": outside, "policy": self._out_of_image}
        )
        if self._out_of_image == "clip":
            clipped = np.stack([np.clip(points[:, 0], 0, width), np.clip(points[:, 1], 0, height)], axis=-1)
            return clipped.astype(np.float32), keep
        return points[inside], inside


def find_root(manual_dir, has_layout: Callable[[pathlib.Path], bool], description: str, instructions: str) -> pathlib.Path:
    """The manual directory itself, or its one sub-folder, that holds the expected layout.

    Raises:
      ValueError: neither holds it; the message gives the expected layout.
    """
    root = pathlib.Path(manual_dir)
    if not root.is_dir():
        raise ValueError(f"manual_dir {root} does not exist.\n{instructions}")
    if has_layout(root):
        return root
    found = [child for child in sorted(root.iterdir()) if child.is_dir() and has_layout(child)]
    if len(found) == 1:
        return found[0]
    if len(found) > 1:
        raise ValueError(f"manual_dir {root} holds several {description} folders: {found}; point it at one of them")
    raise ValueError(f"No {description} found in manual_dir {root} (nor one level below).\n{instructions}")


def child_dir(parent: pathlib.Path, *names: str) -> pathlib.Path | None:
    """First existing sub-folder of ``parent`` among ``names`` (case-insensitive), or None."""
    if not parent.is_dir():
        return None
    children = {child.name.lower(): child for child in parent.iterdir() if child.is_dir()}
    for name in names:
        if name.lower() in children:
            return children[name.lower()]
    return None
