"""``python -m gcc_jax.export``: write a trained model as StableHLO, ONNX or LiteRT.

    python -m gcc_jax.export --checkpoint runs/synthetic --out exported/ --format stablehlo
    python -m gcc_jax.export --checkpoint runs/synthetic --out exported/ --format onnx
    python -m gcc_jax.export --checkpoint runs/synthetic --out exported/ --format tflite --size 768 1024

``--checkpoint`` is a training workdir (its ``--which`` checkpoint) or a model directory, as in
``gcc_jax.predict``. StableHLO and ONNX take any ``[N, H, W, 3]``; TFLite is written for one
input size ``[1, H, W, 3]`` (``--size``). ONNX needs jax2onnx (the ``export`` extra).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from gcc_jax import cli
from gcc_jax.export import FORMATS, METADATA_FILE, export_model


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m gcc_jax.export", description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="training workdir or model directory")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--format", required=True, choices=FORMATS)
    parser.add_argument("--which", default="best", help="best | latest | STEP (training workdirs)")
    parser.add_argument("--size", type=int, nargs=2, metavar=("HEIGHT", "WIDTH"), help="input size (tflite)")
    parser.add_argument("--threshold", type=float, default=None, help="peak threshold (default: as predict)")
    parser.add_argument(
        "--one_per_plateau", action=argparse.BooleanOptionalAction, default=None,
        help="one peak pixel per plateau of equal maxima, or every pixel of it (default: as predict)",
    )  # fmt: skip
    cli.add_debug_argument(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit status."""
    args = _parser().parse_args(argv)

    def work() -> int:
        path = export_model(
            args.checkpoint, args.out, format=args.format, which=args.which,
            size=None if args.size is None else tuple(args.size), threshold=args.threshold,
            one_per_plateau=args.one_per_plateau,
        )  # fmt: skip
        print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB) and {path.parent / METADATA_FILE}")
        return 0

    return cli.run(work, debug=args.debug)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
