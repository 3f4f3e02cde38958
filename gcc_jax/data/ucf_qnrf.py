"""TFDS builder for UCF-QNRF (Idrees et al., ECCV 2018).

Raw layout, as distributed in ``UCF-QNRF_ECCV18.zip``::

    <manual_dir>/[UCF-QNRF_ECCV18/]Train/img_0001.jpg
                                  Train/img_0001_ann.mat      ('annPoints': [m, 2] (x, y))
                                  Test/img_0001.jpg, Test/img_0001_ann.mat

Splits: ``test`` = ``Test/`` (334 images); ``Train/`` (1201 images) is split into ``val`` =
the 120 images of the customary validation list (BL's ``val.txt``, used by BL, DM-Count and
GL: :data:`QNRF_VAL_IMAGES`) and ``train`` = the other 1081. Use ``split="train+val"`` for
all 1201 training images.

Images are stored at their original resolution (up to 9000 px on a side); the reference
resize (shorter side into ``[512, 2048]``) is applied by the pipelines (see
:mod:`gcc_jax.data.catalog`).
"""

from __future__ import annotations

import pathlib
import re

import numpy as np
import tensorflow_datasets as tfds

from gcc_jax.data import _builder_base as base

__all__ = ["QNRF_VAL_IMAGES", "UcfQnrf", "read_ann_points_mat"]

# Numbers n of the Train/img_<n>.jpg files in the customary validation list (BL's val.txt).
QNRF_VAL_IMAGES = frozenset((
    7, 12, 27, 33, 38, 42, 54, 62, 65, 67, 68, 86, 91, 97, 103,
    114, 116, 119, 125, 128, 152, 157, 190, 191, 221, 250, 251, 257, 268, 280,
    289, 291, 302, 303, 338, 339, 344, 347, 357, 379, 382, 385, 416, 441, 470,
    472, 477, 485, 489, 505, 510, 514, 521, 536, 539, 542, 545, 546, 556, 557,
    576, 590, 600, 605, 631, 633, 638, 641, 658, 684, 697, 715, 733, 736, 750,
    775, 778, 782, 790, 791, 794, 802, 808, 809, 811, 823, 824, 839, 853, 856,
    864, 887, 916, 919, 925, 929, 967, 975, 984, 990, 1004, 1019, 1022, 1030, 1048,
    1049, 1053, 1063, 1072, 1073, 1079, 1080, 1092, 1094, 1104, 1130, 1155, 1181, 1184, 1199,
))  # fmt: skip

_IMAGE_NAME = re.compile(r"^img_(\d+)\.jpe?g$", re.IGNORECASE)
_ANN_NAME = re.compile(r"^img_(\d+)_ann\.mat$", re.IGNORECASE)

_INSTRUCTIONS = """\
Download UCF-QNRF (UCF-QNRF_ECCV18.zip) from https://www.crcv.ucf.edu/data/ucf-qnrf/ and
unpack it into the manual directory, so that it holds Train/ and Test/ (possibly inside one
extra folder such as UCF-QNRF_ECCV18/):

  <manual_dir>/Train/img_0001.jpg
  <manual_dir>/Train/img_0001_ann.mat
  <manual_dir>/Test/img_0001.jpg
  <manual_dir>/Test/img_0001_ann.mat
"""


def read_ann_points_mat(path, key: str = "annPoints") -> np.ndarray:
    """Reads head points from a ``.mat`` file holding ``annPoints`` (``[m, 2]`` ``(x, y)``).

    Used for UCF-QNRF's ``*_ann.mat`` (and NWPU's ``mats/``).

    Returns:
      ``[m, 2]`` float32 ``(x, y)`` pixels.

    Raises:
      BadExampleError: the file is missing, empty, unreadable or lacks ``key``.
    """
    path = pathlib.Path(path)
    mat = base.load_mat(path)
    if key not in mat:
        raise base.BadExampleError(path, f"no {key!r} variable (found {sorted(k for k in mat if not k.startswith('__'))})")
    return base.as_points(mat[key], path, key)


def _has_layout(folder: pathlib.Path) -> bool:
    return base.child_dir(folder, "Train") is not None and base.child_dir(folder, "Test") is not None


class UcfQnrf(base.CrowdBuilder):
    """UCF-QNRF: 1535 dense-crowd images (train 1081 / val 120 / test 334)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Original images and points; val = BL's 120-image list from Train/."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = _INSTRUCTIONS

    def _info(self) -> tfds.core.DatasetInfo:
        return self._crowd_info(
            description=(
                "UCF-QNRF crowd counting dataset (1.25 M head annotations). Original resolution "
                "and JPEG bytes; points are (x, y) pixels."
            ),
            homepage="https://www.crcv.ucf.edu/data/ucf-qnrf/",
            citation=(
                "@inproceedings{idrees2018composition, title={Composition Loss for Counting, Density "
                "Map Estimation and Localization in Dense Crowds}, author={Idrees, Haroon and Tayyab, "
                "Muhmmad and Athrey, Kishan and Zhang, Dong and Al-Maadeed, Somaya and Rajpoot, Nasir "
                "and Shah, Mubarak}, booktitle={ECCV}, year={2018}}"
            ),
        )

    def _split_generators(self, dl_manager):
        root = base.find_root(dl_manager.manual_dir, _has_layout, "UCF-QNRF Train/ and Test/", _INSTRUCTIONS)
        train_dir = base.child_dir(root, "Train")
        test_dir = base.child_dir(root, "Test")
        return {
            "train": self._generate_examples(train_dir, "train", lambda n: n not in QNRF_VAL_IMAGES),
            "val": self._generate_examples(train_dir, "val", lambda n: n in QNRF_VAL_IMAGES),
            "test": self._generate_examples(test_dir, "test", lambda n: True),
        }

    def _generate_examples(self, folder: pathlib.Path, split: str, wanted):
        images, annotations, stray = {}, {}, []
        for path in folder.iterdir():
            image_match = _IMAGE_NAME.match(path.name)
            ann_match = _ANN_NAME.match(path.name)
            if image_match and path.is_file():
                images[int(image_match.group(1))] = path
            elif ann_match and path.is_file():
                annotations[int(ann_match.group(1))] = path
            else:
                stray.append(path.name)
        if split != "val":  # val reads the same folder as train: report stray files once
            self._ignore_files(split, folder, stray)
        numbers = sorted(n for n in set(images) | set(annotations) if wanted(n))

        yield from self._paired_examples(
            split, [(f"img_{n:04d}", n) for n in numbers], images, annotations, read_ann_points_mat,
            describe=lambda n: (f"image img_{n:04d}.jpg is missing", f"annotation file img_{n:04d}_ann.mat is missing"),
        )  # fmt: skip
