"""TFDS builder of a folder of your own images annotated with head points (data set ``folder``).

::

    python -m gcc_jax.data.build --dataset folder --manual_dir my_photos --data_dir my_tfds

reads every image below ``--manual_dir`` with its annotation (LabelMe, CVAT, CSV / TXT, folder
CSV or ``.mat``: :mod:`gcc_jax.data.point_annotations` says how each is found and which wins)
and prepares it like the public data sets: ``image`` (uint8 ``[H, W, 3]``), ``image/filename``
(the image's path relative to the folder, ``/``-separated) and ``points`` (float32 ``[n, 2]``
``(x, y)`` pixels). Both loaders, training, evaluation and prediction read it unchanged
(``config.dataset.name = "folder"``, ``config.dataset.data_dir`` = the build's ``--data_dir``).

**Splits.** When the folder's top level has ``train/``, ``val/`` or ``test/`` sub-folders (any
case; also ``training/``, ``valid/``, ``validation/``, ``testing/`` and ShanghaiTech's
``train_data/``, ``test_data/``), they are the splits, and
every image must sit in one of them. Otherwise each image goes to ``test`` when
``u < test_fraction``, to ``val`` when ``u < test_fraction + val_fraction``, else to ``train``,
where ``u`` in ``[0, 1)`` comes from the SHA-256 of its relative path (:func:`hash_split`): an
image's split depends on its own path only, so photos added later never move the ones already
there (defaults: 0.1 and 0.1). A split that receives no image is not written. Which file went
where is stored (``info.metadata["files"]``).

**Bad input**, as for the other builders (:class:`~gcc_jax.data._builder_base.CrowdBuilder`):
an unreadable image or annotation names the file (``on_bad_example="skip"`` leaves it out and
lists it); ``out_of_image`` applies to points outside ``[0, W] × [0, H]``; images without any
annotation are refused with their list unless ``missing_annotation="empty"`` takes them as
images with no heads. Photos are stored upright: an EXIF orientation (phone photos) is applied,
as annotation tools and ``gcc_jax.predict`` show them, and such an image is stored as a
lossless PNG. An annotation that names the size of the image it was made on (LabelMe, CVAT)
must match the upright photo, else it is a bad example (annotated on a resized copy, or by a
tool that turned the photo otherwise). Counts (images and heads per split, images without
annotation, unused shapes, annotations overridden by another format, skipped files, points
outside the image, ignored files) are logged at the end and stored in
``info.metadata["counts"]``.
"""

from __future__ import annotations

import hashlib
import io
import logging
import pathlib
import warnings

import tensorflow_datasets as tfds
from PIL import Image, ImageOps

from gcc_jax.data import _builder_base as base
from gcc_jax.data.point_annotations import (
    MISSING_ANNOTATION_POLICIES,
    AnnotatedImage,
    FolderScan,
    ImageAnnotation,
    find_annotated_images,
)

__all__ = ["SPLIT_FOLDERS", "CrowdFolder", "hash_split", "read_upright_image"]

_log = logging.getLogger(__name__)

# Top-level sub-folder names (lower case) that decide an image's split.
SPLIT_FOLDERS = {
    "train": "train", "training": "train", "train_data": "train",
    "val": "val", "valid": "val", "validation": "val",
    "test": "test", "testing": "test", "test_data": "test",
}  # fmt: skip
_SPLITS = ("train", "val", "test")
_DEFAULT_FRACTION = 0.1
_EXIF_ORIENTATION = 0x0112

_INSTRUCTIONS = """\
Point --manual_dir at a folder of images (.jpg, .jpeg, .png, .webp, .bmp; sub-folders are
searched) annotated with head points, each image with one of:

  photo.json                 LabelMe (point tool), beside photo.jpg
  annotations.xml            CVAT for images 1.1 export, anywhere in the folder
  photo.csv / photo.txt      x,y per line, beside photo.jpg
  heads.csv                  one CSV for the folder: image,x,y (image,, = no heads)
  GT_photo.mat / photo.mat   ShanghaiTech image_info or UCF-QNRF annPoints

Optional train/ val/ test/ sub-folders give the splits; without them the splits come from a
hash of each image's path (--val_fraction, --test_fraction).
"""


def hash_split(relative_path: str, *, val_fraction: float, test_fraction: float) -> str:
    """The split of an image from its path alone.

    ``u = int(sha256(relative_path)[:16 hex]) / 2⁶⁴`` in ``[0, 1)``: ``"test"`` if
    ``u < test_fraction``, ``"val"`` if ``u < test_fraction + val_fraction``, else ``"train"``.

    Args:
      relative_path: the image's path relative to the folder, ``/``-separated.
      val_fraction: expected share of ``val`` images, in ``[0, 1]``.
      test_fraction: expected share of ``test`` images, in ``[0, 1]``.
    """
    digest = hashlib.sha256(relative_path.encode("utf-8")).hexdigest()
    u = int(digest[:16], 16) / 2.0**64
    if u < test_fraction:
        return "test"
    return "val" if u < test_fraction + val_fraction else "train"


