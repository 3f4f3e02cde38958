"""What ``python -m gcc_jax.predict`` writes per video, frame by frame as the frames come.

Per video ``<name>`` (``OUT/<name>_...``):

* ``<name>_counts.csv`` — ``frame,time_s,count`` per counted frame: the frame's index among
  all decoded frames (from 0), its presentation time in seconds from the start of the video
  stream, and the predicted count (the density map's sum, full precision);
* ``<name>_points.jsonl`` — one JSON object per counted frame, in the CSV's order:
  ``{"frame", "time_s", "count", "num_points", "points": [[x, y], ...], "scores": [...]}``
  (``(x, y)`` frame pixels, by decreasing score; JSON Lines because the number of heads
  changes from frame to frame);
* ``<name>_counts.png`` — the count (and the number of detected heads) over time;
* ``<name>_annotated.mp4`` (``annotate=True``) — every counted frame with the density heat
  map, the head circles and a banner (frame, time, count, heads), H.264 (``libx264``; MPEG-4
  part 2 where PyAV's FFmpeg lacks it) at the rate of the counted frames.

The CSV, JSONL and annotated video are written as the frames come (nothing is held but the
per-frame counts for the plot), so a video that breaks off keeps what was counted; the plot
is drawn when the video ends, however it ends.
"""

from __future__ import annotations

import csv
import fractions
import json
import os
import pathlib
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from gcc_jax.predict._outputs import annotated_picture
from gcc_jax.predict._predictor import Predictor
from gcc_jax.predict._video import (
    FramePrediction,
    FrameSampling,
    VideoDecodeError,
    VideoFrames,
    VideoInfo,
    import_av,
    predict_frames,
    video_info,
)

__all__ = ["VideoOutputs", "plot_counts", "predict_video"]

# Frame rate of an annotated video whose source declares none.
_FALLBACK_FPS = 25
# Constant-quality factor of the annotated H.264 video (x264's default 23; lower is better):
# the heat map's smooth colours band visibly at the default.
_CRF = "20"


