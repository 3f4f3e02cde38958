"""Counting and head locations in the frames of a video file, streamed through PyAV.

A video is decoded frame by frame (PyAV, FFmpeg inside its wheels: ``pip install
'gcc_jax[video]'``); only the frames kept by a :class:`FrameSampling` are converted to RGB and
run through a :class:`~gcc_jax.predict.Predictor`, one at a time, so memory is that of one
frame whatever the video's length. All frames of a video have one size, so they share one
bucketed shape: the predictor compiles its programs on the first frame and reuses them. A
frame's prediction is the one :meth:`Predictor.predict` gives for the decoded RGB frame as an
image (FFmpeg's YUV → RGB conversion, ``rgb24``), turned upright by the video's display
rotation (phone videos) as photos are by their EXIF orientation.

Damaged files: a packet that does not decode is skipped (the decoder resumes at the next one,
as video players do) and remembered, as are the errors FFmpeg logs while concealing damaged
data; a file that ends before the frames (or the duration) it declares is truncated. Either
way every frame that decodes is yielded first, then :class:`VideoDecodeError` names the file
and the problem.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import pathlib
import re
import sys
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np
import tqdm

from gcc_jax.predict._predictor import Predictor

__all__ = [
    "VIDEO_SUFFIXES",
    "DecodedFrame",
    "FramePrediction",
    "FrameSampling",
    "VideoDecodeError",
    "VideoFrames",
    "VideoInfo",
    "count_video",
    "import_av",
    "predict_frames",
    "video_info",
]

# Files a folder argument contributes as videos (lower-case suffixes).
VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".webm")
# A video stream that stops this much earlier than the duration its container declares
# (and has no frame count to compare with) is truncated. Containers round their duration and
# an audio track may outlast the picture by a fraction of a second, hence the slack.
_DURATION_SLACK_S = 1.0
# Floor of time_s · fps, robust to timestamps such as 0.3 = 2.9999999 / 10.
_SLOT_EPS = 1e-6


def import_av():
    """The ``av`` module (PyAV).

    Raises:
      ImportError: PyAV is not installed; the message says how to install it.
    """
    try:
        import av
    except ImportError as err:
        raise ImportError(f"reading video needs PyAV ({err}): pip install 'gcc_jax[video]'") from err
    return av


class VideoDecodeError(ValueError):
    """A video that could not be decoded completely.

    Attributes:
      path: the file.
      frames_decoded: frames that decoded (all of them yielded if kept by the sampling).
    """

    def __init__(self, path: str | os.PathLike, message: str, *, frames_decoded: int):
        super().__init__(f"{path}: {message}")
        self.path = str(path)
        self.frames_decoded = frames_decoded


class VideoInfo(NamedTuple):
    """What a video file declares about its (first) video stream.

    Attributes:
      width, height: frame size in pixels, as displayed (after the display rotation).
      fps: average frame rate (frames per second), or ``None`` when the file does not say.
      declared_frames: frame count in the container's index, or ``None`` (Matroska / WebM
        do not store one).
      duration_s: duration in seconds (the stream's, else the container's), or ``None``.
      codec: decoder name (``h264``, ``vp9``, ...).
      rotation: display rotation, degrees counter-clockwise (0 for most files).
    """

    width: int
    height: int
    fps: float | None
    declared_frames: int | None
    duration_s: float | None
    codec: str
    rotation: int


@dataclasses.dataclass(frozen=True)
class FrameSampling:
    """Which decoded frames are counted: every ``every``-th, or at most ``fps`` per second.

    With ``fps``, time is cut into slots of ``1 / fps`` seconds from the first frame and the
    first frame of each slot is kept (so a variable-rate video is sampled by its timestamps;
    ``fps`` at or above the video's rate keeps every frame). With ``every``, frames
    ``0, every, 2·every, ...`` are kept. Give at most one of them; the default keeps all.

    Args:
      every: keep one frame in ``every`` (a positive integer).
      fps: target rate in frames per second (positive), or ``None``.

    Raises:
      ValueError: both given, or a value out of range.
    """

    every: int = 1
    fps: float | None = None

    def __post_init__(self):
        if isinstance(self.every, bool) or int(self.every) != self.every or self.every < 1:
            raise ValueError(f"every must be a positive integer (1 keeps every frame), got {self.every!r}")
        if self.fps is not None:
            if not (math.isfinite(self.fps) and self.fps > 0):
                raise ValueError(f"fps must be a positive number of frames per second, got {self.fps!r}")
            if self.every != 1:
                raise ValueError(f"give either every ({self.every}) or fps ({self.fps}), not both")

    def slot(self, index: int, time_s: float) -> int:
        """The slot of decoded frame ``index`` at ``time_s`` seconds from the first frame: a
        frame is kept when its slot is later than the last kept frame's."""
        if self.fps is None:
            return index // self.every
        return math.floor(time_s * self.fps + _SLOT_EPS)

    def expected(self, info: VideoInfo) -> int | None:
        """How many frames of a complete video of ``info`` are kept (an estimate for variable
        rates), or ``None`` when the file declares neither a frame count nor a duration."""
        frames = info.declared_frames
        if frames is None and info.duration_s is not None and info.fps:
            frames = round(info.duration_s * info.fps)
        if frames is None:
            return None
        if self.fps is None:
            return -(-frames // self.every)
        if info.duration_s is None or not info.fps or self.fps >= info.fps:
            return frames
        return min(frames, math.ceil(info.duration_s * self.fps - _SLOT_EPS))

    def output_fps(self, info: VideoInfo) -> float | None:
        """The frame rate of the kept frames (for an annotated video), or ``None`` if unknown."""
        if self.fps is not None:
            return self.fps if not info.fps else min(self.fps, info.fps)
        return info.fps / self.every if info.fps else None


class DecodedFrame(NamedTuple):
    """A kept frame: ``index`` among all decoded frames (from 0), ``time_s`` seconds from the
    stream's start, ``image`` uint8 RGB ``[h, w, 3]``."""

    index: int
    time_s: float
    image: np.ndarray


class FramePrediction(NamedTuple):
    """What :func:`count_video` yields per counted frame.

    Attributes:
      frame: index of the frame among all decoded frames of the video (from 0).
      time_s: its presentation time, seconds from the start of the video stream.
      count: predicted number of people (the sum of ``density``).
      density: ``[ceil(h/8), ceil(w/8)]`` float32 density map.
      points: ``[n, 2]`` float32 heads ``(x, y)`` in frame pixels, by decreasing score.
      scores: ``[n]`` float32 upsampled density at each head.
      image: the frame, uint8 RGB ``[h, w, 3]`` (for drawing; dropped by the caller when done).
    """

    frame: int
    time_s: float
    count: float
    density: np.ndarray
    points: np.ndarray
    scores: np.ndarray
    image: np.ndarray


@contextlib.contextmanager
def _ffmpeg_errors(av) -> Iterator[list]:
    """Collects the ``(level, name, message)`` of FFmpeg's error messages (from every thread:
    the decoder's slice threads log too) instead of letting them reach stderr."""
    previous = av.logging.get_level()
    if previous is None or previous < av.logging.ERROR:
        av.logging.set_level(av.logging.ERROR)
    try:
        with av.logging.Capture(local=False) as logs:
            yield logs
    finally:
        av.logging.set_level(previous)


def _rotation(frame) -> int:
    """A frame's display rotation in degrees counter-clockwise (``VideoFrame.rotation``, from
    the container's display matrix): 0, 90, 180 or 270; other angles are not applied."""
    angle = int(round(getattr(frame, "rotation", 0) or 0))
    return angle % 360 if angle % 90 == 0 else 0


def _open(path: str | os.PathLike):
    """``(container, video stream)`` of a file, with one-line errors naming it."""
    av = import_av()
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such video file")
    try:
        container = av.open(os.fspath(path))
    except av.error.FFmpegError as err:
        raise ValueError(f"{path}: not a readable video ({_ffmpeg_reason(err)})") from err
    if not container.streams.video:
        container.close()
        raise ValueError(f"{path}: holds no video stream")
    stream = container.streams.video[0]
    # PyAV's default slice threading: with frame threading (FFmpeg's "AUTO") a packet that fails
    # to decode takes the frames still inside the decoder with it (measured: half of a 6-frame
    # H.264 mp4 gives its first frame with slice threads, none with frame threads). Decoding
    # is a small part of the time per frame next to the network.
    stream.thread_type = "SLICE"
    return container, stream


def _ffmpeg_reason(err: Exception) -> str:
    """FFmpeg's message without the errno and the file name PyAV appends."""
    return getattr(err, "strerror", None) or str(err)


def _track_duration_tag(stream) -> float | None:
    """Seconds of Matroska's per-track ``DURATION`` tag (``HH:MM:SS.nnnnnnnnn``), if any."""
    match = re.fullmatch(r"(\d+):(\d{2}):(\d{2}(?:\.\d*)?)", stream.metadata.get("DURATION", "").strip())
    if match is None:
        return None
    hours, minutes, seconds = match.groups()
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def _info(container, stream, rotation: int = 0) -> VideoInfo:
    """The :class:`VideoInfo` of an open video stream (``rotation`` as found on a frame)."""
    fps = float(stream.average_rate) if stream.average_rate else None
    if stream.duration is not None and stream.time_base is not None:
        duration = float(stream.duration * stream.time_base)
    elif _track_duration_tag(stream) is not None:
        # Matroska / WebM: the video track's own length (an audio track may be longer).
        duration = _track_duration_tag(stream)
    elif container.duration is not None:
        duration = container.duration / 1_000_000  # AV_TIME_BASE
    else:
        duration = None
    width, height = stream.codec_context.width, stream.codec_context.height
    if rotation % 180:
        width, height = height, width
    return VideoInfo(
        width=width, height=height, fps=fps, declared_frames=stream.frames or None, duration_s=duration,
        codec=stream.codec_context.name, rotation=rotation,
    )  # fmt: skip


def video_info(path: str | os.PathLike) -> VideoInfo:
    """What ``path`` declares about its first video stream (reads the header and one frame).

    Raises:
      ImportError: PyAV is not installed.
      FileNotFoundError: no such file.
      ValueError: not a readable video, or no video stream; the message names the file.
    """
    av = import_av()
    container, stream = _open(path)
    with container:
        rotation = 0
        try:
            first = next(container.decode(stream), None)
            rotation = _rotation(first) if first is not None else 0
        except av.error.FFmpegError:
            pass  # VideoFrames reads (and reports) the frames' errors
        return _info(container, stream, rotation)


class VideoFrames:
    """The frames of a video that ``sampling`` keeps, decoded one at a time when iterated.

    Iterating yields a :class:`DecodedFrame` per kept frame, in presentation order, and
    ``frames_decoded`` counts every decoded frame so far (kept or not). Iterate once.

    Args:
      path: a video file (any container and codec FFmpeg reads).
      sampling: which frames to keep.

    Raises (when iterated):
      ImportError: PyAV is not installed.
      FileNotFoundError: no such file.
      ValueError: not a readable video (before any frame).
      VideoDecodeError: after the last frame that decodes, if packets failed to decode, FFmpeg
        reported errors in the data (frames it concealed), or the file ends before the frames /
        duration it declares (truncated).
    """

    def __init__(self, path: str | os.PathLike, *, sampling: FrameSampling = FrameSampling()):
        self.path = path
        self.sampling = sampling
        self.frames_decoded = 0

    def __iter__(self) -> Iterator[DecodedFrame]:
        av = import_av()
        container, stream = _open(self.path)
        with container, _ffmpeg_errors(av) as logged:
            start = stream.start_time or 0
            time_base = stream.time_base
            info = _info(container, stream)
            last_slot, last_time = None, None
            failures, first_failure = 0, ""
            for packet in container.demux(stream):
                try:
                    frames = stream.decode(packet)
                except av.error.FFmpegError as err:
                    failures += 1
                    first_failure = first_failure or _ffmpeg_reason(err)
                    continue
                for frame in frames:
                    index = self.frames_decoded
                    self.frames_decoded += 1
                    pts = frame.pts if frame.pts is not None else frame.dts
                    if pts is not None and time_base is not None:
                        time_s = float((pts - start) * time_base)
                    else:  # no timestamps at all: the nominal rate
                        time_s = index / info.fps if info.fps else float(index)
                    last_time = time_s
                    slot = self.sampling.slot(index, time_s)
                    if last_slot is not None and slot <= last_slot:
                        continue
                    last_slot = slot
                    image = frame.to_ndarray(format="rgb24")
                    turns = _rotation(frame) // 90
                    if turns:
                        image = np.ascontiguousarray(np.rot90(image, k=turns))
                    yield DecodedFrame(index=index, time_s=time_s, image=image)
            problems = []
            decoded = self.frames_decoded
            if info.declared_frames is not None and decoded < info.declared_frames:
                problems.append(f"truncated: {decoded} of the {info.declared_frames} frames it declares decoded")
            elif info.declared_frames is None and info.duration_s is not None:
                end = last_time + (1 / info.fps if info.fps else 0) if last_time is not None else 0.0
                if end < info.duration_s - _DURATION_SLACK_S:
                    problems.append(f"truncated: frames end at {end:.2f} s of the {info.duration_s:.2f} s it declares")
            if failures:
                problems.append(f"{failures} packet(s) could not be decoded ({first_failure})")
            # Damaged data that the decoder conceals raises nothing; FFmpeg only logs it.
            errors = [message.strip() for _, _, message in logged]
            if errors:
                problems.append(
                    f"FFmpeg reported {len(errors)} decoding error(s), the frames around them may be damaged "
                    f"(first: {errors[0]})"
                )
            if decoded == 0 and not problems:
                problems.append("no frame could be decoded")
            if problems:
                raise VideoDecodeError(self.path, "; ".join(problems), frames_decoded=decoded)


def count_video(
    video: str | os.PathLike,
    *,
    predictor: Predictor | None = None,
    checkpoint: str | os.PathLike | None = None,
    sampling: FrameSampling = FrameSampling(),
    progress: bool = False,
) -> Iterator[FramePrediction]:
    """Counts and locates the people in the frames of a video, one frame at a time.

    Each kept frame is predicted exactly as :meth:`Predictor.predict` predicts that frame
    given as an RGB image. Nothing is kept between frames: iterate and write what you need.

    Args:
      video: a video file (``.mp4``, ``.mov``, ``.avi``, ``.mkv``, ``.webm``, or anything
        FFmpeg reads).
      predictor: a loaded :class:`Predictor`; or
      checkpoint: a training workdir or model directory to load one from (defaults of
        :meth:`Predictor.from_checkpoint`). Give exactly one of the two.
      sampling: which frames to count (default: all).
      progress: draw a bar on stderr (frames done, frames per second, time left).

    Returns:
      An iterator of :class:`FramePrediction`, one per counted frame (the video is read as it
      is iterated).

    Raises:
      ImportError: PyAV is not installed (``pip install 'gcc_jax[video]'``).
      ValueError: not a readable video, or both / neither of ``predictor`` and ``checkpoint``.
      VideoDecodeError: after the frames that decode, for a damaged or truncated file.

    Example:
      >>> for f in count_video("clip.mp4", checkpoint="runs/synthetic", sampling=FrameSampling(fps=2)):
      ...     print(f.frame, f.time_s, f.count, len(f.points))
    """
    if (predictor is None) == (checkpoint is None):
        raise ValueError("give count_video either a predictor or a checkpoint")
    if predictor is None:
        predictor = Predictor.from_checkpoint(checkpoint)
    return predict_frames(VideoFrames(video, sampling=sampling), predictor, progress=progress)


def predict_frames(frames: VideoFrames, predictor: Predictor, *, progress: bool = False) -> Iterator[FramePrediction]:
    """:func:`count_video` on frames being read (whose ``VideoFrames.frames_decoded`` the
    caller can read when done)."""
    bar = None
    if progress:
        bar = tqdm.tqdm(
            total=frames.sampling.expected(video_info(frames.path)), desc=pathlib.Path(frames.path).name,
            unit="frame", file=sys.stderr, mininterval=0.5 if sys.stderr.isatty() else 10.0,
        )  # fmt: skip
    try:
        for decoded in frames:
            found = predictor.predict(decoded.image, name=f"frame_{decoded.index}")
            yield FramePrediction(
                frame=decoded.index, time_s=decoded.time_s, count=found.count, density=found.density,
                points=found.points, scores=found.scores, image=decoded.image,
            )  # fmt: skip
            if bar is not None:
                bar.update()
    finally:
        if bar is not None:
            bar.close()