def read_upright_image(path) -> tuple[bytes, int, int]:
    """Reads an image file as :func:`~gcc_jax.data._builder_base.read_image` does, upright.

    Returns:
      ``(encoded bytes, height, width)``: a photo with an EXIF orientation other than 1 is
      turned as a photo viewer shows it (``PIL.ImageOps.exif_transpose``) and re-encoded as a
      lossless RGB PNG; any other image as ``read_image`` returns it.

    Raises:
      BadExampleError: the file is missing, empty, truncated or not an image.
    """
    encoded, height, width = base.read_image(path)  # checks the whole file first
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(path) as image:
            if image.getexif().get(_EXIF_ORIENTATION, 1) in (None, 1):
                return encoded, height, width
            upright = ImageOps.exif_transpose(image).convert("RGB")
    buffer = io.BytesIO()
    upright.save(buffer, format="PNG")
    _log.info("%s: turned upright by its EXIF orientation and stored as PNG", path)
    return buffer.getvalue(), upright.height, upright.width


def read_annotated_image(image: ImageAnnotation) -> tuple[AnnotatedImage, bytes, int, int]:
    """Reads one annotated photo and its annotation as the folder data set stores them.

    Args:
      image: a photo found by :func:`~gcc_jax.data.point_annotations.find_annotated_images`.

    Returns:
      ``(annotation, encoded bytes, height, width)``: the points are in the coordinates of the
      upright photo (:func:`read_upright_image`); points outside it are left to the caller.

    Raises:
      BadExampleError: the photo or its annotation cannot be read, or a tool that records the
        image size (LabelMe, CVAT) annotated an image of another size than the upright photo
        (names the annotation file).
    """
    annotated = image.read()
    encoded, height, width = read_upright_image(image.image_path)
    if annotated.annotated_hw is not None and tuple(annotated.annotated_hw) != (height, width):
        tool_h, tool_w = annotated.annotated_hw
        turned = " (turned by 90 degrees: the tool did not apply the photo's EXIF orientation)" if (
            tool_w, tool_h) == (height, width) else ""  # fmt: skip
        raise base.BadExampleError(
            annotated.annotation_path or image.image_path,
            f"annotates a {tool_w}x{tool_h} image, but {image.relative_path} is {width}x{height} "
            f"as stored upright{turned}; annotate the photo itself",
        )  # fmt: skip
    return annotated, encoded, height, width


