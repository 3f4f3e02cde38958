"""TFDS builder for NWPU-Crowd (Wang et al., TPAMI 2020).

Raw layout, as distributed (``images_part1.zip`` … ``images_part5.zip``,
``jsons.zip``, ``mats.zip`` and the split lists)::

    <manual_dir>/[NWPU-Crowd/]images/0001.jpg … 5109.jpg   (images_part1/ … images_part5/ also accepted)
                              jsons/0001.json …  {"img_id", "human_num", "points": [[x, y], …],
                                                  "boxes": [[x1, y1, x2, y2], …]}
                              train.txt, val.txt, test.txt  (lines "<id> <luminance> <level>")

Splits: train 3109 / val 500 / test 1500. Test annotations are not public: test examples have
``annotated = False`` and no points (a ``jsons/<id>.json`` for a test id is read if present).
Empty images (``human_num = 0``) are ordinary examples with no points. Images are stored at
their original resolution; the reference resize happens in the pipelines.
"""

from __future__ import annotations

import json
import logging
import pathlib

import numpy as np
import tensorflow_datasets as tfds

from gcc_jax.data import _builder_base as base

__all__ = ["NwpuCrowd", "read_nwpu_json", "read_nwpu_split_list"]

_log = logging.getLogger(__name__)

_INSTRUCTIONS = """\
Download NWPU-Crowd from https://gjy3035.github.io/NWPU-Crowd-Sample-Code/ (images_part1-5.zip,
jsons.zip, train.txt, val.txt, test.txt; mats.zip is not needed) and unpack everything into
the manual directory (possibly inside one extra folder such as NWPU-Crowd/):

  <manual_dir>/images/0001.jpg ... 5109.jpg     (or images_part1/ ... images_part5/)
  <manual_dir>/jsons/0001.json ... 3609.json
  <manual_dir>/train.txt  <manual_dir>/val.txt  <manual_dir>/test.txt
"""


def read_nwpu_split_list(path) -> list[tuple[str, int, int]]:
    """Reads ``train.txt`` / ``val.txt`` / ``test.txt``.

    Returns:
      ``[(id, luminance, level)]`` in file order; a missing column is ``-1``.

    Raises:
      ValueError: the file is missing or a line is malformed (names file and line).
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise ValueError(f"NWPU split list {path} is missing.\n{_INSTRUCTIONS}")
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        try:
            extra = [int(float(field)) for field in fields[1:3]]
        except ValueError as error:
            raise ValueError(f"{path}:{number}: expected '<id> <luminance> <level>', got {line!r}") from error
        extra += [-1] * (2 - len(extra))
        rows.append((fields[0], extra[0], extra[1]))
    return rows


def read_nwpu_json(path) -> tuple[np.ndarray, np.ndarray]:
    """Reads one NWPU annotation file.

    Returns:
      ``(points [m, 2] float32 (x, y), boxes [m, 4] float32 (x1, y1, x2, y2))``.

    Raises:
      BadExampleError: missing, empty or malformed file, or points and boxes disagree.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise base.BadExampleError(path, "annotation file is missing")
    text = path.read_text()
    if not text.strip():
        raise base.BadExampleError(path, "annotation file is empty")
    try:
        record = json.loads(text)
    except json.JSONDecodeError as error:
        raise base.BadExampleError(path, f"malformed JSON ({error})") from error
    if not isinstance(record, dict) or "points" not in record or "boxes" not in record:
        raise base.BadExampleError(path, "malformed: expected a JSON object with 'points' and 'boxes'")
    points = base.as_points(record["points"], path, "points")
    boxes = np.asarray(record["boxes"], dtype=np.float64) if len(record["boxes"]) else np.zeros([0, 4])
    if boxes.ndim != 2 or boxes.shape[1] != 4 or not np.all(np.isfinite(boxes)):
        raise base.BadExampleError(path, f"boxes must be an [m, 4] array of finite (x1, y1, x2, y2), got shape {boxes.shape}")
    if len(boxes) != len(points):
        raise base.BadExampleError(path, f"{len(points)} points but {len(boxes)} boxes")
    if isinstance(record.get("human_num"), (int, float)) and int(record["human_num"]) != len(points):
        _log.warning("%s: human_num is %s but %d points are listed", path, record["human_num"], len(points))
    return points, boxes.astype(np.float32)


