"""Deploying a trained model outside gcc_jax: StableHLO (``jax.export``), ONNX and LiteRT.

``python -m gcc_jax.export --checkpoint CKPT --out DIR --format stablehlo|onnx|tflite``
(:mod:`gcc_jax.export.__main__`), or :func:`export_model`. The exported program takes uint8
RGB images and returns the density map, the count and the peak map (:mod:`gcc_jax.export._graph`); a
``metadata.json`` beside it says the model, threshold and input / output shapes.
"""

from gcc_jax.export._formats import FILE_NAMES, FORMATS
from gcc_jax.export._graph import OUTPUT_NAMES, serving_function, upsample_peak_values
from gcc_jax.export._writer import INPUT_NAME, METADATA_FILE, export_model

__all__ = [
    "FILE_NAMES",
    "FORMATS",
    "INPUT_NAME",
    "METADATA_FILE",
    "OUTPUT_NAMES",
    "export_model",
    "serving_function",
    "upsample_peak_values",
]
