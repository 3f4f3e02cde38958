"""Inference on images and videos: counts, density maps and head points, pictures, benchmark submissions.

- :func:`count` — ``count(images, checkpoint=DIR)``: one :class:`Prediction` (``count``,
  ``density``, ``points``, ``scores``, ...) per image path or uint8 array.
- :class:`Predictor` — a loaded model for repeated use (:meth:`Predictor.from_checkpoint`,
  :meth:`Predictor.predict`): images of any size, bucketed padded shapes (few compilations,
  :attr:`Predictor.num_compilations`) and overlapping tiles above ``tile_size`` (bounded
  memory); see :mod:`gcc_jax.predict._predictor` for the rules. Its forward pass runs in an
  engine (``engine="jax"``: ``jax.jit``; ``"onnxruntime"``: the network converted to ONNX;
  :mod:`gcc_jax.predict._engines`).
- :func:`count_video` — ``count_video("clip.mp4", checkpoint=DIR)``: an iterator of
  :class:`FramePrediction` (``frame``, ``time_s``, ``count``, ``points``, ...) per counted frame
  of a video (PyAV, ``pip install 'gcc_jax[video]'``), frames chosen by a
  :class:`FrameSampling` (every N-th, or a target rate); see :mod:`gcc_jax.predict._video`.
- ``python -m gcc_jax.predict --checkpoint DIR IMAGES_OR_VIDEOS... --out OUT`` — pictures,
  CSV / JSON points and a summary per run; per video a CSV of counts per frame, the points per
  frame (JSON Lines), a plot and optionally an annotated video (:mod:`gcc_jax.predict._run`,
  :mod:`gcc_jax.predict._outputs`, :mod:`gcc_jax.predict._video_outputs`).
- ``python -m gcc_jax.predict.nwpu_submission`` — NWPU-Crowd test-set result files
  (:mod:`gcc_jax.predict.nwpu_submission`).

``DIR`` is a training workdir (its best checkpoint and saved config) or a model directory
written by ``python -m gcc_jax.convert_weights``. The peak settings (:class:`PeakSettings`:
threshold, pixel offset, one point per plateau) are those the caller gives, the others taken
whole from the choice ``python -m gcc_jax.evaluate --choose_threshold`` stored with the
checkpoint (so its threshold keeps the detector it was chosen for), else from the config's
``localization`` block, else GL's recipe (:data:`DEFAULT_THRESHOLD`, every pixel of a plateau);
loading the model and resolving these settings is :mod:`gcc_jax.inference`'s
(:func:`resolve_peak_settings`).
"""

from gcc_jax.inference import DEFAULT_THRESHOLD, PeakSettings, ResolvedPeaks, resolve_peak_settings
from gcc_jax.predict._outputs import (
    SUMMARY_FIELDS,
    VIDEO_SUMMARY_FIELDS,
    annotated_picture,
    density_overlay,
    format_table,
    format_video_table,
    points_picture,
    write_prediction,
    write_summary,
)
from gcc_jax.predict._predictor import IMAGE_SUFFIXES, Prediction, Predictor, count, load_image
from gcc_jax.predict._run import expand_inputs, is_video, predict_files
from gcc_jax.predict._video import (
    VIDEO_SUFFIXES,
    DecodedFrame,
    FramePrediction,
    FrameSampling,
    VideoDecodeError,
    VideoFrames,
    VideoInfo,
    count_video,
    video_info,
)
from gcc_jax.predict._video_outputs import VideoOutputs, plot_counts, predict_video

__all__ = [
    "DEFAULT_THRESHOLD",
    "IMAGE_SUFFIXES",
    "SUMMARY_FIELDS",
    "VIDEO_SUFFIXES",
    "VIDEO_SUMMARY_FIELDS",
    "DecodedFrame",
    "FramePrediction",
    "FrameSampling",
    "PeakSettings",
    "Prediction",
    "Predictor",
    "ResolvedPeaks",
    "VideoDecodeError",
    "VideoFrames",
    "VideoInfo",
    "VideoOutputs",
    "annotated_picture",
    "count",
    "count_video",
    "density_overlay",
    "expand_inputs",
    "format_table",
    "format_video_table",
    "is_video",
    "plot_counts",
    "points_picture",
    "predict_files",
    "predict_video",
    "resolve_peak_settings",
    "video_info",
    "write_prediction",
    "write_summary",
]
