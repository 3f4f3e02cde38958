"""NWPU-Crowd test-set result files, in the format of the benchmark's online evaluation.

    python -m gcc_jax.predict.nwpu_submission --workdir runs/nwpu --out submission/
    python -m gcc_jax.predict.nwpu_submission --config configs/nwpu.py --checkpoint MODEL_DIR --out submission/

Writes two text files with one line per test image, sorted by image id (the benchmark's
guideline, gjy3035/NWPU-Crowd-Sample-Code ``README.md`` / ``test.py`` and
gjy3035/NWPU-Crowd-Sample-Code-for-Localization ``test.py``):

* ``counting.txt`` — ``<id> <count>``, the count with four decimals (``3610 100.0000``);
* ``localization.txt`` — ``<id> <n> <x1> <y1> <x2> <y2> ...``, all integers: ``n`` heads and
  their ``(x, y)`` in the **original** image's pixels (``3611 0`` for none).

The images go through the evaluation pipeline of the config (the data set's resize rule,
shorter side into [512, 2048] for NWPU by default), so the model sees what it was validated on;
points found on the resized image at pixel ``(x, y)`` go back to the original image as
``(int(x / scale_x), int(y / scale_y))`` — the official localization sample code's conversion
(``index · ratio`` cast to an integer, i.e. truncated) — clipped to the original image. The
count is the density map's sum (a count does not change with resizing). The peak settings
(``--threshold``, ``--pixel_offset``, ``--(no)one_per_plateau``) are the ones given, the others
those ``python -m gcc_jax.evaluate --split val --choose_threshold`` stored with the checkpoint
(the threshold with the detector it was chosen for), else ``config.localization``'s
(:func:`gcc_jax.inference.resolve_peak_settings`).
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from gcc_jax import cli, inference
from gcc_jax.localization import PeakSettings
from gcc_jax.models import STRIDE
from gcc_jax.runtime import config as config_lib
from gcc_jax.runtime.evaluation import local_eval_mesh

__all__ = [
    "COUNTING_FILE",
    "LOCALIZATION_FILE",
    "counting_line",
    "image_id",
    "localization_line",
    "main",
    "to_original_pixels",
    "write_submission",
]

COUNTING_FILE = "counting.txt"
LOCALIZATION_FILE = "localization.txt"


def image_id(filename: str) -> str:
    """The benchmark id of an image file name, its stem: ``"3610.jpg"`` → ``"3610"`` (other
    data sets' names are kept as they are, so the files can be written for any split).

    Raises:
      ValueError: a name with whitespace (it would break the line format).
    """
    stem = pathlib.PurePath(filename).stem
    if not stem or any(c.isspace() for c in stem):
        raise ValueError(f"image name {filename!r} cannot be a result-file id (empty or with whitespace)")
    return stem


def _id_order(key: str):
    # Numeric ids in numeric order (NWPU: 3610 ... 5109), then any others by name.
    return (0, int(key), "") if key.isdigit() else (1, 0, key)


def to_original_pixels(points, scale_xy, image_hw) -> np.ndarray:
    """Integer original-image pixels of points found on a resized image.

    ``(int(x / scale_x), int(y / scale_y))`` as the official sample code converts them
    (truncation), clipped to ``[0, W − 1] × [0, H − 1]`` of the original image, whose size is
    taken as ``round(resized size / scale)``.

    Args:
      points: ``[n, 2]`` ``(x, y)`` pixels of the resized image.
      scale_xy: ``(scale_x, scale_y)``, resized = scale · original.
      image_hw: ``(height, width)`` of the resized image.

    Returns:
      ``[n, 2]`` int64 ``(x, y)``.
    """
    points = np.asarray(points, np.float64).reshape(-1, 2)
    scale = np.asarray(scale_xy, np.float64).reshape(2)
    if not np.all(scale > 0):
        raise ValueError(f"scale_xy must be positive, got {scale_xy!r}")
    height, width = (int(v) for v in image_hw)
    original_max = np.array([round(width / scale[0]), round(height / scale[1])]) - 1
    return np.clip(np.trunc(points / scale).astype(np.int64), 0, np.maximum(original_max, 0))


def counting_line(image: str, count: float) -> str:
    """``"<id> <count>"`` with four decimals, e.g. ``"3610 100.0000"``."""
    return f"{image} {float(count):.4f}"


def localization_line(image: str, points) -> str:
    """``"<id> <n> <x1> <y1> ..."`` of integer original-image points, e.g. ``"3612 2 1 1 2 2"``."""
    points = np.asarray(points).reshape(-1, 2)
    if points.size and not np.issubdtype(points.dtype, np.integer):
        raise ValueError(f"localization points must be integers (to_original_pixels), got {points.dtype}")
    return " ".join([image, str(len(points)), *map(str, points.reshape(-1).tolist())])


def write_submission(
    records: Iterable[Mapping[str, Any]],
    out_dir: str | os.PathLike,
    *,
    peaks: PeakSettings,
) -> tuple[pathlib.Path, pathlib.Path]:
    """Writes ``counting.txt`` and ``localization.txt`` from evaluation records.

    Args:
      records: :func:`gcc_jax.runtime.iterate_predictions` records (``density``,
        ``image_hw``, ``scale_xy`` or ``scale``, ``filename``); their ``image`` entries are
        not used.
      out_dir: output folder (created).
      peaks: how the heads are found (threshold, pixel offset — added in resized pixels,
        before the conversion —, one point per plateau).

    Returns:
      The two paths.

    Raises:
      ValueError: an unusable file name (:func:`image_id`), or an id seen twice.
    """
    counting, located = {}, {}
    for record in records:
        key = image_id(record["filename"])
        if key in counting:
            raise ValueError(f"image {key} appears twice")
        points = peaks.point_list(record["density"], stride=STRIDE, image_hw=record["image_hw"])[0]
        scale_xy = record.get("scale_xy", (record["scale"], record["scale"]))
        counting[key] = counting_line(key, np.sum(record["density"], dtype=np.float64))
        located[key] = localization_line(key, to_original_pixels(points, scale_xy, record["image_hw"]))
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    order = sorted(counting, key=_id_order)
    paths = out_dir / COUNTING_FILE, out_dir / LOCALIZATION_FILE
    paths[0].write_text("".join(counting[k] + "\n" for k in order))
    paths[1].write_text("".join(located[k] + "\n" for k in order))
    return paths


def main(argv) -> int:
    """The command line (absl flags, as ``gcc_jax.evaluate``); errors end in one ``error:`` line."""
    from absl import flags

    return cli.run(lambda: _submission_command(argv, flags.FLAGS), debug=flags.FLAGS.debug)


def _submission_command(argv, flags_) -> None:
    if len(argv) > 1:
        raise ValueError(f"unexpected arguments: {argv[1:]}")
    workdir = flags_.workdir
    config = config_lib.config_for_command(flags_.config, workdir)
    mesh = local_eval_mesh(config.eval_batch_size)
    trained = inference.load_trained_model(flags_.checkpoint, mesh=mesh, workdir=workdir, config=config)
    peaks = inference.resolve_peak_settings(
        flags_.checkpoint, workdir=workdir, config=config, given=inference.given_peak_flags(flags_), step=trained.step
    )
    paths = write_submission(
        inference.predict_split(trained, config, flags_.split, mesh), flags_.out, peaks=peaks.settings
    )
    print(f"step {trained.step}, {peaks.settings} (threshold: {peaks.source}): wrote {paths[0]} and {paths[1]}")


def _define_flags() -> None:
    from absl import flags
    from ml_collections import config_flags

    config_flags.DEFINE_config_file("config", None, "Config file (default: the workdir's config.json).", lock_config=True)
    flags.DEFINE_string("workdir", None, "Training run directory.")
    flags.DEFINE_string("checkpoint", "best", "best | latest | STEP (of --workdir) | path of a model directory.")
    flags.DEFINE_string("split", "test", "Split to predict (the NWPU-Crowd test split has no annotations).")
    flags.DEFINE_string("out", None, "Output folder for counting.txt and localization.txt.", required=True)
    inference.define_peak_flags()
    cli.define_debug_flag()


if __name__ == "__main__":
    from absl import app

    _define_flags()
    app.run(main, flags_parser=cli.parse_absl_flags)
