"""TFDS builder for JHU-Crowd++ (Sindagi et al., TPAMI 2020), version 2.0.

Raw layout, as distributed in ``jhu_crowd_v2.0.zip``::

    <manual_dir>/[jhu_crowd_v2.0/]{train,val,test}/images/0001.jpg
                                  {split}/gt/0001.txt           lines "x y w h o b" (may be empty)
                                  {split}/image_labels.txt      lines "name,count,scene,weather,distractor"

``(x, y)`` is the head centre, ``(w, h)`` the head box size, ``o`` the occlusion level
(1 visible, 2 partial, 3 full), ``b`` the blur flag; ``weather`` is 0 none / 1 fog-haze /
2 rain / 3 snow, ``distractor`` 1 for images without people meant to confuse counters.
Splits: train 2272 / val 500 / test 1600. Images are stored at their original resolution; the
reference resize happens in the pipelines.
"""

from __future__ import annotations

import pathlib

import numpy as np
import tensorflow_datasets as tfds

from gcc_jax.data import _builder_base as base

__all__ = ["JhuCrowd", "read_jhu_gt", "read_jhu_image_labels"]

_INSTRUCTIONS = """\
Download JHU-Crowd++ v2.0 (jhu_crowd_v2.0.zip) from http://www.crowd-counting.com/ and unpack
it into the manual directory, so that it holds train/, val/ and test/ (possibly inside one
extra folder such as jhu_crowd_v2.0/):

  <manual_dir>/train/images/0001.jpg
  <manual_dir>/train/gt/0001.txt
  <manual_dir>/train/image_labels.txt
  <manual_dir>/val/...   <manual_dir>/test/...
"""


def read_jhu_gt(path) -> np.ndarray:
    """Reads one JHU ``gt/<name>.txt`` file (an empty file means no heads).

    Returns:
      ``[m, 6]`` float32 rows ``(x, y, w, h, occlusion, blur)``.

    Raises:
      BadExampleError: the file is missing, or a line does not hold 6 numbers.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise base.BadExampleError(path, "annotation file is missing")
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 6:
            raise base.BadExampleError(path, f"line {number}: expected 6 numbers 'x y w h o b', got {line!r}")
        try:
            rows.append([float(field) for field in fields])
        except ValueError as error:
            raise base.BadExampleError(path, f"line {number}: not numeric: {line!r}") from error
    array = np.asarray(rows, np.float32).reshape(-1, 6)
    if not np.all(np.isfinite(array)):
        raise base.BadExampleError(path, "contains NaN or inf values")
    return array


def read_jhu_image_labels(path) -> dict[str, tuple[int, str, int, int]]:
    """Reads ``image_labels.txt``.

    Returns:
      ``{name: (count, scene, weather, distractor)}`` keyed by the image's file stem.

    Raises:
      ValueError: the file is missing or a line is malformed (names file and line).
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise ValueError(f"JHU-Crowd++ labels file {path} is missing.\n{_INSTRUCTIONS}")
    labels = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        fields = [field.strip() for field in line.split(",")]
        if not line.strip():
            continue
        if len(fields) != 5:
            raise ValueError(f"{path}:{number}: expected 'name,count,scene,weather,distractor', got {line!r}")
        try:
            count, weather, distractor = (int(float(fields[i])) for i in (1, 3, 4))
        except ValueError as error:
            if number == 1:  # a header line
                continue
            raise ValueError(f"{path}:{number}: count, weather and distractor must be numbers, got {line!r}") from error
        labels[pathlib.Path(fields[0]).stem] = (count, fields[2], weather, distractor)
    return labels


def _has_layout(folder: pathlib.Path) -> bool:
    return all(base.child_dir(folder, split) is not None for split in ("train", "val", "test"))


class JhuCrowd(base.CrowdBuilder):
    """JHU-Crowd++ v2.0: 4372 images with head points, box sizes and image-level labels."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Original images, head points with box size / occlusion / blur, image labels."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = _INSTRUCTIONS

    def _info(self) -> tfds.core.DatasetInfo:
        return self._crowd_info(
            description=(
                "JHU-Crowd++ v2.0. Original resolution and JPEG bytes; points are head centres "
                "(x, y) in pixels, box_size the head box (w, h) in pixels, occlusion 1-3, blur "
                "0/1; scene, weather (0-3) and distractor (0/1) are image-level labels."
            ),
            homepage="http://www.crowd-counting.com/",
            citation=(
                "@article{sindagi2020jhu, title={JHU-CROWD++: Large-Scale Crowd Counting Dataset "
                "and A Benchmark Method}, author={Sindagi, Vishwanath A. and Yasarla, Rajeev and "
                "Patel, Vishal M.}, journal={IEEE TPAMI}, year={2020}}"
            ),
            extra_features={
                "box_size": tfds.features.Tensor(shape=(None, 2), dtype=np.float32),
                "occlusion": tfds.features.Tensor(shape=(None,), dtype=np.int32),
                "blur": tfds.features.Tensor(shape=(None,), dtype=np.int32),
                "scene": tfds.features.Text(),
                "weather": np.int32,
                "distractor": np.int32,
            },
        )

    def _split_generators(self, dl_manager):
        root = base.find_root(dl_manager.manual_dir, _has_layout, "JHU-Crowd++ train/ val/ test/", _INSTRUCTIONS)
        return {
            split: self._generate_examples(base.child_dir(root, split), split) for split in ("train", "val", "test")
        }

    def _generate_examples(self, folder: pathlib.Path, split: str):
        images_dir = base.child_dir(folder, "images")
        gt_dir = base.child_dir(folder, "gt")
        if images_dir is None or gt_dir is None:
            raise ValueError(f"{folder} must hold images/ and gt/.\n{_INSTRUCTIONS}")
        labels = read_jhu_image_labels(folder / "image_labels.txt")
        images, stray = {}, []
        for path in images_dir.iterdir():
            if path.suffix.lower() in (".jpg", ".jpeg", ".png") and path.is_file():
                images[path.stem] = path
            else:
                stray.append(path.name)
        self._ignore_files(split, images_dir, stray)

        def make(stem):
            image_path = images.get(stem)
            gt_path = gt_dir / f"{stem}.txt"
            if image_path is None:
                raise base.BadExampleError(gt_path, f"image {stem}.jpg is missing in {images_dir}")
            rows = read_jhu_gt(gt_path)
            if stem not in labels:
                raise base.BadExampleError(image_path, f"no line for {stem} in {folder / 'image_labels.txt'}")
            count, scene, weather, distractor = labels[stem]
            if count != len(rows):
                self._warn(split, gt_path, f"image_labels.txt says {count} heads, the file lists {len(rows)}")
            example, keep = self._example_with_points(split, image_path, rows[:, :2], gt_path)
            rows = rows[keep]
            return {
                **example,
                "box_size": rows[:, 2:4],
                "occlusion": rows[:, 4].astype(np.int32),
                "blur": rows[:, 5].astype(np.int32),
                "scene": scene,
                "weather": weather,
                "distractor": distractor,
            }

        # An annotation without its image is a bad example too, not something to pass over.
        gt_stems = {path.stem for path in gt_dir.iterdir() if path.suffix.lower() == ".txt"}
        stems = sorted(set(images) | gt_stems, key=base.natural_key)
        yield from self._guarded(split, ((stem, (lambda s=stem: make(s))) for stem in stems))
