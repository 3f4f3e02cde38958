"""Head-point annotations of a folder of your own images, read as the annotation tools write them.

:func:`find_annotated_images` walks a folder (nested sub-folders included) and pairs every image
(``.jpg``, ``.jpeg``, ``.png``, ``.webp``, ``.bmp``, any case of extension) with its annotation;
:meth:`ImageAnnotation.read` then reads the points of one image, and :func:`read_annotated_folder`
does both for a whole folder. Nothing here decodes an image or builds a data set: the folder
builder (:mod:`gcc_jax.data.folder`) and evaluation of a raw folder share these readers.

Formats, detected per image:

============= ===================================================================================
``labelme``   ``photo.json`` beside ``photo.jpg``, as LabelMe 5 saves it: ``shapes`` whose
              ``shape_type`` is ``"point"`` are heads, whatever their ``label``; other shapes
              (rectangles, polygons, circles…) are counted in ``unused_shapes``, not used.
``cvat``      ``annotations.xml`` (CVAT for images 1.1) anywhere in the folder: each
              ``<image name=...>`` names a file relative to the XML's folder (or to its
              ``images/`` sub-folder, as CVAT's export ZIP lays it out); every ``<points
              points="x1,y1;x2,y2">`` element gives heads; ``<box>``, ``<polygon>``… are counted
              in ``unused_shapes``.
``csv``       ``photo.csv`` or ``photo.txt`` beside ``photo.jpg``: one head per line, ``x`` then
              ``y`` separated by a comma, semicolon or spaces (further columns are ignored, so
              JHU-Crowd's ``x y w h o b`` files read too). A first line that is not numeric is a
              header; if it names columns ``x`` and ``y`` they are taken by name. An empty file
              (or a header alone) is an image with no heads.
``folder_csv`` one CSV for many images, any name, whose header has the columns ``image`` (or
              ``filename``), ``x`` and ``y``: one row per head, the image named relative to the
              CSV's folder (a bare file name is enough when it is unique below that folder).
              An image with no heads is listed on a row with ``x`` and ``y`` left empty
              (``beach.jpg,,``); an image the CSV does not name has no annotation from it.
``mat``       ``photo.mat``, ``GT_photo.mat`` or ``photo_ann.mat`` beside the image, or in a
              ``ground-truth/`` / ``ground_truth/`` folder beside the image's folder (the
              ShanghaiTech layout), holding ShanghaiTech's ``image_info`` cell or UCF-QNRF's
              ``annPoints`` ``[m, 2]``.
============= ===================================================================================

**When two formats annotate one image** the first of :data:`FORMAT_PRECEDENCE` wins (a per-image
tool file over a folder-wide export, an annotation tool's output over a table, and a converted
``.mat`` last), and the ones left unused are listed in :attr:`ImageAnnotation.overridden`, so a
builder can report them.

**Coordinates.** Points are float32 ``[n, 2]`` ``(x, y)`` = (column, row) in pixels of the image
as stored, in the project's continuous convention: pixel ``(r, c)`` covers
``[c, c + 1) × [r, r + 1)``, so its centre is ``(c + ½, r + ½)`` and the image spans
``[0, W] × [0, H]``. LabelMe (Qt scene coordinates of the image item) and CVAT (canvas
coordinates of the image, shapes clipped to ``[0, W] × [0, H]``) use this same convention, so
their numbers are taken unchanged. ShanghaiTech's and UCF-QNRF's ``.mat`` points are taken
unchanged too, exactly as their own builders read them. A CSV is read as written: write pixel
centres ``(c + ½, r + ½)``; integer pixel indices ``(c, r)`` land half a pixel up and left of the
centre, far below the head sizes (≥ 4 px) that matter for training and scoring. Images are the
upright photos the annotation tools display: the builder applies a photo's EXIF orientation.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import io
import json
import logging
import os
import pathlib
import re
import xml.etree.ElementTree as ElementTree
from typing import Callable

import numpy as np
import scipy.io

from gcc_jax.data._builder_base import BadExampleError, as_points, natural_key

__all__ = [
    "FORMAT_PRECEDENCE",
    "IMAGE_EXTENSIONS",
    "MISSING_ANNOTATION_POLICIES",
    "AnnotatedImage",
    "FolderScan",
    "ImageAnnotation",
    "find_annotated_images",
    "read_annotated_folder",
    "read_cvat_xml",
    "read_folder_csv",
    "read_labelme_json",
    "read_mat_points",
    "read_points_table",
]

_log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
# First wins when several formats annotate one image (see the module docstring).
FORMAT_PRECEDENCE = ("labelme", "cvat", "csv", "folder_csv", "mat")
# "error": an image without any annotation stops the scan, listing all such images;
# "empty": such an image is an image with no heads (a background image).
MISSING_ANNOTATION_POLICIES = ("error", "empty")

_MAT_FOLDERS = ("ground-truth", "ground_truth")
_IMAGE_COLUMNS = ("image", "filename", "file", "image_name")
_SEPARATORS = re.compile(r"[,;\s]+")
# CVAT 1.1 elements of an <image> besides <points> (the heads): counted as unused shapes.
_CVAT_SHAPES = ("box", "polygon", "polyline", "ellipse", "cuboid", "mask", "skeleton", "tag")


@dataclasses.dataclass(frozen=True)
class AnnotatedImage:
    """One image of a folder with its head points.

    Attributes:
      relative_path: the image's path relative to the folder, with ``/`` separators
        (e.g. ``"train/street/IMG_3.jpg"``).
      image_path: the image file.
      points: float32 ``[n, 2]`` ``(x, y)`` pixels (see the module docstring's convention).
      annotation_format: the format the points came from (one of :data:`FORMAT_PRECEDENCE`),
        or ``"none"`` for an image without annotation taken as having no heads.
      annotation_path: the file the points came from (``None`` for ``"none"``).
      unused_shapes: ``{shape type: count}`` of annotated shapes that are not points
        (e.g. ``{"rectangle": 2}``); empty when there were none.
      annotated_hw: ``(height, width)`` in pixels of the image the tool says it annotated
        (LabelMe's ``imageHeight`` / ``imageWidth``, CVAT's ``height`` / ``width``), to check
        against the photo; ``None`` where the format does not say.
    """

    relative_path: str
    image_path: pathlib.Path
    points: np.ndarray
    annotation_format: str
    annotation_path: pathlib.Path | None
    unused_shapes: dict[str, int]
    annotated_hw: tuple[int, int] | None = None


@dataclasses.dataclass(frozen=True)
class ImageAnnotation:
    """An image found in a folder and where its annotation is, before anything is read.

    Attributes:
      relative_path: the image's path relative to the folder, ``/``-separated.
      image_path: the image file.
      annotation_format: the winning format (:data:`FORMAT_PRECEDENCE`) or ``"none"``.
      annotation_path: the winning annotation file, or ``None``.
      overridden: ``(format, file)`` of the other annotations of this image, which lost.
    """

    relative_path: str
    image_path: pathlib.Path
    annotation_format: str
    annotation_path: pathlib.Path | None
    overridden: tuple[tuple[str, pathlib.Path], ...]
    # Returns (points, unused shapes, annotated (height, width) or None).
    _read: Callable[[], tuple[np.ndarray, dict[str, int], tuple[int, int] | None]] = dataclasses.field(
        repr=False, compare=False
    )

    def read(self) -> AnnotatedImage:
        """Reads the points.

        Raises:
          BadExampleError: the annotation file is unreadable or malformed (names the file).
        """
        points, unused, annotated_hw = self._read()
        return AnnotatedImage(
            self.relative_path, self.image_path, points, self.annotation_format, self.annotation_path, unused,
            annotated_hw,
        )  # fmt: skip


@dataclasses.dataclass(frozen=True)
class FolderScan:
    """What :func:`find_annotated_images` found.

    Attributes:
      images: every image with its annotation, in natural order of the relative paths.
      unannotated: relative paths of the images without any annotation (taken as having no
        heads with ``missing_annotation="empty"``).
      ignored_files: files that are neither an image nor an annotation of one (relative
        paths), e.g. a ``README.txt``, hidden files, or a LabelMe JSON whose image is missing.
      unmatched: ``(annotation file, image name)`` of entries in a CVAT XML or folder CSV that
        name no image of the folder.
    """

    images: tuple[ImageAnnotation, ...]
    unannotated: tuple[str, ...]
    ignored_files: tuple[str, ...]
    unmatched: tuple[tuple[str, str], ...]


# --- per-format readers -------------------------------------------------------------------------


def read_labelme_json(path) -> tuple[np.ndarray, dict[str, int]]:
    """Reads the head points of a LabelMe JSON file.

    Args:
      path: a ``.json`` file as LabelMe 5 saves it (``{"version", "flags", "shapes": [{"label",
        "points": [[x, y], ...], "group_id", "description", "shape_type", "flags", "mask"}],
        "imagePath", "imageData", "imageHeight", "imageWidth"}``).

    Returns:
      ``(points, unused_shapes)``: float32 ``[n, 2]`` ``(x, y)`` pixels of the shapes with
      ``shape_type == "point"`` (LabelMe 3, which wrote no ``shape_type``, counts a shape with one
      point as a point), and ``{shape_type: count}`` of the other shapes.

    Raises:
      BadExampleError: not JSON, no ``shapes`` list, or a point shape without exactly one
        ``[x, y]`` pair.
    """
    points, unused, _ = _read_labelme(path)
    return points, unused


def _read_labelme(path):
    path = pathlib.Path(path)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BadExampleError(path, f"cannot read the LabelMe JSON ({error})") from error
    if not isinstance(document, dict) or not isinstance(document.get("shapes"), list):
        raise BadExampleError(path, "not a LabelMe annotation: no 'shapes' list")
    points, unused = [], collections.Counter()
    for number, shape in enumerate(document["shapes"]):
        if not isinstance(shape, dict) or not isinstance(shape.get("points"), list):
            raise BadExampleError(path, f"shape {number} has no 'points' list")
        kind = shape.get("shape_type") or ("point" if len(shape["points"]) == 1 else "polygon")
        if kind != "point":
            unused[str(kind)] += 1
            continue
        if len(shape["points"]) != 1:
            raise BadExampleError(
                path, f"shape {number} (label {shape.get('label')!r}) is a point with {len(shape['points'])} points"
            )
        points.append(shape["points"][0])
    size = _image_hw(document.get("imageHeight"), document.get("imageWidth"))
    return as_points(points, path, "LabelMe points"), dict(unused), size


def _image_hw(height, width) -> tuple[int, int] | None:
    try:
        return (int(height), int(width)) if height is not None and width is not None else None
    except (TypeError, ValueError):
        return None


def read_cvat_xml(path) -> tuple[dict[str, np.ndarray], dict[str, dict[str, int]]]:
    """Reads every image's head points from a CVAT for images 1.1 ``annotations.xml``.

    Args:
      path: the XML file (``<annotations><version>1.1</version><meta>...</meta><image id name
        width height><points label source occluded points="x1,y1;x2,y2" z_order/>...</image>``).

    Returns:
      ``(points, unused_shapes)``: ``{image name: float32 [n, 2] (x, y)}`` for every
      ``<image>`` (an image without ``<points>`` has no heads), and ``{image name: {shape:
      count}}`` of its other shapes (``box``, ``polygon``…). Names are as CVAT wrote them.

    Raises:
      ValueError: not XML, not a CVAT ``<annotations>`` file, an ``<image>`` without a name, or
        a ``points`` attribute that is not ``x,y`` pairs (the message names the file and the
        image).
    """
    points, unused, _ = _read_cvat(path)
    return points, unused


def _read_cvat(path):
    path = pathlib.Path(path)
    try:
        root = ElementTree.parse(path).getroot()
    except (OSError, ElementTree.ParseError) as error:
        raise BadExampleError(path, f"cannot read the CVAT XML ({error})") from error
    if root.tag != "annotations":
        raise BadExampleError(path, f"not a CVAT annotations file: the root element is <{root.tag}>")
    points, unused, sizes = {}, {}, {}
    for image in root.iter("image"):
        name = image.get("name")
        if not name:
            raise BadExampleError(path, f"an <image id={image.get('id')!r}> has no name")
        heads, others = [], collections.Counter()
        for shape in image:
            if shape.tag == "points":
                heads.extend(_cvat_pairs(shape.get("points", ""), path, name))
            elif shape.tag in _CVAT_SHAPES:
                others[shape.tag] += 1
        if name in points:
            raise BadExampleError(path, f"image {name!r} appears twice")
        points[name] = as_points(heads, path, f"CVAT points of {name}")
        unused[name] = dict(others)
        sizes[name] = _image_hw(image.get("height"), image.get("width"))
    return points, unused, sizes


def _cvat_pairs(text: str, path, name: str) -> list[tuple[float, float]]:
    pairs = []
    for pair in filter(None, text.strip().split(";")):
        try:
            x, y = (float(value) for value in pair.split(","))
        except ValueError as error:
            raise BadExampleError(path, f"image {name!r}: points {pair!r} is not 'x,y'") from error
        pairs.append((x, y))
    return pairs


def read_points_table(path) -> np.ndarray:
    """Reads the head points of one image from a CSV / TXT file.

    Args:
      path: a text file with one head per line, ``x`` and ``y`` separated by a comma,
        semicolon or white space; further columns are ignored. A first line that is not numeric
        is a header; a header naming ``x`` and ``y`` (any case) selects those columns. Blank
        lines are skipped; an empty file means no heads.

    Returns:
      float32 ``[n, 2]`` ``(x, y)`` pixels.

    Raises:
      BadExampleError: unreadable, or a line without two numbers (names the line).
    """
    path = pathlib.Path(path)
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise BadExampleError(path, f"cannot read the point file ({error})") from error
    rows = [(number, _SEPARATORS.split(line.strip())) for number, line in enumerate(lines, 1) if line.strip()]
    columns = (0, 1)
    if rows and not _is_number(rows[0][1][0]):
        header = [name.strip().strip('"').lower() for name in rows.pop(0)[1]]
        if "x" in header and "y" in header:
            columns = (header.index("x"), header.index("y"))
    points = []
    for number, fields in rows:
        try:
            points.append((float(fields[columns[0]]), float(fields[columns[1]])))
        except (IndexError, ValueError) as error:
            raise BadExampleError(path, f"line {number} is not 'x,y': {lines[number - 1].strip()!r}") from error
    return as_points(points, path, "points")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def read_folder_csv(path) -> dict[str, np.ndarray | BadExampleError]:
    """Reads a folder-wide CSV of head points (columns ``image``, ``x``, ``y``).

    Args:
      path: a CSV with a header naming an image column (``image``, ``filename``, ``file`` or
        ``image_name``) and ``x`` and ``y``; other columns are ignored. One row per head; a row
        with ``x`` and ``y`` empty lists an image that has no heads.

    Returns:
      ``{image name as written: float32 [n, 2] (x, y)}``; an image whose rows cannot be read
      maps to the :class:`BadExampleError` naming the CSV and the line, so that only that image
      is a bad example.

    Raises:
      BadExampleError: unreadable, or the header lacks the image, ``x`` or ``y`` column.
    """
    path = pathlib.Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise BadExampleError(path, f"cannot read the CSV ({error})") from error
    reader = csv.reader(io.StringIO(text))
    header = [name.strip().lower() for name in next(reader, [])]
    image_column = next((header.index(name) for name in _IMAGE_COLUMNS if name in header), None)
    if image_column is None or "x" not in header or "y" not in header:
        raise BadExampleError(path, f"a folder CSV needs the columns image, x and y; the header is {header}")
    x_column, y_column = header.index("x"), header.index("y")
    rows: dict[str, list] = {}
    errors: dict[str, BadExampleError] = {}
    for row in reader:
        if not any(field.strip() for field in row):
            continue
        line = reader.line_num
        name = row[image_column].strip() if image_column < len(row) else ""
        if not name:
            raise BadExampleError(path, f"line {line} names no image: {row}")
        x = row[x_column].strip() if x_column < len(row) else ""
        y = row[y_column].strip() if y_column < len(row) else ""
        heads = rows.setdefault(name, [])
        if not x and not y:
            continue  # the image is listed with no heads
        try:
            heads.append((float(x), float(y)))
        except ValueError:
            errors.setdefault(name, BadExampleError(path, f"line {line} ({name}): x, y = {x!r}, {y!r} are not numbers"))
    result: dict[str, np.ndarray | BadExampleError] = {}
    for name, heads in rows.items():
        if name in errors:
            result[name] = errors[name]
            continue
        try:
            result[name] = as_points(heads, path, f"points of {name}")
        except BadExampleError as error:
            result[name] = error
    return result


def read_mat_points(path) -> np.ndarray:
    """Reads head points from a ShanghaiTech (``image_info``) or UCF-QNRF (``annPoints``) ``.mat``.

    Returns:
      float32 ``[m, 2]`` ``(x, y)`` pixels.

    Raises:
      BadExampleError: not a MATLAB file, or neither variable is in it.
    """
    # Imported here: the data set builders register themselves with TFDS when imported.
    from gcc_jax.data.shanghaitech import read_shanghaitech_mat
    from gcc_jax.data.ucf_qnrf import read_ann_points_mat

    path = pathlib.Path(path)
    try:
        names = {name for name, _, _ in scipy.io.whosmat(path)}
    except Exception as error:  # scipy raises many types (ValueError, TypeError, OSError…)
        raise BadExampleError(path, f"cannot read the .mat file ({type(error).__name__}: {error})") from error
    if "image_info" in names:
        return read_shanghaitech_mat(path)
    if "annPoints" in names:
        return read_ann_points_mat(path)
    raise BadExampleError(path, f"neither 'image_info' (ShanghaiTech) nor 'annPoints' (UCF-QNRF) in it (found {sorted(names)})")


# --- the folder ---------------------------------------------------------------------------------


def find_annotated_images(root, *, missing_annotation: str = "error") -> FolderScan:
    """Finds every image below ``root`` and where its head points are annotated.

    Per-image annotation files are only located here; the folder-wide files (CVAT XML, folder
    CSV) are parsed, since they say which images they annotate. See the module docstring for
    the formats and their precedence.

    Args:
      root: the folder (sub-folders are searched; names starting with ``.`` are skipped and
        listed in ``ignored_files``).
      missing_annotation: ``"error"`` (default) or ``"empty"``, see
        :data:`MISSING_ANNOTATION_POLICIES`.

    Returns:
      :class:`FolderScan`.

    Raises:
      ValueError: ``root`` is not a folder or holds no image; ``missing_annotation="error"`` and
        some images have no annotation (all are listed, with how to take them as images with no
        heads); two images share a file-name stem in one folder (so ``stem.json`` is
        ambiguous); a CVAT XML or folder CSV is malformed as a whole (names the file).
    """
    if missing_annotation not in MISSING_ANNOTATION_POLICIES:
        raise ValueError(f"missing_annotation must be one of {MISSING_ANNOTATION_POLICIES}, got {missing_annotation!r}")
    root = pathlib.Path(root)
    if not root.is_dir():
        raise ValueError(f"{root} is not a folder")
    files, hidden = _walk(root)
    images = sorted((path for path in files if path.suffix.lower() in IMAGE_EXTENSIONS), key=lambda p: natural_key(_rel(p, root)))
    if not images:
        raise ValueError(f"{root} holds no image ({', '.join(IMAGE_EXTENSIONS)}, any case, sub-folders included)")
    by_stem: dict[tuple[pathlib.Path, str], list[pathlib.Path]] = collections.defaultdict(list)
    for image in images:
        by_stem[(image.parent, image.stem)].append(image)
    shared = sorted(_rel(p, root) for group in by_stem.values() if len(group) > 1 for p in group)
    if shared:
        raise ValueError(
            f"images in {root} share a name up to the extension, so their annotation files would be the same: "
            f"{', '.join(shared)}; rename one of each"
        )

    used: set[pathlib.Path] = set()
    folder_wide, unmatched = _folder_wide_annotations(root, files, images, used)
    found, unannotated = [], []
    for image in images:
        candidates = _per_image_annotations(image, used) + folder_wide.get(image, [])
        candidates.sort(key=lambda candidate: FORMAT_PRECEDENCE.index(candidate[0]))
        relative = _rel(image, root)
        if not candidates:
            unannotated.append(relative)
            found.append(ImageAnnotation(relative, image, "none", None, (), _no_heads))
            continue
        (kind, path, read), *others = candidates
        if others:
            _log.warning(
                "%s: annotated in several formats; using %s (%s), not %s", image, kind, path,
                ", ".join(f"{k} ({p})" for k, p, _ in others),
            )  # fmt: skip
        found.append(ImageAnnotation(relative, image, kind, path, tuple((k, p) for k, p, _ in others), read))
    if unannotated and missing_annotation == "error":
        raise ValueError(
            f"{len(unannotated)} of {len(images)} images in {root} have no annotation: {', '.join(unannotated)}. "
            "Annotate them, or, if they show nobody, take them as images with no heads "
            "(--missing_annotation empty; missing_annotation='empty')"
        )
    ignored = sorted(
        [_rel(p, root) for p in files if p not in used and p.suffix.lower() not in IMAGE_EXTENSIONS] + hidden,
        key=natural_key,
    )
    return FolderScan(tuple(found), tuple(unannotated), tuple(ignored), tuple(unmatched))


def read_annotated_folder(root, *, missing_annotation: str = "error") -> list[AnnotatedImage]:
    """Reads every image's head points below ``root`` (no image is decoded).

    Args:
      root: the folder (see :func:`find_annotated_images`).
      missing_annotation: ``"error"`` or ``"empty"`` (see :data:`MISSING_ANNOTATION_POLICIES`).

    Returns:
      One :class:`AnnotatedImage` per image, in natural order of the relative paths.

    Raises:
      ValueError: as :func:`find_annotated_images`.
      BadExampleError: an annotation cannot be read (names the file).
    """
    return [image.read() for image in find_annotated_images(root, missing_annotation=missing_annotation).images]


def _walk(root: pathlib.Path) -> tuple[list[pathlib.Path], list[str]]:
    files, hidden = [], []
    for folder, folders, names in os.walk(root):
        hidden.extend(_rel(pathlib.Path(folder, name), root) for name in folders + names if name.startswith("."))
        folders[:] = sorted(name for name in folders if not name.startswith("."))
        files.extend(pathlib.Path(folder, name) for name in sorted(names) if not name.startswith("."))
    return files, hidden


def _rel(path: pathlib.Path, root: pathlib.Path) -> str:
    return path.relative_to(root).as_posix()


def _no_heads():
    return np.zeros([0, 2], np.float32), {}, None


def _points_only(reader):
    return lambda path: (reader(path), {}, None)


def _per_image_annotations(image: pathlib.Path, used: set) -> list[tuple[str, pathlib.Path, Callable]]:
    """``(format, file, read)`` of the annotation files beside ``image`` (LabelMe, CSV / TXT, .mat)."""
    stem = image.stem
    beside = {
        "labelme": [image.with_name(stem + ext) for ext in (".json", ".JSON")],
        "csv": [image.with_name(stem + ext) for ext in (".csv", ".txt", ".CSV", ".TXT")],
        "mat": [
            folder / name
            for folder in [image.parent] + [image.parent.parent / sub for sub in _MAT_FOLDERS]
            for name in (f"{stem}.mat", f"GT_{stem}.mat", f"{stem}_ann.mat")
        ],
    }
    readers = {"labelme": _read_labelme, "csv": _points_only(read_points_table), "mat": _points_only(read_mat_points)}
    found = []
    for kind, paths in beside.items():
        path = next((p for p in paths if p.is_file()), None)
        if path is not None:
            used.add(path)
            found.append((kind, path, lambda read=readers[kind], path=path: read(path)))
    return found


def _folder_wide_annotations(root, files, images, used):
    """``({image: [(format, file, read)]}, unmatched)`` from CVAT XMLs and folder CSVs."""
    per_image: dict[pathlib.Path, list] = collections.defaultdict(list)
    unmatched = []
    image_set = set(images)
    stems = {(image.parent, image.stem) for image in images}
    for path in files:
        suffix = path.suffix.lower()
        if path.name.lower() == "annotations.xml":
            points, unused, sizes = _read_cvat(path)
            entries = {name: (lambda p=points[name], u=unused[name], s=sizes[name]: (p, u, s)) for name in points}
            kind = "cvat"
        elif suffix == ".csv" and (path.parent, path.stem) not in stems and _has_image_column(path):
            table = read_folder_csv(path)
            entries = {name: (lambda value=value: _value_or_raise(value)) for name, value in table.items()}
            kind = "folder_csv"
        else:
            continue
        used.add(path)
        below = [image for image in images if path.parent in image.parents]
        for name, read in entries.items():
            image = _resolve(name, path.parent, below, image_set)
            if image is None:
                unmatched.append((_rel(path, root), name))
                _log.warning("%s names %r, which is no image of %s", path, name, root)
                continue
            if any(k == kind for k, _, _ in per_image[image]):
                raise BadExampleError(path, f"{name!r} is the image {_rel(image, root)}, already annotated by another {kind} file")
            per_image[image].append((kind, path, read))
    return per_image, unmatched


def _has_image_column(path: pathlib.Path) -> bool:
    try:
        with path.open(encoding="utf-8-sig", newline="") as file:
            header = [name.strip().lower() for name in next(csv.reader(file), [])]
    except (OSError, UnicodeDecodeError):
        return False
    return any(name in header for name in _IMAGE_COLUMNS)


def _value_or_raise(value):
    if isinstance(value, BadExampleError):
        raise value
    return value, {}, None


def _resolve(name: str, folder: pathlib.Path, below: list[pathlib.Path], image_set: set) -> pathlib.Path | None:
    """The image that ``name`` (as written in a folder-wide file in ``folder``) designates."""
    relative = pathlib.PurePosixPath(name.replace("\\", "/"))
    for candidate in (folder / relative, folder / "images" / relative):
        if candidate in image_set:
            return candidate
    same_name = [image for image in below if image.name == relative.name]
    return same_name[0] if len(same_name) == 1 else None
