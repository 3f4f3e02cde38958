"""Writing the serving function (:func:`gcc_jax.export.serving_function`) in each format.

* ``stablehlo``: ``jax.export`` with symbolic ``N, H, W``, serialized (``model.stablehlo``);
  ``jax.export.deserialize(bytes).call(images)`` runs it with JAX alone, lowered for CPU,
  CUDA and TPU.
* ``onnx``: jax2onnx (``model.onnx``, opset 21), symbolic ``N, H, W`` (one file for every
  image size and batch). The network and the peak map are written with operations jax2onnx
  converts at symbolic sizes (concatenation and slices rather than ``lax.pad``, strided
  slices rather than ``nn.max_pool``; see ``gcc_jax.models._vgg`` and
  :mod:`gcc_jax.export._graph`). jax2tf + tf2onnx was the other candidate; jax2tf now always
  embeds the program as one ``XlaCallModule`` op, which tf2onnx cannot convert.
* ``tflite``: jax2tf then TensorFlow's TFLite converter (``model.tflite``), for one fixed
  input size (``[1, H, W, 3]``; see :func:`write_tflite`): the converter lowers the embedded
  StableHLO to TFLite built-in operators only for static shapes.
"""

from __future__ import annotations

import contextlib
import io
import logging
import pathlib
import tempfile
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import export

__all__ = ["FORMATS", "FILE_NAMES", "ONNX_OPSET", "write_onnx", "write_stablehlo", "write_tflite"]

FORMATS = ("onnx", "tflite", "stablehlo")
FILE_NAMES = {"onnx": "model.onnx", "tflite": "model.tflite", "stablehlo": "model.stablehlo"}
# Platforms the StableHLO file is lowered for (jax.export multi-platform lowering).
STABLEHLO_PLATFORMS = ("cpu", "cuda", "tpu")
# The ONNX opset of the exported files (and of predict --engine onnxruntime): ONNX Runtime 1.20+.
ONNX_OPSET = 21


def write_stablehlo(serve: Callable, path: pathlib.Path) -> None:
    """Serializes ``serve`` for uint8 ``[N, H, W, 3]`` of symbolic ``N, H, W`` to ``path``."""
    spec = jax.ShapeDtypeStruct(export.symbolic_shape("N, H, W, 3"), jnp.uint8)
    exported = export.export(jax.jit(serve), platforms=STABLEHLO_PLATFORMS)(spec)
    path.write_bytes(exported.serialize())


def write_onnx(serve: Callable, path: pathlib.Path, *, input_name: str, output_names: tuple[str, ...]) -> None:
    """Converts ``serve`` with jax2onnx for uint8 ``[N, H, W, 3]`` of symbolic ``N, H, W``.

    Raises:
      ModuleNotFoundError: jax2onnx is not installed (the ``export`` extra).
    """
    try:
        from jax2onnx import to_onnx
    except ModuleNotFoundError as err:
        raise ModuleNotFoundError(f"ONNX export needs jax2onnx: pip install 'gcc_jax[export]' ({err})") from err

    spec = jax.ShapeDtypeStruct(export.symbolic_shape("N, H, W, 3"), jnp.uint8)
    # jax2onnx 0.13 imports all its plugin modules on the first conversion, logs a traceback
    # for each example plugin whose optional library does not import (none is used here), and
    # prints "DEBUG: ..." lines for every Flax convolution: kept out of the user's terminal.
    quiet = ("jax2onnx.plugins.plugin_system", "onnx_ir.serde")
    levels = {name: logging.getLogger(name).level for name in quiet}
    for name in quiet:
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            model = to_onnx(
                serve, [spec], model_name="gcc_jax", opset=ONNX_OPSET, input_names=[input_name],
                output_names=list(output_names),
            )  # fmt: skip
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
    path.write_bytes(model.SerializeToString())


def write_tflite(
    serve: Callable, path: pathlib.Path, *, height: int, width: int, input_name: str, output_names: tuple[str, ...]
) -> None:
    """Converts ``serve`` for uint8 ``[1, height, width, 3]`` with jax2tf and TFLite; the
    signature ``serving_default`` has the input ``input_name`` and the outputs ``output_names``."""
    import tensorflow as tf
    from jax.experimental import jax2tf

    converted = jax2tf.convert(serve, with_gradient=False)

    def named(images):
        # A dict: the signature's outputs get the names of the other formats.
        return dict(zip(output_names, converted(images)))

    spec = tf.TensorSpec([1, height, width, 3], tf.uint8, name=input_name)
    module = tf.Module()
    module.serve = tf.function(named, autograph=False, input_signature=[spec])
    # Through a SavedModel: the converter keeps its signature (named inputs and outputs),
    # which it drops when given the concrete function alone.
    with tempfile.TemporaryDirectory() as saved:
        tf.saved_model.save(module, saved, signatures={"serving_default": module.serve.get_concrete_function()})
        converter = tf.lite.TFLiteConverter.from_saved_model(saved)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        path.write_bytes(converter.convert())