class CrowdFolder(base.CrowdBuilder):
    """A folder of your own images with head-point annotations (see the module docstring).

    Args:
      missing_annotation: ``"error"`` (default: images without annotation stop the build,
        listed) or ``"empty"`` (they are images with no heads).
      val_fraction: share of images hashed into ``val`` when the folder has no split
        sub-folders (default 0.1).
      test_fraction: share hashed into ``test`` (default 0.1).
      **kwargs: :class:`~gcc_jax.data._builder_base.CrowdBuilder`'s (``on_bad_example``,
        ``out_of_image``, ``data_dir``…).
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Images of a folder with head points from LabelMe, CVAT, CSV or .mat files."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = _INSTRUCTIONS

    def __init__(
        self,
        *,
        missing_annotation: str = "error",
        val_fraction: float | None = None,
        test_fraction: float | None = None,
        **kwargs,
    ):
        if missing_annotation not in MISSING_ANNOTATION_POLICIES:
            raise ValueError(f"missing_annotation must be one of {MISSING_ANNOTATION_POLICIES}, got {missing_annotation!r}")
        for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
            if value is not None and not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {value}")
        if (val_fraction or 0.0) + (test_fraction or 0.0) > 1.0:
            raise ValueError(f"val_fraction + test_fraction must not exceed 1, got {val_fraction} + {test_fraction}")
        self._missing_annotation = missing_annotation
        self._val_fraction = val_fraction
        self._test_fraction = test_fraction
        super().__init__(**kwargs)

    def build_options(self, manual_dir) -> dict:
        """What decides this data set's content besides the files: recorded in the metadata, and
        compared by :func:`gcc_jax.data.build.build_dataset` before it reuses a prepared copy."""
        return {
            "source_folder": str(pathlib.Path(manual_dir).resolve()),
            "missing_annotation": self._missing_annotation,
            "val_fraction": self._val_fraction,
            "test_fraction": self._test_fraction,
        }

    def _info(self) -> tfds.core.DatasetInfo:
        return self._crowd_info(
            description=(
                "A folder of images with head-point annotations (LabelMe, CVAT for images 1.1, CSV / TXT "
                "or ShanghaiTech / UCF-QNRF .mat). Images as stored (EXIF-rotated photos upright); points "
                "are (x, y) pixels; image/filename is the path relative to the folder."
            ),
            homepage="",  # the user's own data: no page, no citation
            citation="",
        )

    def _split_generators(self, dl_manager):
        root = pathlib.Path(dl_manager.manual_dir)
        if not root.is_dir():
            raise ValueError(f"manual_dir {root} does not exist.\n{_INSTRUCTIONS}")
        scan = find_annotated_images(root, missing_annotation=self._missing_annotation)
        assignment = self._assign_splits(root, scan)
        metadata = self._metadata()
        metadata["build_options"] = self.build_options(root)
        metadata["files"] = {split: [image.relative_path for image in images] for split, images in assignment.items()}
        metadata["images_without_annotation"] = list(scan.unannotated)
        metadata["overridden_annotations"] = [
            {"file": image.relative_path, "used": image.annotation_format,
             "overridden": [{"format": kind, "file": str(path)} for kind, path in image.overridden]}
            for image in scan.images if image.overridden
        ]  # fmt: skip
        metadata["unused_shapes"] = {}
        metadata["counts"] = {
            "images": {split: 0 for split in assignment},
            "heads": {split: 0 for split in assignment},
            "images_without_annotation": len(scan.unannotated),
            "overridden_annotations": len(metadata["overridden_annotations"]),
            "ignored_files": len(scan.ignored_files),
            "unmatched_names": len(scan.unmatched),
        }
        if scan.ignored_files:
            self._ignore_files("all", root, scan.ignored_files)
        for annotation_file, name in scan.unmatched:  # already logged by the scan
            metadata["warnings"].append(
                {"split": "all", "file": str(root / annotation_file), "problem": f"names {name!r}, which is no image of the folder"}
            )
        for split in _SPLITS:
            if split not in assignment:
                _log.warning("%s: no image goes to the %s split; it is not written", root, split)
        return {split: self._generate_examples(images, split) for split, images in assignment.items()}

    def _assign_splits(self, root: pathlib.Path, scan: FolderScan) -> dict[str, list]:
        by_folder = {image.relative_path: SPLIT_FOLDERS.get(image.relative_path.split("/")[0].lower()) for image in scan.images}
        assignment: dict[str, list] = {split: [] for split in _SPLITS}
        if any(by_folder.values()):
            if self._val_fraction is not None or self._test_fraction is not None:
                raise ValueError(
                    f"{root} has split sub-folders ({', '.join(sorted({s for s in by_folder.values() if s}))}), which "
                    "decide the splits: drop val_fraction / test_fraction (--val_fraction, --test_fraction), or "
                    "move the images out of the split folders to have them hashed"
                )
            outside = [path for path, split in by_folder.items() if split is None]
            if outside:
                raise ValueError(
                    f"{root} has train/ val/ test/ sub-folders, but {len(outside)} image(s) lie outside them: "
                    f"{', '.join(outside)}; move each into one of them"
                )
            for image in scan.images:
                assignment[by_folder[image.relative_path]].append(image)
        else:
            val = _DEFAULT_FRACTION if self._val_fraction is None else self._val_fraction
            test = _DEFAULT_FRACTION if self._test_fraction is None else self._test_fraction
            for image in scan.images:
                assignment[hash_split(image.relative_path, val_fraction=val, test_fraction=test)].append(image)
        return {split: images for split, images in assignment.items() if images}

    def _generate_examples(self, images, split: str):
        metadata = self._metadata()

        def make(image):
            annotated, encoded, height, width = read_annotated_image(image)
            source = annotated.annotation_path or image.image_path
            points, _ = self._inside_image(split, annotated.points, height, width, source)
            for kind, count in annotated.unused_shapes.items():
                metadata["unused_shapes"][kind] = metadata["unused_shapes"].get(kind, 0) + count
            metadata["counts"]["images"][split] += 1
            metadata["counts"]["heads"][split] += len(points)
            return {"image": encoded, "image/filename": image.relative_path, "points": points}

        yield from self._guarded(split, ((image.relative_path, (lambda i=image: make(i))) for image in images))
        counts = metadata["counts"]
        counts["skipped"] = len(metadata["skipped"])
        counts["points_out_of_image"] = sum(entry["count"] for entry in metadata["out_of_image"])
        counts["unused_shapes"] = sum(metadata["unused_shapes"].values())
        _log.info(
            "%s: %d images, %d heads; so far %d skipped, %d points outside their image, %d unused shapes",
            split, counts["images"][split], counts["heads"][split], counts["skipped"], counts["points_out_of_image"],
            counts["unused_shapes"],
        )  # fmt: skip
