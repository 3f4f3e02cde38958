"""``python -m gcc_jax.predict``: count and locate the people in image and video files.

    python -m gcc_jax.predict --checkpoint runs/synthetic crowd.jpg more/ --out predictions/
    python -m gcc_jax.predict --checkpoint runs/gl_qnrf_model_dir photos/ --out out/ --threshold 0.1
    python -m gcc_jax.predict --checkpoint runs/synthetic clip.mp4 --out out/ --fps 2 --annotate

``--checkpoint`` is a training workdir (its ``--which`` checkpoint, default the best, and its
saved config) or a model directory (``python -m gcc_jax.convert_weights``). Inputs are image
and video files or folders (their ``.jpg``/``.jpeg``/``.png``/``.bmp``/``.tif``/``.tiff``/
``.webp`` images and ``.mp4``/``.mov``/``.avi``/``.mkv``/``.webm`` videos, any case, not
recursive). Per image it writes the files of :mod:`gcc_jax.predict._outputs` into ``--out``,
per video those of :mod:`gcc_jax.predict._video_outputs` (frames chosen by ``--every`` or
``--fps``, ``--annotate`` for the annotated video; a progress bar on stderr), then
``summary.csv`` (``summary_videos.csv``) / ``summary.json``, and prints a table with the number
of compiled programs. An image or video that cannot be read or processed is named on one
``error:`` line and listed in the summary with the reason (a damaged video keeps the files of
the frames that decoded); the others are processed all the same, and the command then exits
with status 1.

Peaks (the flags of :func:`gcc_jax.inference.define_peak_flags`): the flags given are used,
and the settings not given are taken **whole** from the choice
``python -m gcc_jax.evaluate --choose_threshold`` stored with the checkpoint — its threshold
with the detector it was chosen for (pixel offset, one point per plateau or every pixel of
it) —, else from the config's ``localization`` block, else GL's recipe
(:data:`gcc_jax.localization.DEFAULT_THRESHOLD`, every pixel of a plateau of equal maxima):
the points are those evaluate scores for the checkpoint. ``--one_per_plateau`` gives one point
per head where the upsampled map has a plateau (it does along image borders);
``--no-one_per_plateau`` every pixel of it. ``--engine onnxruntime`` runs the network in ONNX
Runtime instead of ``jax.jit`` (:mod:`gcc_jax.predict._engines`).
"""

from __future__ import annotations

import argparse
import logging
import os
import pathlib
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from gcc_jax import cli
from gcc_jax.inference import define_peak_flags, given_peak_flags
from gcc_jax.predict._outputs import (
    VIDEO_SUMMARY_FIELDS,
    format_table,
    format_video_table,
    write_prediction,
    write_summary,
)
from gcc_jax.predict._engines import ENGINES
from gcc_jax.predict._predictor import IMAGE_SUFFIXES, Predictor, load_image
from gcc_jax.predict._video import VIDEO_SUFFIXES, FrameSampling, import_av
from gcc_jax.predict._video_outputs import predict_video

__all__ = ["expand_inputs", "is_video", "main", "predict_files"]

_SUFFIXES = IMAGE_SUFFIXES + VIDEO_SUFFIXES


def is_video(path: str | os.PathLike) -> bool:
    """Whether predict treats ``path`` as a video: its suffix, in any case, is one of
    :data:`~gcc_jax.predict.VIDEO_SUFFIXES`."""
    return pathlib.Path(path).suffix.lower() in VIDEO_SUFFIXES


def expand_inputs(inputs: Sequence[str | os.PathLike]) -> list[pathlib.Path]:
    """Image and video files of ``inputs``: files as given, folders replaced by their image and
    video files (:data:`~gcc_jax.predict.IMAGE_SUFFIXES`,
    :data:`~gcc_jax.predict.VIDEO_SUFFIXES`, any case, sorted by name, not recursive).

    Raises:
      FileNotFoundError: an input that does not exist.
      ValueError: no file at all.
    """
    files = []
    for item in map(pathlib.Path, inputs):
        if item.is_dir():
            files += sorted(p for p in item.iterdir() if p.is_file() and p.suffix.lower() in _SUFFIXES)
        elif item.is_file():
            files.append(item)
        else:
            raise FileNotFoundError(f"input {item} does not exist")
    if not files:
        raise ValueError(f"no image or video files in {[str(i) for i in inputs]} (suffixes {_SUFFIXES})")
    return files


