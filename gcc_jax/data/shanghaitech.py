"""TFDS builder for ShanghaiTech Part A and Part B (Zhang et al., CVPR 2016).

Raw layout, as distributed::

    <manual_dir>/[ShanghaiTech/]part_A[_final]/train_data/images/IMG_1.jpg
                                              /train_data/ground-truth/GT_IMG_1.mat   (or ground_truth/)
                                              /test_data/...
                               part_B[_final]/...

``GT_IMG_n.mat`` holds ``image_info[0, 0][0, 0]['location']`` (``[m, 2]`` float64 ``(x, y)``
pixels) and ``['number']`` (m). Images are the files named ``IMG_<n>.jpg`` (or .jpeg/.png);
anything else in ``images/`` (``Thumbs.db``, a stray ``000.png``…) is ignored with a logged
warning. An ``IMG_<n>`` without its ``GT_IMG_<n>.mat`` (or the reverse) is a bad example.
Part A has 300 train / 182 test images, part B 400 / 316.
"""

from __future__ import annotations

import logging
import pathlib
import re

import numpy as np
import tensorflow_datasets as tfds

from gcc_jax.data import _builder_base as base

__all__ = ["Shanghaitech", "read_shanghaitech_mat"]

_log = logging.getLogger(__name__)

_IMAGE_NAME = re.compile(r"^(IMG_\d+)\.(jpe?g|png)$", re.IGNORECASE)
_GT_NAME = re.compile(r"^GT_(IMG_\d+)\.mat$", re.IGNORECASE)
_EXPECTED = {"part_a": {"train": 300, "test": 182}, "part_b": {"train": 400, "test": 316}}

_INSTRUCTIONS = """\
Download ShanghaiTech (Part A and Part B) from the authors' release (the links are listed at
https://github.com/desenzhou/ShanghaiTechDataset) and unpack it into the manual directory, so
that it holds part_A/ and part_B/ (or part_A_final/ and part_B_final/), possibly inside one
extra folder such as ShanghaiTech/:

  <manual_dir>/part_A/train_data/images/IMG_1.jpg
  <manual_dir>/part_A/train_data/ground-truth/GT_IMG_1.mat     (ground_truth/ also accepted)
  <manual_dir>/part_A/test_data/...
  <manual_dir>/part_B/...
"""


def read_shanghaitech_mat(path) -> np.ndarray:
    """Reads the head points of one ``GT_IMG_<n>.mat`` file.

    Args:
      path: the ``.mat`` file.

    Returns:
      ``[m, 2]`` float32 ``(x, y)`` pixels.

    Raises:
      BadExampleError: the file is missing, empty, not a MATLAB file, or lacks
        ``image_info[0, 0][0, 0]['location']``.
    """
    path = pathlib.Path(path)
    mat = base.load_mat(path)
    if "image_info" not in mat:
        raise base.BadExampleError(
            path, f"no 'image_info' variable (found {sorted(k for k in mat if not k.startswith('__'))})"
        )
    record = _unwrap_record(mat["image_info"])
    if record is None or "location" not in record.dtype.names:
        raise base.BadExampleError(path, "malformed: expected image_info[0, 0][0, 0]['location']")
    points = base.as_points(_unwrap_array(record["location"]), path, "image_info locations")
    if "number" in record.dtype.names:
        number = np.asarray(_unwrap_array(record["number"])).ravel()
        if number.size == 1 and int(number[0]) != len(points):
            _log.warning("%s: 'number' says %d heads but 'location' holds %d", path, int(number[0]), len(points))
    return points


def _unwrap_record(value):
    # image_info is a 1x1 cell holding a 1x1 struct; accept any depth of 1-element wrappers.
    for _ in range(8):
        if isinstance(value, np.void) and value.dtype.names:
            return value
        if isinstance(value, np.ndarray) and value.size == 1:
            if value.dtype.names:
                return value.reshape(-1)[0]
            if value.dtype == object:
                value = value.reshape(-1)[0]
                continue
        return None
    return None