def _has_layout(folder: pathlib.Path) -> bool:
    return (folder / "train.txt").is_file() and (folder / "val.txt").is_file()


def _image_index(root: pathlib.Path) -> dict[str, pathlib.Path]:
    # Images live in images/ or in the images_part<k>/ folders the archives unpack to.
    index = {}
    for folder in sorted(root.iterdir()):
        if folder.is_dir() and folder.name.lower().startswith("images"):
            for path in folder.iterdir():
                if path.suffix.lower() in (".jpg", ".jpeg", ".png") and path.is_file():
                    index[_normalise_id(path.stem)] = path
    return index


def _normalise_id(name: str) -> str:
    return f"{int(name):04d}" if name.isdigit() else name


class NwpuCrowd(base.CrowdBuilder):
    """NWPU-Crowd: 5109 images, points and head boxes (train 3109 / val 500 / test 1500)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Original images, points, head boxes, luminance / level labels."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = _INSTRUCTIONS

    def _info(self) -> tfds.core.DatasetInfo:
        return self._crowd_info(
            description=(
                "NWPU-Crowd counting and localization dataset. Original resolution and JPEG "
                "bytes; points are (x, y) pixels, boxes (x1, y1, x2, y2) pixels; luminance and "
                "level come from the split lists (-1 = not given); test images are unannotated."
            ),
            homepage="https://gjy3035.github.io/NWPU-Crowd-Sample-Code/",
            citation=(
                "@article{gao2020nwpu, title={NWPU-Crowd: A Large-Scale Benchmark for Crowd Counting "
                "and Localization}, author={Wang, Qi and Gao, Junyu and Lin, Wei and Li, Xuelong}, "
                "journal={IEEE TPAMI}, year={2020}}"
            ),
            extra_features={
                "boxes": tfds.features.Tensor(shape=(None, 4), dtype=np.float32),
                "annotated": np.bool_,
                "luminance": np.int32,
                "level": np.int32,
            },
        )

    def _split_generators(self, dl_manager):
        root = base.find_root(dl_manager.manual_dir, _has_layout, "NWPU-Crowd (train.txt, val.txt)", _INSTRUCTIONS)
        images = _image_index(root)
        jsons_dir = base.child_dir(root, "jsons")
        if jsons_dir is None:
            raise ValueError(f"{root} has no jsons/ folder.\n{_INSTRUCTIONS}")
        splits = {}
        for split in ("train", "val", "test"):
            if split == "test" and not (root / "test.txt").is_file():
                continue
            rows = read_nwpu_split_list(root / f"{split}.txt")
            splits[split] = self._generate_examples(rows, images, jsons_dir, root, split)
        return splits

    def _generate_examples(self, rows, images, jsons_dir, root, split):
        def make(image_id, luminance, level):
            image_path = images.get(image_id)
            if image_path is None:
                raise base.BadExampleError(root / "images" / f"{image_id}.jpg", f"image listed in {split}.txt is missing")
            json_path = jsons_dir / f"{image_id}.json"
            annotated = split != "test" or json_path.is_file()
            if annotated:
                points, boxes = read_nwpu_json(json_path)
            else:
                points, boxes = np.zeros([0, 2], np.float32), np.zeros([0, 4], np.float32)
            example, keep = self._example_with_points(split, image_path, points, json_path)
            return {
                **example,
                "boxes": boxes[keep],
                "annotated": annotated,
                "luminance": luminance,
                "level": level,
            }

        examples = (
            (_normalise_id(raw_id), (lambda i=_normalise_id(raw_id), lum=lum, lev=lev: make(i, lum, lev)))
            for raw_id, lum, lev in rows
        )
        yield from self._guarded(split, examples)
