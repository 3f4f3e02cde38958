"""A folder of annotated images read as it lies, without building a data set: an example source.

:class:`AnnotatedFolderSource` gives the pipelines (:func:`gcc_jax.data.make_eval_dataset`'s
``source=``) every image below a folder with its head points, read by the same readers as the
``folder`` data set (:mod:`gcc_jax.data.point_annotations`) and prepared as its builder
prepares them (:mod:`gcc_jax.data.folder`): photos turned upright by their EXIF orientation,
a LabelMe / CVAT annotation made on an image of another size refused (naming the file), points
outside the image dropped (the builder's default ``out_of_image="drop"``), the file named by
its path relative to the folder. So ``python -m gcc_jax.evaluate --folder DIR`` scores
the very examples a build of ``DIR`` would hold.
"""

from __future__ import annotations

import logging
import os
import pathlib
import warnings

import numpy as np
from PIL import Image

from gcc_jax.data._builder_base import BadExampleError
from gcc_jax.data.folder import read_annotated_image
from gcc_jax.data.point_annotations import find_annotated_images

__all__ = ["AnnotatedFolderSource"]

_log = logging.getLogger(__name__)

_EXIF_ORIENTATION = 0x0112
# EXIF orientations that turn the photo by a quarter: upright, width and height swap.
_QUARTER_TURNS = (5, 6, 7, 8)


class AnnotatedFolderSource:
    """Every image below a folder with its head points, in natural order of the relative paths.

    ``read(i)`` is a source example (:mod:`gcc_jax.data.sources`): ``image`` encoded bytes,
    ``points`` float32 ``[n, 2]`` ``(x, y)`` pixels of the upright image, ``count``,
    ``filename`` (the path relative to the folder, ``/``-separated).

    Args:
      root: the folder (sub-folders are searched).
      missing_annotation: ``"error"`` (images without annotation are refused, listed) or
        ``"empty"`` (they are images with no heads).

    Raises:
      ValueError: as :func:`gcc_jax.data.point_annotations.find_annotated_images` (no such
        folder, no image, images without annotation...).
    """

    encoded = True
    has_boxes = False
    # The data set whose examples it reproduces: its resize rule applies in the pipelines.
    dataset = "folder"

    def __init__(self, root: str | os.PathLike, *, missing_annotation: str = "error"):
        self.root = pathlib.Path(root)
        scan = find_annotated_images(self.root, missing_annotation=missing_annotation)
        self._images = scan.images
        # The folder and when its files last changed, for the decoded-image caches.
        newest = max(os.stat(image.image_path).st_mtime_ns for image in self._images)
        self.cache_key = ("annotated_folder", str(self.root.resolve()), newest)

    def __len__(self) -> int:
        return len(self._images)

    @property
    def files(self) -> list[str]:
        """The images' paths relative to the folder, in the source's order."""
        return [image.relative_path for image in self._images]

    def read(self, index: int) -> dict:
        """The example ``index``.

        Raises:
          BadExampleError: its image or annotation cannot be read, or the annotation was made on
          an image of another size (names the file).
        """
        entry = self._images[int(index)]
        annotated, encoded, height, width = read_annotated_image(entry)
        points = np.asarray(annotated.points, np.float32).reshape(-1, 2)
        inside = (points[:, 0] >= 0) & (points[:, 0] <= width) & (points[:, 1] >= 0) & (points[:, 1] <= height)
        if not inside.all():
            _log.warning(
                "%s: %d of %d points lie outside the %dx%d image; dropped, as the folder builder drops them",
                annotated.annotation_path, int((~inside).sum()), len(points), width, height,
            )  # fmt: skip
            points = points[inside]
        return {"image": encoded, "points": points, "count": np.float32(len(points)), "filename": entry.relative_path}

    def image_size(self, index: int) -> tuple[int, int]:
        """``(height, width)`` of the upright image, from the file's header (no decoding).

        Raises:
          BadExampleError: the file is not a readable image (names it).
        """
        path = self._images[int(index)].image_path
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(path) as image:
                    width, height = image.size
                    turned = image.getexif().get(_EXIF_ORIENTATION, 1) in _QUARTER_TURNS
        except (OSError, SyntaxError, ValueError) as error:
            raise BadExampleError(path, f"cannot read the image ({error})") from error
        return (width, height) if turned else (height, width)
