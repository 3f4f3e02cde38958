"""``python -m gcc_jax.predict``: count and locate the people in image files.

    python -m gcc_jax.predict --checkpoint runs/synthetic crowd.jpg more/ --out predictions/
    python -m gcc_jax.predict --checkpoint runs/gl_qnrf_model_dir photos/ --out out/ --threshold 0.1

``--checkpoint`` is a training workdir (its ``--which`` checkpoint, default the best, and its
saved config) or a model directory (``python -m gcc_jax.convert_weights``). Inputs are image
files or folders (their ``.jpg``/``.jpeg``/``.png``/``.bmp``/``.tif``/``.tiff``/``.webp`` files,
not recursive). Per image it writes the files of :mod:`gcc_jax.predict._outputs` into
``--out``, then ``summary.csv`` / ``summary.json``, and prints a table with the number of
compiled programs. An image that cannot be read or processed is named on one ``error:`` line
and listed in the summary with the reason; the others are processed all the same, and the
command then exits with status 1. The peak threshold is ``--threshold``, else the one
``python -m gcc_jax.evaluate --choose_threshold`` stored with the checkpoint, else the
config's, else GL's recipe (:data:`gcc_jax.localization.DEFAULT_THRESHOLD`). Each head gets
one point (``--no-one_per_plateau`` gives every pixel of a plateau of equal maxima, the
reference recipe that paper-protocol evaluation keeps).
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
from gcc_jax.localization import DEFAULT_THRESHOLD
from gcc_jax.predict._outputs import format_table, write_prediction, write_summary
from gcc_jax.predict._predictor import IMAGE_SUFFIXES, Predictor, load_image

__all__ = ["expand_inputs", "main", "predict_files"]


def expand_inputs(inputs: Sequence[str | os.PathLike]) -> list[pathlib.Path]:
    """Image files of ``inputs``: files as given, folders replaced by their image files
    (:data:`~gcc_jax.predict.IMAGE_SUFFIXES`, sorted by name, not recursive).

    Raises:
      FileNotFoundError: an input that does not exist.
      ValueError: no image at all.
    """
    files = []
    for item in map(pathlib.Path, inputs):
        if item.is_dir():
            files += sorted(p for p in item.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        elif item.is_file():
            files.append(item)
        else:
            raise FileNotFoundError(f"input {item} does not exist")
    if not files:
        raise ValueError(f"no image files in {[str(i) for i in inputs]} (suffixes {IMAGE_SUFFIXES})")
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
) -> list[dict]:
    """Runs ``predictor`` on image files and writes every output into ``out_dir``.

    Args:
      files: image paths (see :func:`expand_inputs`).
      predictor: the loaded model.
      out_dir: output folder.
      max_side: longest side of the pictures.
      progress: called with a line per image (e.g. ``print``).
      settings: extra entries for ``summary.json``'s settings (e.g. the checkpoint), beside
        :meth:`Predictor.describe`.
      report_failure: called with ``(path, reason)`` for each image that could not be processed
        (unreadable, truncated, not an image); the other images are processed all the same.

    Returns:
      The summary rows (:data:`~gcc_jax.predict.SUMMARY_FIELDS`), also written as
      ``summary.csv`` / ``summary.json``; a failed image's row holds its ``error``.
    """
    files = [pathlib.Path(f) for f in files]
    rows = []
    for path, name in zip(files, _unique_names(files)):
        start = time.perf_counter()
        try:
            image = load_image(path)
            prediction = predictor.predict(image, name=name)
            seconds = time.perf_counter() - start
            write_prediction(
                prediction, image, out_dir, source=str(path), threshold=predictor.threshold,
                pixel_offset=predictor.pixel_offset, max_side=max_side,
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
    write_summary(rows, out_dir, settings={**(settings or {}), **predictor.describe()})
    return rows


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m gcc_jax.predict", description="Count and locate people in images with a trained model."
    )
    parser.add_argument("inputs", nargs="+", help="image files and/or folders of images")
    parser.add_argument("--checkpoint", required=True, help="training workdir or model directory")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--which", default="best", help="best | latest | STEP (training workdirs)")
    parser.add_argument("--threshold", type=float, default=None, help=f"peak threshold (default: stored choice, config, {DEFAULT_THRESHOLD})")
    parser.add_argument("--pixel_offset", type=float, default=None, help="pixels added to point coordinates")
    parser.add_argument(
        "--one_per_plateau", action=argparse.BooleanOptionalAction, default=True,
        help="one point per head where the upsampled map has a plateau of equal maxima (default); "
        "--no-one_per_plateau keeps every pixel of it, the reference recipe used by paper-protocol evaluation",
    )  # fmt: skip
    parser.add_argument("--tile_size", type=int, default=1024, help="longest side run whole; tile side above it")
    parser.add_argument("--overlap", type=int, default=256, help="pixels shared by neighbouring tiles")
    parser.add_argument("--bucket", type=int, default=128, help="image sides are padded to a multiple of this")
    parser.add_argument("--max_side", type=int, default=2048, help="longest side of the output pictures")
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
    files = expand_inputs(args.inputs)
    predictor = Predictor.from_checkpoint(
        args.checkpoint, which=args.which, threshold=args.threshold, pixel_offset=args.pixel_offset,
        one_per_plateau=args.one_per_plateau, tile_size=args.tile_size, overlap=args.overlap, bucket=args.bucket,
    )  # fmt: skip
    print(
        f"{len(files)} image(s); checkpoint {args.checkpoint} (step {predictor.step}); threshold "
        f"{predictor.threshold:g} ({predictor.threshold_source}), pixel offset {predictor.pixel_offset:g}, "
        f"one point per plateau: {predictor.one_per_plateau}",
        flush=True,
    )
    rows = predict_files(
        files, predictor, args.out, max_side=args.max_side, progress=lambda line: print(line, flush=True),
        settings={"checkpoint": str(args.checkpoint), "which": args.which},
        report_failure=lambda path, reason: print(f"error: {path}: {reason}", file=sys.stderr, flush=True),
    )  # fmt: skip
    print(format_table(rows))
    print(f"{predictor.num_compilations} compiled program(s) for {len(rows)} image(s); outputs in {args.out}")
    failed = [r for r in rows if r["error"]]
    if failed:
        print(f"error: {len(failed)} of {len(rows)} image(s) could not be processed (see summary.csv)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
