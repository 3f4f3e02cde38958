"""Writers of head-point annotations in the layouts the annotation tools write.

* LabelMe 5 (``labelme/label_file.py``'s ``LabelFile.save``): ``{"version", "flags", "shapes":
  [{"label", "points": [[x, y]], "group_id", "description", "shape_type", "flags", "mask"}],
  "imagePath", "imageData", "imageHeight", "imageWidth"}``, ``indent=2``, ``imagePath``
  relative to the JSON file, ``imageData`` ``null`` when the image is not embedded.
* CVAT for images 1.1 (``annotations.xml`` of the "CVAT for images 1.1" export, as laid out in
  CVAT's XML format documentation): ``<annotations><version>1.1</version><meta><task>...
  </task><dumped/></meta><image id name width height><points label source occluded
  points="x,y" z_order/>...</image></annotations>``, coordinates with two decimals.
* per-image CSV (``x,y`` header), folder CSV (``image,x,y``), and the ShanghaiTech / UCF-QNRF
  ``.mat`` writers of :mod:`raw_layouts`.
"""

from __future__ import annotations

import csv
import json
import pathlib

import numpy as np


def write_labelme_json(json_path, image_name, points, height, width, *, other_shapes=(), label="head"):
    """A LabelMe 5 JSON with one point shape per head, plus ``other_shapes`` (dicts with
    ``shape_type`` and ``points``) as LabelMe saves rectangles, polygons…"""
    shapes = [
        {"label": label, "points": [[float(x), float(y)]], "group_id": None, "description": "",
         "shape_type": "point", "flags": {}, "mask": None}
        for x, y in np.asarray(points, np.float64).reshape(-1, 2)
    ]  # fmt: skip
    shapes += [
        {"label": "other", "points": shape["points"], "group_id": None, "description": "",
         "shape_type": shape["shape_type"], "flags": {}, "mask": None}
        for shape in other_shapes
    ]  # fmt: skip
    document = {
        "version": "5.5.0",
        "flags": {},
        "shapes": shapes,
        "imagePath": image_name,
        "imageData": None,
        "imageHeight": int(height),
        "imageWidth": int(width),
    }
    path = pathlib.Path(json_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, ensure_ascii=False), encoding="utf-8")


def cvat_number(value: float) -> str:
    """A coordinate as CVAT writes it (two decimals)."""
    return f"{value:.2f}"


def write_cvat_xml(xml_path, images):
    """``annotations.xml`` for ``images``: ``[(name, height, width, points, boxes)]``, ``boxes``
    ``[(x1, y1, x2, y2)]`` (written as ``<box>`` elements, which are not heads)."""
    lines = [
        '<?xml version="1.0" encoding="utf-8"?>',
        "<annotations>",
        "  <version>1.1</version>",
        "  <meta>",
        "    <task>",
        "      <id>7</id>",
        "      <name>heads</name>",
        f"      <size>{len(images)}</size>",
        "      <mode>annotation</mode>",
        "      <overlap>0</overlap>",
        "      <bugtracker></bugtracker>",
        "      <created>2024-05-06 10:11:12.131415+00:00</created>",
        "      <updated>2024-05-06 11:12:13.141516+00:00</updated>",
        "      <subset>default</subset>",
        "      <start_frame>0</start_frame>",
        f"      <stop_frame>{len(images) - 1}</stop_frame>",
        "      <frame_filter></frame_filter>",
        "      <labels>",
        "        <label>",
        "          <name>head</name>",
        "          <color>#fa3253</color>",
        "          <type>points</type>",
        "          <attributes>",
        "          </attributes>",
        "        </label>",
        "      </labels>",
        "    </task>",
        "    <dumped>2024-05-06 11:20:00.000000+00:00</dumped>",
        "  </meta>",
    ]
    for number, (name, height, width, points, boxes) in enumerate(images):
        lines.append(f'  <image id="{number}" name="{name}" width="{width}" height="{height}">')
        for x, y in np.asarray(points, np.float64).reshape(-1, 2):
            lines.append(
                f'    <points label="head" source="manual" occluded="0" points="{cvat_number(x)},{cvat_number(y)}" '
                'z_order="0">'
            )
            lines.append("    </points>")
        for x1, y1, x2, y2 in boxes:
            lines.append(
                f'    <box label="head" source="manual" occluded="0" xtl="{cvat_number(x1)}" ytl="{cvat_number(y1)}" '
                f'xbr="{cvat_number(x2)}" ybr="{cvat_number(y2)}" z_order="0">'
            )
            lines.append("    </box>")
        lines.append("  </image>")
    lines.append("</annotations>")
    path = pathlib.Path(xml_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_points_csv(path, points, *, header=True, separator=","):
    """One image's heads, one ``x<sep>y`` line each (``repr`` precision)."""
    rows = [f"{float(x)!r}{separator}{float(y)!r}" for x, y in np.asarray(points, np.float64).reshape(-1, 2)]
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(([f"x{separator}y"] if header else []) + rows) + "\n", encoding="utf-8")


def write_folder_csv(path, heads_by_image):
    """One CSV for many images: ``{image name: points}``; an image with no heads gets an
    ``image,,`` row."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["image", "x", "y"])
        for name, points in heads_by_image.items():
            points = np.asarray(points, np.float64).reshape(-1, 2)
            if len(points) == 0:
                writer.writerow([name, "", ""])
            for x, y in points:
                writer.writerow([name, repr(float(x)), repr(float(y))])
