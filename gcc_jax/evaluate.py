"""Evaluate a checkpoint on a split and print / write its counting and localization metrics.

    # a training run's best checkpoint, config read from the workdir
    python -m gcc_jax.evaluate --workdir /tmp/gcc_synthetic [--checkpoint best|latest|STEP] [--split test]
    # a model directory (python -m gcc_jax.convert_weights, e.g. official GL weights)
    python -m gcc_jax.evaluate --config configs/sha.py --checkpoint MODEL_DIR [--config.dataset.data_dir=...]
    # choose the localization threshold on a validation split (stored for evaluate and predict)
    python -m gcc_jax.evaluate --workdir /tmp/gcc_synthetic --split val --choose_threshold
    # a folder of annotated images as it lies (LabelMe, CVAT, CSV, .mat: gcc_jax.data.point_annotations)
    python -m gcc_jax.evaluate --workdir runs/mine --folder my_test_photos [--missing_annotation empty]

Prints one JSON object (``mae``, ``rmse`` — the literature's "MSE" —, ``nae``, ``game0..3``,
``trivial_mae`` / ``trivial_rmse`` of the mean-training-count predictor, ``num_images``,
``loc/threshold`` and ``loc/{precision,recall,f1}_<setting>`` (see
:func:`gcc_jax.runtime.evaluate`), ``checkpoint``, ``step``, ``split``) and writes it to
``--output`` (default ``WORKDIR/eval_<split>_<checkpoint>.json`` when a workdir is given, the
split expression reduced to a file name: ``test[:10]`` → ``eval_test_10_best.json``). A
progress bar with the images done and the time left goes to stderr (``--noprogress`` hides
it). Errors end in one ``error:`` line (``--debug`` shows the traceback); the libraries' INFO
messages stay off the console unless ``--verbosity`` or ``--debug`` is given. Runs on this
process's devices; the work is :func:`gcc_jax.inference.evaluate_checkpoint`.

``--folder DIR`` scores every image below ``DIR`` without building a data set: the images and
head points are read as ``python -m gcc_jax.data.build --dataset folder`` prepares them
(:class:`gcc_jax.data.raw_folder_source.AnnotatedFolderSource`: EXIF-upright photos, points
outside the image dropped, files named by their path relative to ``DIR``), at their own size
and evaluated like a split (images of mixed sizes batched by size, ``config.eval_batch_size``).
The JSON's ``split`` is ``DIR``; its default name is ``eval_folder_<DIR's name>_<checkpoint>.json``.
With a model directory (no workdir) it has no ``trivial_*`` baseline.

Image by image (:mod:`gcc_jax.image_results`), beside the JSON unless placed elsewhere:

* ``<json name>_images.csv`` (``--images_csv``): one row per image, sorted by file — ``file``,
  ``true_count``, ``predicted_count``, ``error`` (predicted − true), ``detected`` and
  ``tp_<setting>``, ``fp_<setting>``, ``fn_<setting>`` for every localization radius setting;
* ``<json name>_pictures/`` (``--pictures_dir``): the ``--num_pictures`` images (default 10)
  with the largest absolute count error as ``worst_01_<file>.png``, ..., and the images named
  by ``--picture_files`` as ``<file>.png``, drawn as the GL paper's localization figures:
  green circles around the heads that were found (radius = the matching radius), red dots on
  the heads that were missed, yellow crosses on false detections, at the radius setting that
  ``config.localization.choose_on`` names (:mod:`gcc_jax.localization_pictures`).

Without ``--workdir`` or ``--output`` they are written only where ``--images_csv`` /
``--pictures_dir`` say. ``--choose_threshold`` keeps no images in memory, so it writes the CSV
but no pictures.

Peak settings (``--threshold``, ``--pixel_offset``, ``--(no)one_per_plateau``, the flags of
:func:`gcc_jax.inference.define_peak_flags`): the ones given, the others from the choice stored
by ``--choose_threshold`` (``localization_threshold.json`` in the workdir, or in the model
directory: a threshold with the detector it was chosen for), else from ``config.localization``
(:func:`gcc_jax.inference.resolve_peak_settings`). ``--choose_threshold`` picks the threshold
with the best F1 on the evaluated split for the config's detector (or the one given by the
flags) (:func:`gcc_jax.localization_scoring.choose_threshold`), stores it with that detector
and its precision / recall / F1 curve, and reports the metrics at it: choose on a validation
split, then evaluate the test split with the stored choice.
"""

from __future__ import annotations

import os

# TensorFlow (which feeds the evaluation data) reads this when it loads, at the imports below.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import json  # noqa: E402  (the imports after TF_CPP_MIN_LOG_LEVEL)
import pathlib  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402

from gcc_jax import cli, inference  # noqa: E402
from gcc_jax.data.point_annotations import MISSING_ANNOTATION_POLICIES  # noqa: E402
from gcc_jax.data.raw_folder_source import AnnotatedFolderSource  # noqa: E402
from gcc_jax.image_results import ImageResults  # noqa: E402
from gcc_jax.localization_scoring import LocalizationOptions  # noqa: E402
from gcc_jax.runtime import config as config_lib  # noqa: E402

__all__ = ["IMAGES_CSV_SUFFIX", "PICTURES_SUFFIX", "main", "output_name"]

# Per-image outputs are named after the JSON: eval_test_best.json -> eval_test_best_images.csv,
# eval_test_best_pictures/.
IMAGES_CSV_SUFFIX = "_images.csv"
PICTURES_SUFFIX = "_pictures"