def plot_counts(
    times_s, counts, path: str | os.PathLike, *, heads=None, title: str = ""
) -> pathlib.Path:
    """Draws the count over time into a PNG.

    Args:
      times_s: ``[n]`` frame times in seconds.
      counts: ``[n]`` predicted counts.
      path: the PNG to write.
      heads: ``[n]`` detected heads per frame (drawn beside the count), or ``None``.
      title: the plot's title.

    Returns:
      ``path``.
    """
    figure = Figure(figsize=(8, 3.5), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    marker = "." if len(counts) <= 200 else None
    axes.plot(times_s, counts, marker=marker, label="count (density sum)")
    if heads is not None:
        axes.plot(times_s, heads, marker=marker, linewidth=0.8, alpha=0.7, label="heads detected")
    axes.set_xlabel("time (s)")
    axes.set_ylabel("people")
    axes.set_ylim(bottom=0)
    axes.grid(alpha=0.3)
    axes.legend(loc="best")
    axes.set_title(title)
    figure.savefig(path)
    return pathlib.Path(path)


class _AnnotatedVideo:
    """An H.264 (else MPEG-4) ``.mp4`` of annotated frames of one fixed size."""

    def __init__(self, path: pathlib.Path, fps: float | None):
        av = import_av()
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        self._container = av.open(str(path), "w")
        self._rate = fractions.Fraction(fps or _FALLBACK_FPS).limit_denominator(1001)
        self._codec = codec
        self._stream = None
        self._av = av

    def add(self, picture: np.ndarray) -> None:
        if self._stream is None:
            # 4:2:0 chroma needs even sides; later pictures are fitted to the first's size.
            self._stream = self._container.add_stream(self._codec, rate=self._rate)
            self._stream.height = picture.shape[0] + picture.shape[0] % 2
            self._stream.width = picture.shape[1] + picture.shape[1] % 2
            self._stream.pix_fmt = "yuv420p"
            if self._codec == "libx264":
                self._stream.options = {"crf": _CRF}
        height, width = self._stream.height, self._stream.width
        fitted = np.zeros((height, width, 3), np.uint8)
        fitted[: picture.shape[0], : picture.shape[1]] = picture[:height, :width]
        frame = self._av.VideoFrame.from_ndarray(fitted, format="rgb24")
        self._container.mux(self._stream.encode(frame))

    def close(self) -> None:
        try:
            if self._stream is not None:
                self._container.mux(self._stream.encode(None))
        finally:
            self._container.close()


class VideoOutputs:
    """Writes the files of one video (see the module docstring) as its frames come.

    Args:
      out_dir: output folder (created).
      name: the video's name (names the files).
      fps: rate of the counted frames, for the annotated video (``None``: 25).
      annotate: also write the annotated video.
      max_side: longest side of the annotated frames in pixels.
      threshold: the peak threshold, for the annotated banner (or ``None``).
    """

    def __init__(
        self,
        out_dir: str | os.PathLike,
        name: str,
        *,
        fps: float | None = None,
        annotate: bool = False,
        max_side: int = 2048,
        threshold: float | None = None,
    ):
        out_dir = pathlib.Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.paths = {
            "counts_csv": out_dir / f"{name}_counts.csv",
            "points_jsonl": out_dir / f"{name}_points.jsonl",
            "counts_png": out_dir / f"{name}_counts.png",
        }
        if annotate:
            self.paths["annotated_mp4"] = out_dir / f"{name}_annotated.mp4"
        self._max_side = max_side
        self._threshold = threshold
        self._video = _AnnotatedVideo(self.paths["annotated_mp4"], fps) if annotate else None
        self._csv_file = open(self.paths["counts_csv"], "w", newline="")
        self._csv = csv.writer(self._csv_file)
        self._csv.writerow(["frame", "time_s", "count"])
        self._jsonl = open(self.paths["points_jsonl"], "w")
        self.times: list[float] = []
        self.counts: list[float] = []
        self.heads: list[int] = []

    def add(self, found: FramePrediction) -> None:
        """Writes one counted frame."""
        # repr: the shortest text that reads back as the same float, so the CSV holds the count.
        self._csv.writerow([found.frame, f"{found.time_s:.6f}", repr(found.count)])
        record = {
            "frame": found.frame, "time_s": round(found.time_s, 6), "count": found.count,
            "num_points": len(found.points), "points": np.round(found.points.astype(np.float64), 2).tolist(),
            "scores": [float(f"{s:.6g}") for s in found.scores.tolist()],
        }  # fmt: skip
        self._jsonl.write(json.dumps(record) + "\n")
        if self._video is not None:
            label = (
                f"frame {found.frame}  {found.time_s:7.2f} s   count {found.count:.1f}   {len(found.points)} heads"
                + (f" (threshold {self._threshold:g})" if self._threshold is not None else "")
            )
            picture = annotated_picture(found.image, found.density, found.points, label=label, max_side=self._max_side)
            self._video.add(picture)
        self.times.append(found.time_s)
        self.counts.append(found.count)
        self.heads.append(len(found.points))

    def close(self, *, title: str = "") -> None:
        """Finishes the files and draws the plot (also for no frame: empty axes)."""
        try:
            self._csv_file.close()
            self._jsonl.close()
            if self._video is not None:
                self._video.close()
        finally:
            plot_counts(self.times, self.counts, self.paths["counts_png"], heads=self.heads, title=title)


def predict_video(
    path: str | os.PathLike,
    predictor: Predictor,
    out_dir: str | os.PathLike,
    *,
    name: str | None = None,
    sampling: FrameSampling = FrameSampling(),
    annotate: bool = False,
    max_side: int = 2048,
    progress: bool = False,
    report_failure: Callable[[pathlib.Path, str], None] | None = None,
) -> dict[str, Any]:
    """Counts the frames of a video and writes its files (see the module docstring).

    A video that breaks off (damaged or truncated) keeps the files of the frames that decoded;
    its row's ``error`` says what went wrong (and ``report_failure`` is called).

    Args:
      path: the video file.
      predictor: the loaded model.
      out_dir: output folder.
      name: names the files (default: the file stem).
      sampling: which frames to count.
      annotate: also write ``<name>_annotated.mp4``.
      max_side: longest side of the annotated frames.
      progress: draw a progress bar on stderr.
      report_failure: called with ``(path, reason)`` if the video could not be read completely.

    Returns:
      The video's summary row (:data:`~gcc_jax.predict.VIDEO_SUMMARY_FIELDS`).

    Raises:
      ImportError: PyAV is not installed.
      FileNotFoundError, ValueError: a file that is not a readable video at all (no file is
        written then).
    """
    path = pathlib.Path(path)
    name = path.stem if name is None else name
    info: VideoInfo = video_info(path)
    start = time.perf_counter()
    outputs = VideoOutputs(
        out_dir, name, fps=sampling.output_fps(info), annotate=annotate, max_side=max_side,
        threshold=predictor.peaks.threshold,
    )  # fmt: skip
    frames = VideoFrames(path, sampling=sampling)
    error = ""
    try:
        for found in predict_frames(frames, predictor, progress=progress):
            outputs.add(found)
    except VideoDecodeError as err:
        error = str(err).removeprefix(f"{path}: ")
    finally:
        outputs.close(title=f"{path.name}: count per frame")
    seconds = time.perf_counter() - start
    counts = np.asarray(outputs.counts, np.float64)
    peak = int(np.argmax(counts)) if counts.size else None
    row = {
        "video": str(path), "name": name, "height": info.height, "width": info.width, "fps": info.fps,
        "frames_decoded": frames.frames_decoded, "frames_counted": int(counts.size),
        "duration_s": info.duration_s, "mean_count": float(counts.mean()) if counts.size else None,
        "max_count": float(counts[peak]) if peak is not None else None,
        "max_count_time_s": outputs.times[peak] if peak is not None else None,
        "seconds": seconds, "frames_per_s": counts.size / seconds if seconds > 0 else 0.0, "error": error,
    }  # fmt: skip
    if error and report_failure is not None:
        report_failure(path, error)
    return row
