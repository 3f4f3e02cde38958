"""Exporting a trained model: load it, build the serving function, write the file and its
``metadata.json``."""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any

import jax

import gcc_jax
from gcc_jax.export import _formats
from gcc_jax.export._graph import OUTPUT_NAMES, serving_function
from gcc_jax.inference import open_trained_model, resolve_peak_settings
from gcc_jax.models import STRIDE
from gcc_jax.runtime.evaluation import local_eval_mesh

__all__ = ["INPUT_NAME", "METADATA_FILE", "export_model"]

INPUT_NAME = "images"
METADATA_FILE = "metadata.json"
_WINDOW = 3


def _io_shapes(size: tuple[int, int] | None) -> dict[str, Any]:
    if size is None:
        batch, height, width = "N", "H", "W"
        cells = ["N", "ceil(H/8)", "ceil(W/8)"]
    else:
        batch, (height, width) = 1, size
        cells = [1, -(-height // STRIDE), -(-width // STRIDE)]
    return {
        "inputs": {INPUT_NAME: {"dtype": "uint8", "shape": [batch, height, width, 3], "layout": "NHWC, RGB 0-255"}},
        "outputs": {
            "density": {"dtype": "float32", "shape": cells, "about": "people per 8x8 pixel cell"},
            "count": {"dtype": "float32", "shape": [batch], "about": "sum of each density map"},
            "peaks": {
                "dtype": "float32", "shape": [batch, height, width],
                "about": "upsampled density at each head, 0 elsewhere: "
                "points (x, y) = np.argwhere(peaks[i] > 0)[:, ::-1], scores = peaks[i][y, x]",
            },
        },
    }  # fmt: skip


def export_model(
    checkpoint: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    format: str,
    which: str = "best",
    size: tuple[int, int] | None = None,
    threshold: float | None = None,
    one_per_plateau: bool | None = None,
) -> pathlib.Path:
    """Writes a trained model as ``format`` into ``out_dir``, with ``metadata.json`` beside it.

    Args:
      checkpoint: a training workdir or a model directory (as ``gcc_jax.predict`` takes).
      out_dir: output folder (created).
      format: ``"stablehlo"`` or ``"onnx"`` (any ``[N, H, W, 3]``), or ``"tflite"`` (one input
        size, ``size``).
      which: ``"best"``, ``"latest"`` or a step (workdirs).
      size: ``(height, width)`` in pixels of the input of a TFLite file; ``None`` for
        StableHLO and ONNX (symbolic sizes).
      threshold: peak threshold; ``None``: the checkpoint's (as predict resolves it,
        :func:`gcc_jax.inference.resolve_peak_settings`).
      one_per_plateau: one peak pixel per plateau of equal maxima, or every pixel of it;
        ``None``: the detector the threshold goes with (as predict resolves it).

    Returns:
      The path of the model file.

    Raises:
      ValueError: an unknown format, a size missing for TFLite or given for StableHLO / ONNX,
        or a size that is not two positive integers.
      FileNotFoundError: ``checkpoint`` is neither a workdir nor a model directory.
    """
    if format not in _formats.FORMATS:
        raise ValueError(f"format must be one of {_formats.FORMATS}, got {format!r}")
    if format != "tflite" and size is not None:
        raise ValueError(f"--size is for tflite only: a {format} file takes any size")
    if format == "tflite":
        if size is None:
            raise ValueError(f"{format} needs the input size: --size HEIGHT WIDTH (pixels)")
        if len(size) != 2 or any(isinstance(s, bool) or int(s) != s or s < 1 for s in size):
            raise ValueError(f"size must be two positive integers (height, width), got {size!r}")
        size = (int(size[0]), int(size[1]))
    trained = open_trained_model(checkpoint, mesh=local_eval_mesh(1), which=which)
    given = {"threshold": threshold, "one_per_plateau": one_per_plateau}
    resolved = resolve_peak_settings(
        trained.checkpoint, workdir=trained.workdir, config=trained.config, given=given, step=trained.step
    )
    peaks = resolved.settings
    # Host copies: the weights become constants of the exported program.
    variables = jax.device_get(trained.variables)
    serve = serving_function(
        trained.model, variables, threshold=peaks.threshold, one_per_plateau=peaks.one_per_plateau
    )
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / _formats.FILE_NAMES[format]
    if format == "stablehlo":
        _formats.write_stablehlo(serve, path)
    elif format == "onnx":
        _formats.write_onnx(serve, path, input_name=INPUT_NAME, output_names=OUTPUT_NAMES)
    else:
        _formats.write_tflite(
            serve, path, height=size[0], width=size[1], input_name=INPUT_NAME, output_names=OUTPUT_NAMES
        )
    config = trained.config
    metadata = {
        "format": format, "file": path.name, "gcc_jax_version": gcc_jax.__version__,
        "model": {"width": trained.model.width, "upsample": trained.model.upsample, "output": trained.model.output},
        "stride": STRIDE, "threshold": peaks.threshold, "threshold_source": resolved.source,
        "one_per_plateau": peaks.one_per_plateau, "window": _WINDOW,
        "pixel_offset": peaks.pixel_offset,
        "pixel_offset_note": "not applied in the graph: predict adds it to the points",
        "training": {
            "checkpoint": str(trained.checkpoint), "step": trained.step,
            "workdir": None if trained.workdir is None else str(trained.workdir),
            "dataset": None if config is None else config.dataset.name,
            "loss": None if config is None else config.loss.name,
        },
        "output_names": list(OUTPUT_NAMES), "input_name": INPUT_NAME,
        **_io_shapes(size),
    }  # fmt: skip
    (out / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n")
    return path