def output_name(split: str, checkpoint: str) -> str:
    """``eval_<split>_<checkpoint>.json`` with the split expression made a plain file name.

    ``test[:10]`` gives ``eval_test_10_best.json``, ``train+val`` stays; a model directory's
    checkpoint is named by its folder.
    """
    name = checkpoint if inference.is_run_checkpoint(checkpoint) else pathlib.Path(checkpoint).name
    plain = re.sub(r"[^\w.+-]+", "_", split).strip("_")
    return f"eval_{plain}_{name}.json"


def main(argv) -> int:
    from absl import flags

    cli.quiet_library_logs(verbose=flags.FLAGS["verbosity"].present or flags.FLAGS.debug)
    return cli.run(lambda: _evaluate_command(argv, flags.FLAGS), debug=flags.FLAGS.debug)


def _evaluate_command(argv, flags_) -> None:
    if len(argv) > 1:
        raise ValueError(f"unexpected arguments: {argv[1:]}")
    if flags_.num_pictures < 0:
        raise ValueError(f"--num_pictures must be >= 0, got {flags_.num_pictures}")
    workdir = flags_.workdir
    config = config_lib.config_for_command(flags_.config, workdir)
    split, source = flags_.split, None
    if flags_.folder is not None:
        if split is not None:
            raise ValueError("--split and --folder exclude each other: --folder evaluates every image below it")
        source = AnnotatedFolderSource(flags_.folder, missing_annotation=flags_.missing_annotation)
        split = flags_.folder
    per_image = ImageResults(
        LocalizationOptions.from_config(config), num_worst=flags_.num_pictures, files=flags_.picture_files or ()
    )
    metrics = inference.evaluate_checkpoint(
        config, workdir=workdir, checkpoint=flags_.checkpoint, split=split, peaks=inference.given_peak_flags(flags_),
        choose_threshold=flags_.choose_threshold, progress=flags_.progress, on_image=per_image, source=source,
    )  # fmt: skip
    line = json.dumps(metrics)
    print(line)
    output = flags_.output
    if output is None and workdir is not None:
        named = metrics["split"] if source is None else f"folder_{source.root.resolve().name}"
        output = pathlib.Path(workdir) / output_name(named, flags_.checkpoint)
    if output is not None:
        pathlib.Path(output).write_text(line + "\n")
    _write_per_image(per_image, flags_, output)


def _write_per_image(per_image: ImageResults, flags_, output) -> None:
    """The per-image CSV and pictures, beside the JSON unless placed elsewhere; what was
    written (or why not) goes to stderr, stdout keeps the JSON line alone."""
    stem = pathlib.Path(output).with_suffix("") if output is not None else None
    csv_path = flags_.images_csv or (f"{stem}{IMAGES_CSV_SUFFIX}" if stem is not None else None)
    pictures_dir = flags_.pictures_dir or (f"{stem}{PICTURES_SUFFIX}" if stem is not None else None)
    if csv_path is None and pictures_dir is None:
        print("per-image results not written: give --workdir, --output, --images_csv or --pictures_dir", file=sys.stderr)
        return
    if csv_path is not None:
        per_image.write_csv(csv_path)
        print(f"per-image results ({len(per_image.results)} images): {csv_path}", file=sys.stderr)
    if pictures_dir is None:
        return
    if per_image.localization is None:
        print("no pictures: localization is disabled (config.localization.enabled)", file=sys.stderr)
        return
    if per_image.images_missing:
        print("no pictures: --choose_threshold keeps no images; run again without it to draw them", file=sys.stderr)
        return
    for name in per_image.unmatched_files:
        print(f"--picture_files: no evaluated image is named {name!r}", file=sys.stderr)
    written = per_image.write_pictures(pictures_dir)
    if written:
        print(f"{len(written)} pictures (green circles: found heads, red dots: missed, yellow crosses: false): "
              f"{pictures_dir}", file=sys.stderr)  # fmt: skip


def _define_flags() -> None:
    from absl import flags
    from ml_collections import config_flags

    config_flags.DEFINE_config_file("config", None, "Config file (default: the workdir's config.json).", lock_config=True)
    flags.DEFINE_string("workdir", None, "Training run directory.")
    flags.DEFINE_string("checkpoint", "best", "best | latest | STEP (of --workdir) | path of a model directory.")
    flags.DEFINE_string("split", None, "Split to evaluate (default: config.dataset.eval_split).")
    flags.DEFINE_string(
        "folder", None, "Evaluate every image below this folder of annotated images instead of a split (no build)."
    )
    flags.DEFINE_enum(
        "missing_annotation", "error", MISSING_ANNOTATION_POLICIES,
        "--folder images without annotation: error (refused, listed) or empty (images with no heads).",
    )  # fmt: skip
    flags.DEFINE_string("output", None, "JSON file for the metrics (default: WORKDIR/eval_<split>_<checkpoint>.json).")
    inference.define_peak_flags()
    flags.DEFINE_boolean(
        "choose_threshold", False,
        f"Choose the localization threshold with the best F1 on --split and store it ({inference.THRESHOLD_FILE}).",
    )  # fmt: skip
    flags.DEFINE_string(
        "images_csv", None, f"CSV file of per-image results (default: beside --output, <name>{IMAGES_CSV_SUFFIX})."
    )
    flags.DEFINE_string(
        "pictures_dir", None, f"Folder for the localization pictures (default: beside --output, <name>{PICTURES_SUFFIX})."
    )
    flags.DEFINE_integer("num_pictures", 10, "Draw this many images with the largest absolute count error (0: none).")
    flags.DEFINE_list("picture_files", None, "Also draw these images (file names as in the CSV's file column).")
    flags.DEFINE_boolean("progress", True, "Show a progress bar with the time left on stderr.")
    cli.define_debug_flag()


if __name__ == "__main__":
    from absl import app

    _define_flags()
    app.run(main, flags_parser=cli.parse_absl_flags)
