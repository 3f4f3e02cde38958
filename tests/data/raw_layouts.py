"""Writers of tiny raw data set layouts in the real formats (used by the builder tests).

Every writer produces files the way the original archives store them: ShanghaiTech ``.mat``
with the ``image_info`` cell -> struct nesting (checked against a real file in
``test_shanghaitech_builder.py``), UCF-QNRF ``annPoints`` ``.mat``, NWPU JSON + split lists,
JHU ``gt/*.txt`` + ``image_labels.txt``.
"""

from __future__ import annotations

import json
import pathlib

import numpy as np
import scipy.io
from PIL import Image

SAMPLE_DIR = pathlib.Path(__file__).parents[1] / "data" / "shanghaitech_sample"


def write_image(path, height, width, *, seed=0, mode="RGB", fmt="JPEG"):
    """A small random image file; returns its uint8 pixels as written (before compression)."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    channels = 3 if mode == "RGB" else 1
    # Smooth content so that JPEG round trips stay close to the written pixels.
    pixels = (rng.uniform(0, 255, (1, 1, channels)) + np.linspace(0, 60, width)[None, :, None]).clip(0, 255)
    pixels = np.broadcast_to(pixels, (height, width, channels)).astype(np.uint8)
    Image.fromarray(pixels[..., 0] if mode == "L" else pixels).save(path, format=fmt, quality=95)
    return pixels


def write_shanghaitech_mat(path, points):
    """``GT_IMG_<n>.mat``: ``image_info`` = 1x1 cell holding a 1x1 struct (location, number)."""
    points = np.asarray(points, np.float64).reshape(-1, 2)
    struct = np.zeros((1, 1), dtype=[("location", "O"), ("number", "O")])
    struct[0, 0]["location"] = points
    struct[0, 0]["number"] = np.array([[len(points)]], np.uint16)
    cell = np.empty((1, 1), dtype=object)
    cell[0, 0] = struct
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(path, {"image_info": cell})


def write_ann_mat(path, points):
    """UCF-QNRF / NWPU ``.mat`` with ``annPoints`` ``[m, 2]`` float64."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(path, {"annPoints": np.asarray(points, np.float64).reshape(-1, 2)})


def random_points(rng, count, height, width):
    return np.stack([rng.uniform(0, width, count), rng.uniform(0, height, count)], axis=-1).astype(np.float32)


def make_shanghaitech_raw(root, *, part_dir="part_A", gt_dir="ground-truth", counts=None, size=(48, 64)):
    """A tiny ShanghaiTech part; returns ``{split: {filename: points}}``."""
    counts = counts or {"train": [3, 0, 5], "test": [2]}
    rng = np.random.default_rng(1)
    expected = {}
    for split, split_counts in counts.items():
        expected[split] = {}
        for number, count in enumerate(split_counts, start=1):
            folder = pathlib.Path(root) / part_dir / f"{split}_data"
            write_image(folder / "images" / f"IMG_{number}.jpg", *size, seed=number)
            points = random_points(rng, count, *size)
            write_shanghaitech_mat(folder / gt_dir / f"GT_IMG_{number}.mat", points)
            expected[split][f"IMG_{number}.jpg"] = points
    return expected


def make_qnrf_raw(root, *, size=(40, 56)):
    """Train: img_0001 (train), img_0007 and img_0012 (val list); Test: img_0001."""
    rng = np.random.default_rng(2)
    expected = {"train": {}, "val": {}, "test": {}}
    for folder, split, number, count in (
        ("Train", "train", 1, 4),
        ("Train", "val", 7, 2),
        ("Train", "val", 12, 0),
        ("Test", "test", 1, 6),
    ):
        write_image(pathlib.Path(root) / folder / f"img_{number:04d}.jpg", *size, seed=number)
        points = random_points(rng, count, *size)
        write_ann_mat(pathlib.Path(root) / folder / f"img_{number:04d}_ann.mat", points)
        expected[split][f"img_{number:04d}.jpg"] = points
    return expected


def make_nwpu_raw(root, *, size=(36, 52)):
    """0001 (3 heads), 0002 (empty) train; 0003 val; 0004 test (no json)."""
    root = pathlib.Path(root)
    rng = np.random.default_rng(3)
    expected = {}
    for image_id, count in (("0001", 3), ("0002", 0), ("0003", 2), ("0004", None)):
        write_image(root / "images" / f"{image_id}.jpg", *size, seed=int(image_id))
        if count is None:
            continue
        points = random_points(rng, count, *size)
        boxes = np.concatenate([points - 2.0, points + 3.0], axis=1)
        record = {
            "img_id": f"{image_id}.jpg",
            "human_num": count,
            "points": points.tolist(),
            "boxes": boxes.tolist(),
        }
        (root / "jsons").mkdir(parents=True, exist_ok=True)
        (root / "jsons" / f"{image_id}.json").write_text(json.dumps(record))
        write_ann_mat(root / "mats" / f"{image_id}.mat", points)
        expected[image_id] = (points, boxes)
    (root / "train.txt").write_text("0001 1 2\n0002 0 1\n")
    (root / "val.txt").write_text("0003 2 3\n")
    (root / "test.txt").write_text("0004 1 4\n")
    return expected


def make_jhu_raw(root, *, size=(44, 60)):
    """train: 0001 (3 heads), 0002 (empty gt file); val: 0003; test: 0004."""
    root = pathlib.Path(root)
    rng = np.random.default_rng(4)
    expected = {}
    layout = {"train": [("0001", 3), ("0002", 0)], "val": [("0003", 2)], "test": [("0004", 1)]}
    for split, items in layout.items():
        lines = []
        for stem, count in items:
            write_image(root / split / "images" / f"{stem}.jpg", *size, seed=int(stem))
            points = random_points(rng, count, *size)
            wh = rng.integers(3, 9, (count, 2)).astype(np.float32)
            occlusion = rng.integers(1, 4, count)
            blur = rng.integers(0, 2, count)
            rows = [
                f"{int(round(x))} {int(round(y))} {int(w)} {int(h)} {o} {b}"
                for (x, y), (w, h), o, b in zip(points, wh, occlusion, blur)
            ]
            (root / split / "gt").mkdir(parents=True, exist_ok=True)
            (root / split / "gt" / f"{stem}.txt").write_text("\n".join(rows) + ("\n" if rows else ""))
            lines.append(f"{stem},{count},street,{int(stem) % 4},{int(count == 0)}")
            expected[stem] = (np.round(points), wh, occlusion, blur, int(stem) % 4)
        (root / split / "image_labels.txt").write_text("\n".join(lines) + "\n")
    return expected