def _unwrap_array(value):
    while isinstance(value, np.ndarray) and value.dtype == object and value.size == 1:
        value = value.reshape(-1)[0]
    return value


def _has_parts(folder: pathlib.Path) -> bool:
    return base.child_dir(folder, "part_A", "part_A_final", "part_B", "part_B_final") is not None


class Shanghaitech(base.CrowdBuilder):
    """ShanghaiTech crowd counting, configs ``part_a`` and ``part_b``."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Original images and head points, read from the distributed layout."}
    BUILDER_CONFIGS = [
        tfds.core.BuilderConfig(name="part_a", description="Part A: dense crowds from the Internet (300 / 182)."),
        tfds.core.BuilderConfig(name="part_b", description="Part B: Shanghai streets (400 / 316), 768x1024."),
    ]
    MANUAL_DOWNLOAD_INSTRUCTIONS = _INSTRUCTIONS

    def _info(self) -> tfds.core.DatasetInfo:
        return self._crowd_info(
            description=(
                "ShanghaiTech crowd counting dataset with head-point annotations. Images are "
                "stored as distributed (original resolution, original JPEG bytes); points are "
                "(x, y) pixels."
            ),
            homepage="https://github.com/desenzhou/ShanghaiTechDataset",
            citation=(
                "@inproceedings{zhang2016single, title={Single-Image Crowd Counting via Multi-Column "
                "Convolutional Neural Network}, author={Zhang, Yingying and Zhou, Desen and Chen, "
                "Siqin and Gao, Shenghua and Ma, Yi}, booktitle={CVPR}, year={2016}}"
            ),
        )

    def _split_generators(self, dl_manager):
        root = base.find_root(dl_manager.manual_dir, _has_parts, "ShanghaiTech part_A/part_B", _INSTRUCTIONS)
        letter = self.builder_config.name[-1].upper()
        part = base.child_dir(root, f"part_{letter}", f"part_{letter}_final")
        if part is None:
            raise ValueError(f"{root} has no part_{letter}/ (nor part_{letter}_final/).\n{_INSTRUCTIONS}")
        splits = {}
        for split in ("train", "test"):
            folder = base.child_dir(part, f"{split}_data")
            if folder is None:
                raise ValueError(f"{part} has no {split}_data/ folder.\n{_INSTRUCTIONS}")
            splits[split] = self._generate_examples(folder, split)
        return splits

    def _generate_examples(self, folder: pathlib.Path, split: str):
        images_dir = base.child_dir(folder, "images")
        gt_dir = base.child_dir(folder, "ground-truth", "ground_truth")
        if images_dir is None or gt_dir is None:
            raise ValueError(f"{folder} must hold images/ and ground-truth/ (or ground_truth/).\n{_INSTRUCTIONS}")
        images, stray = {}, []
        for path in images_dir.iterdir():
            match = _IMAGE_NAME.match(path.name)
            if match and path.is_file():
                images[match.group(1).upper()] = path
            else:
                stray.append(path.name)
        annotations, stray_gt = {}, []
        for path in gt_dir.iterdir():
            match = _GT_NAME.match(path.name)
            if match and path.is_file():
                annotations[match.group(1).upper()] = path
            else:
                stray_gt.append(path.name)
        self._ignore_files(split, images_dir, stray)
        self._ignore_files(split, gt_dir, stray_gt)
        expected = _EXPECTED[self.builder_config.name][split]
        stems = sorted(set(images) | set(annotations), key=base.natural_key)
        if len(stems) != expected:
            _log.info("%s: %d images (the full release has %d)", folder, len(stems), expected)

        yield from self._paired_examples(
            split, [(stem, stem) for stem in stems], images, annotations, read_shanghaitech_mat,
            describe=lambda stem: (f"image {stem}.jpg is missing in {images_dir}",
                                   f"annotation file GT_{stem}.mat is missing in {gt_dir}"),
        )  # fmt: skip