def _unique_names(files: Sequence[pathlib.Path]) -> list[str]:
    """File stems, with ``_2``, ``_3``, ... added to repeats so that outputs never collide."""
    seen: dict[str, int] = {}
    names = []
    for path in files:
        stem = path.stem
        seen[stem] = seen.get(stem, 0) + 1
        names.append(stem if seen[stem] == 1 else f"{stem}_{seen[stem]}")
    return names


def predict_files(
    files: Sequence[str | os.PathLike],
    predictor: Predictor,
    out_dir: str | os.PathLike,
    *,
    max_side: int = 2048,
    progress: Callable[[str], None] | None = None,
    settings: Mapping[str, Any] | None = None,
    report_failure: Callable[[pathlib.Path, str], None] | None = None,
    sampling: FrameSampling = FrameSampling(),
    annotate: bool = False,
    video_progress: bool = False,
) -> list[dict]:
    """Runs ``predictor`` on image and video files and writes every output into ``out_dir``.

    Args:
      files: image and video paths (see :func:`expand_inputs`; videos by :func:`is_video`).
      predictor: the loaded model.
      out_dir: output folder.
      max_side: longest side of the pictures (and of the annotated video frames).
      progress: called with a line per image or video (e.g. ``print``).
      settings: extra entries for ``summary.json``'s settings (e.g. the checkpoint), beside
        :meth:`Predictor.describe`.
      report_failure: called with ``(path, reason)`` for each file that could not be processed
        (unreadable, truncated, not an image / a video; a damaged video after its frames that
        decoded were counted); the other files are processed all the same.
      sampling: which frames of a video are counted.
      annotate: also write each video's annotated video.
      video_progress: draw a progress bar per video on stderr.

    Returns:
      The summary rows, also written as ``summary.csv`` / ``summary_videos.csv`` /
      ``summary.json``: per image :data:`~gcc_jax.predict.SUMMARY_FIELDS`, per video
      :data:`~gcc_jax.predict.VIDEO_SUMMARY_FIELDS`; a failed file's row holds its ``error``.
    """
    files = [pathlib.Path(f) for f in files]
    rows = []
    for path, name in zip(files, _unique_names(files)):
        if is_video(path):
            rows.append(
                _predict_video_file(
                    path, name, predictor, out_dir, sampling=sampling, annotate=annotate, max_side=max_side,
                    progress=progress, video_progress=video_progress, report_failure=report_failure,
                )  # fmt: skip
            )
            continue
        start = time.perf_counter()
        try:
            image = load_image(path)
            prediction = predictor.predict(image, name=name)
            seconds = time.perf_counter() - start
            write_prediction(
                prediction, image, out_dir, source=str(path), peaks=predictor.peaks, max_side=max_side,
            )  # fmt: skip
        except Exception as err:  # one bad image must not cost the others their results
            reason = cli.error_line(err).removeprefix(f"{path}: ")
            rows.append({"image": str(path), "name": name, "error": reason})
            if report_failure is not None:
                report_failure(path, reason)
            continue
        row = {
            "image": str(path), "name": name, "height": prediction.image_hw[0], "width": prediction.image_hw[1],
            "count": prediction.count, "num_points": len(prediction.points), "num_tiles": prediction.num_tiles,
            "seconds": seconds, "error": "",
        }  # fmt: skip
        rows.append(row)
        if progress is not None:
            progress(f"{name}: count {prediction.count:.1f}, {len(prediction.points)} heads ({seconds:.2f} s)")
    settings = {**(settings or {}), **predictor.describe()}
    if any(map(is_video, files)):
        settings.update(frame_every=sampling.every, frame_fps=sampling.fps, annotate=annotate)
    write_summary(rows, out_dir, settings=settings)
    return rows


