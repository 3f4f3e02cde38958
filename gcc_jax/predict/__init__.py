"""Inference on images: counts, density maps and head points, pictures, benchmark submissions.

- :func:`count` — ``count(images, checkpoint=DIR)``: one :class:`Prediction` (``count``,
  ``density``, ``points``, ``scores``, ...) per image path or uint8 array.
- :class:`Predictor` — a loaded model for repeated use (:meth:`Predictor.from_checkpoint`,
  :meth:`Predictor.predict`): images of any size, bucketed padded shapes (few compilations,
  :attr:`Predictor.num_compilations`) and overlapping tiles above ``tile_size`` (bounded
  memory); see :mod:`gcc_jax.predict._predictor` for the rules.
- ``python -m gcc_jax.predict --checkpoint DIR IMAGES... --out OUT`` — pictures, CSV / JSON
  points and a summary per run (:mod:`gcc_jax.predict._run`, :mod:`gcc_jax.predict._outputs`).
- ``python -m gcc_jax.predict.nwpu_submission`` — NWPU-Crowd test-set result files
  (:mod:`gcc_jax.predict.nwpu_submission`).

``DIR`` is a training workdir (its best checkpoint and saved config) or a model directory
written by ``python -m gcc_jax.convert_weights``. The peak threshold is the caller's, else the
one ``python -m gcc_jax.evaluate --choose_threshold`` stored with the checkpoint, else the
config's ``localization.threshold``, else :data:`DEFAULT_THRESHOLD` (GL's recipe); loading
the model and resolving these settings is :mod:`gcc_jax.inference`'s.
"""

from gcc_jax.inference import DEFAULT_THRESHOLD, PeakSettings, resolve_localization
from gcc_jax.predict._outputs import (
    SUMMARY_FIELDS,
    density_overlay,
    format_table,
    points_picture,
    write_prediction,
    write_summary,
)
from gcc_jax.predict._predictor import IMAGE_SUFFIXES, Prediction, Predictor, count, load_image
from gcc_jax.predict._run import expand_inputs, predict_files

__all__ = [
    "DEFAULT_THRESHOLD",
    "IMAGE_SUFFIXES",
    "SUMMARY_FIELDS",
    "PeakSettings",
    "Prediction",
    "Predictor",
    "count",
    "density_overlay",
    "expand_inputs",
    "format_table",
    "load_image",
    "points_picture",
    "predict_files",
    "resolve_localization",
    "write_prediction",
    "write_summary",
]