def _predict_video_file(
    path: pathlib.Path,
    name: str,
    predictor: Predictor,
    out_dir: str | os.PathLike,
    *,
    progress: Callable[[str], None] | None,
    video_progress: bool,
    report_failure: Callable[[pathlib.Path, str], None] | None,
    **options,
) -> dict:
    """:func:`predict_video` on one file of :func:`predict_files`, with its failures reported
    the same way as an image's."""
    try:
        row = predict_video(
            path, predictor, out_dir, name=name, progress=video_progress, report_failure=report_failure, **options
        )
    except Exception as err:  # one bad video must not cost the other files their results
        reason = cli.error_line(err).removeprefix(f"{path}: ")
        if report_failure is not None:
            report_failure(path, reason)
        return {**dict.fromkeys(VIDEO_SUMMARY_FIELDS), "video": str(path), "name": name, "frames_decoded": 0,
                "frames_counted": 0, "error": reason}  # fmt: skip
    if progress is not None and row["frames_counted"]:
        progress(
            f"{name}: {row['frames_counted']} of {row['frames_decoded']} frames counted, mean count "
            f"{row['mean_count']:.1f}, max {row['max_count']:.1f} at {row['max_count_time_s']:.2f} s "
            f"({row['seconds']:.2f} s, {row['frames_per_s']:.2f} frames/s)"
        )
    return row


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m gcc_jax.predict",
        description="Count and locate people in images and videos with a trained model.",
    )
    parser.add_argument("inputs", nargs="+", help="image and video files and/or folders of them")
    parser.add_argument("--checkpoint", required=True, help="training workdir or model directory")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--which", default="best", help="best | latest | STEP (training workdirs)")
    define_peak_flags(parser)
    parser.add_argument("--tile_size", type=int, default=1024, help="longest side run whole; tile side above it")
    parser.add_argument("--overlap", type=int, default=256, help="pixels shared by neighbouring tiles")
    parser.add_argument("--bucket", type=int, default=128, help="image sides are padded to a multiple of this")
    parser.add_argument("--max_side", type=int, default=2048, help="longest side of the output pictures")
    parser.add_argument(
        "--engine", default="jax", choices=ENGINES,
        help="what runs the network: jax (jax.jit, default) or onnxruntime (converted to ONNX once per image "
        "shape; faster on CPUs, needs the export extra)",
    )  # fmt: skip
    video = parser.add_argument_group("videos")
    video.add_argument("--every", type=int, default=1, help="count every N-th frame of a video (default: all)")
    video.add_argument("--fps", type=float, default=None, help="count at most this many frames per second of video")
    video.add_argument("--annotate", action="store_true", help="also write <name>_annotated.mp4 per video")
    video.add_argument("--noprogress", action="store_true", help="no progress bar for videos")
    cli.add_debug_argument(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit status (1 if any image failed)."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    cli.quiet_library_logs(verbose=args.debug)
    return cli.run(lambda: _predict(args), debug=args.debug)


def _predict(args: argparse.Namespace) -> int:
    out = pathlib.Path(args.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; give a folder for the outputs")
    sampling = FrameSampling(every=args.every, fps=args.fps)
    files = expand_inputs(args.inputs)
    videos = sum(map(is_video, files))
    if videos:
        import_av()  # without PyAV: one error line before the model is loaded
    predictor = Predictor.from_checkpoint(
        args.checkpoint, which=args.which, **given_peak_flags(args), tile_size=args.tile_size, overlap=args.overlap,
        bucket=args.bucket, engine=args.engine,
    )  # fmt: skip
    inputs = f"{len(files) - videos} image(s)" + (f", {videos} video(s)" if videos else "")
    print(
        f"{inputs}; checkpoint {args.checkpoint} (step {predictor.step}); threshold "
        f"{predictor.peaks.threshold:g} ({predictor.peaks_source}), pixel offset {predictor.peaks.pixel_offset:g}, "
        f"one point per plateau: {predictor.peaks.one_per_plateau}; engine {predictor.engine}",
        flush=True,
    )
    rows = predict_files(
        files, predictor, args.out, max_side=args.max_side, progress=lambda line: print(line, flush=True),
        settings={"checkpoint": str(args.checkpoint), "which": args.which},
        report_failure=lambda path, reason: print(f"error: {path}: {reason}", file=sys.stderr, flush=True),
        sampling=sampling, annotate=args.annotate, video_progress=not args.noprogress,
    )  # fmt: skip
    if videos < len(rows):
        print(format_table(rows))
    if videos:
        print(format_video_table(rows))
    print(f"{predictor.num_compilations} compiled program(s) for {inputs}; outputs in {args.out}")
    failed = [r for r in rows if r["error"]]
    if failed:
        tables = "summary.csv" if videos == 0 else "summary_videos.csv" if videos == len(rows) else "the summaries"
        kind = "image(s)" if videos == 0 else "video(s)" if videos == len(rows) else "file(s)"
        print(f"error: {len(failed)} of {len(rows)} {kind} could not be processed (see {tables})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
