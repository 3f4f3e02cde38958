"""Video in predict: per-frame counts equal to the decoded frames predicted as images, frame
sampling, the files per video, damaged and foreign files, display rotation, missing PyAV.

The videos are written here with PyAV from real photos (ShanghaiTech sample), a few small
frames each, so that the tiny model keeps every test cheap.
"""

import csv
import json
import struct
import sys

import numpy as np
import pytest
from PIL import Image

from gcc_jax.localization import PeakSettings
from gcc_jax.predict import (
    FrameSampling,
    Predictor,
    VideoDecodeError,
    VideoFrames,
    VideoInfo,
    VideoOutputs,
    count_video,
    expand_inputs,
    video_info,
)
from gcc_jax.predict._run import main
from gcc_jax.runtime.evaluation import local_eval_mesh

# In the "test" extra, so CI runs these; an environment without it skips them.
av = pytest.importorskip("av", reason="PyAV is not installed: pip install 'gcc_jax[video]'")

# Frames of the test videos: a 176 x 120 window panning over a real crowd photo (sides that are
# not multiples of the 128-px bucket, 120 not even of 16, so the padding and the cut-back
# density map are exercised).
WIDTH, HEIGHT, RATE = 176, 120, 10
PER_VIDEO = ("_counts.csv", "_points.jsonl", "_counts.png")


@pytest.fixture(scope="module")
def frames(sample_images):
    """Six uint8 RGB frames ``[120, 176, 3]``: a pan over photo ``a``, then a cut to ``b``."""
    wide_a = np.asarray(Image.open(sample_images["a"]).convert("RGB").resize((240, 160), Image.BILINEAR))
    wide_b = np.asarray(Image.open(sample_images["b"]).convert("RGB").resize((240, 160), Image.BILINEAR))
    pans = [wide_a[8 * k : 8 * k + HEIGHT, 16 * k : 16 * k + WIDTH] for k in range(4)]
    return [np.ascontiguousarray(f) for f in pans + [wide_b[:HEIGHT, :WIDTH], wide_b[-HEIGHT:, -WIDTH:]]]


def write_video(path, frames, *, codec="libx264", rate=RATE, container_options=None):
    """Encodes uint8 RGB frames with PyAV into ``path`` (the container follows the suffix)."""
    with av.open(str(path), "w", options=container_options or {}) as container:
        stream = container.add_stream(codec, rate=rate)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        for pixels in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
        container.mux(stream.encode(None))
    return path


def decoded_frames(path):
    """Every frame of a video as uint8 RGB, decoded here with PyAV."""
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


@pytest.fixture(scope="module")
def clip(tmp_path_factory, frames):
    """An H.264 mp4 of :func:`frames` at 10 frames/s, with the index at the front (faststart)."""
    assert "libx264" in av.codecs_available  # PyAV's wheels carry x264: the test is on real H.264
    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    return write_video(path, frames, container_options={"movflags": "faststart"})


@pytest.fixture(scope="module")
def predictor(tiny_model):
    model, variables = tiny_model
    return Predictor(model, variables, local_eval_mesh(1), peaks=PeakSettings(threshold=0.03))


def test_cli_video_counts_equal_its_frames_predicted_as_images(model_dir, clip, tmp_path, capsys):
    assert video_info(clip).codec == "h264"
    as_images = tmp_path / "frames"
    as_images.mkdir()
    for k, pixels in enumerate(decoded_frames(clip)):
        Image.fromarray(pixels).save(as_images / f"frame_{k}.png")  # lossless
    video_out, image_out = tmp_path / "video_out", tmp_path / "image_out"
    common = ["--checkpoint", str(model_dir), "--threshold", "0.03"]

    assert main([str(clip), "--out", str(video_out), "--annotate", *common]) == 0
    assert main([str(as_images), "--out", str(image_out), *common]) == 0

    with open(video_out / "clip_counts.csv") as f:
        table = list(csv.reader(f))
    assert table[0] == ["frame", "time_s", "count"]
    assert [int(r[0]) for r in table[1:]] == list(range(6))
    np.testing.assert_allclose([float(r[1]) for r in table[1:]], np.arange(6) / RATE, atol=1e-6)
    lines = [json.loads(line) for line in (video_out / "clip_points.jsonl").read_text().splitlines()]
    for k, (row, line) in enumerate(zip(table[1:], lines)):
        image = json.loads((image_out / f"frame_{k}_points.json").read_text())
        # Equal, not close: the same frame through the same program.
        assert float(row[2]) == line["count"] == image["count"], k
        assert line["points"] == image["points"] and line["scores"] == image["scores"], k
        assert line["frame"] == k and line["num_points"] == len(line["points"]) > 0

    for suffix in PER_VIDEO:
        assert (video_out / f"clip{suffix}").is_file(), suffix
    plot = Image.open(video_out / "clip_counts.png")
    assert plot.format == "PNG" and plot.size[0] > 400 and np.asarray(plot.convert("L")).std() > 10  # not blank
    annotated = decoded_frames(video_out / "clip_annotated.mp4")
    assert len(annotated) == 6 and annotated[0].shape[1] == WIDTH and annotated[0].shape[0] > HEIGHT  # banner
    with av.open(str(video_out / "clip_annotated.mp4")) as container:
        assert container.streams.video[0].codec_context.name == "h264"
        assert container.streams.video[0].average_rate == RATE

    summary = json.loads((video_out / "summary.json").read_text())
    (row,) = summary["videos"]
    assert (row["frames_decoded"], row["frames_counted"], row["error"]) == (6, 6, "")
    assert (row["height"], row["width"], row["fps"]) == (HEIGHT, WIDTH, RATE)
    assert row["mean_count"] == pytest.approx(np.mean([float(r[2]) for r in table[1:]]), rel=1e-12)
    assert summary["settings"]["num_compilations"] == 2  # one network and one peak program for all frames
    assert (summary["settings"]["frame_every"], summary["settings"]["annotate"]) == (1, True)
    with open(video_out / "summary_videos.csv") as f:
        assert [r["name"] for r in csv.DictReader(f)] == ["clip"]
    console = capsys.readouterr().out
    assert "0 image(s), 1 video(s)" in console and "6/6" in console


def test_sampling_every_nth_frame_or_a_target_rate(clip, predictor, model_dir):
    everything = list(count_video(clip, predictor=predictor))
    assert [f.frame for f in everything] == list(range(6))
    # A checkpoint instead of a loaded predictor: the same model, the same counts.
    assert next(count_video(clip, checkpoint=model_dir)).count == everything[0].count
    by_frame = {f.frame: f for f in everything}
    for sampling, kept in (
        (FrameSampling(every=2), [0, 2, 4]),
        (FrameSampling(every=4), [0, 4]),
        (FrameSampling(fps=5), [0, 2, 4]),  # 10 frames/s video, slots of 0.2 s
        (FrameSampling(fps=3), [0, 4]),  # slots [0, 1/3), [1/3, 2/3): first frames 0.0 and 0.4 s
        (FrameSampling(fps=30), list(range(6))),  # above the video's rate: every frame
    ):
        found = list(count_video(clip, predictor=predictor, sampling=sampling))
        assert [f.frame for f in found] == kept, sampling
        for f in found:
            assert f.count == by_frame[f.frame].count and np.array_equal(f.points, by_frame[f.frame].points)
            assert f.image.shape == (HEIGHT, WIDTH, 3)


def test_frame_sampling_rules():
    info = VideoInfo(width=4, height=4, fps=30.0, declared_frames=300, duration_s=10.0, codec="h264", rotation=0)
    assert FrameSampling().expected(info) == 300
    assert FrameSampling(every=7).expected(info) == 43  # frames 0, 7, ..., 294
    assert FrameSampling(fps=2).expected(info) == 20
    assert FrameSampling(fps=2).output_fps(info) == 2 and FrameSampling(every=3).output_fps(info) == 10
    # 0.3 s is 2.9999999999999996 / 10 in floating point: still slot 3.
    assert FrameSampling(fps=10).slot(9, 0.1 * 3) == 3
    for bad in ({"every": 0}, {"every": 1.5}, {"fps": 0}, {"fps": float("nan")}, {"every": 2, "fps": 5}):
        with pytest.raises(ValueError, match="every|fps"):
            FrameSampling(**bad)
    with pytest.raises(ValueError, match="either a predictor or a checkpoint"):
        count_video("clip.mp4")


@pytest.mark.parametrize(
    "suffix, codec", [(".mkv", "libx264"), (".webm", "libvpx-vp9"), (".avi", "mpeg4"), (".MOV", "libx264")]
)
def test_other_containers_and_codecs(tmp_path, frames, predictor, suffix, codec):
    path = write_video(tmp_path / f"clip{suffix}", frames[:3], codec=codec)
    assert expand_inputs([tmp_path]) == [path]  # a folder contributes its videos, any case
    found = list(count_video(path, predictor=predictor))
    assert [f.frame for f in found] == [0, 1, 2]
    np.testing.assert_allclose([f.time_s for f in found], [0.0, 0.1, 0.2], atol=1e-3)
    for f, pixels in zip(found, decoded_frames(path)):
        assert f.count == predictor.predict(pixels).count


def test_damaged_and_foreign_files_fail_in_one_line_each(model_dir, clip, frames, sample_images, tmp_path, capsys):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    data = clip.read_bytes()
    # Index in front: the first half of the frames still decodes.
    (inputs / "cut.mp4").write_bytes(data[: len(data) // 2])
    # Index at the end (the muxer's default): half a file holds no readable index at all.
    whole = write_video(tmp_path / "indexed_last.mp4", frames).read_bytes()
    (inputs / "cut_index.mp4").write_bytes(whole[: len(whole) // 2])
    (inputs / "notes.MP4").write_text("not a video\n")
    (inputs / "photo.jpg").write_bytes(sample_images["a"].read_bytes())
    out = tmp_path / "out"

    assert main([str(inputs), "--checkpoint", str(model_dir), "--out", str(out), "--noprogress"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 4, err
    assert lines[0].startswith(f"error: {inputs / 'cut.mp4'}: ") and "truncated" in lines[0]
    assert lines[1].startswith(f"error: {inputs / 'cut_index.mp4'}: not a readable video (")
    assert lines[2].startswith(f"error: {inputs / 'notes.MP4'}: not a readable video (")
    assert lines[3] == "error: 3 of 4 file(s) could not be processed (see the summaries)"

    summary = json.loads((out / "summary.json").read_text())
    assert [r["error"] for r in summary["images"]] == [""]  # the photo is processed all the same
    videos = {r["name"]: r for r in summary["videos"]}
    assert sorted(videos) == ["cut", "cut_index", "notes"]
    # The frames that decode are counted and written, with the plot.
    decoded = videos["cut"]["frames_decoded"]
    assert 0 < decoded < 6 and videos["cut"]["frames_counted"] == decoded and "truncated" in videos["cut"]["error"]
    with open(out / "cut_counts.csv") as f:
        assert [int(r["frame"]) for r in csv.DictReader(f)] == list(range(decoded))
    assert (out / "cut_counts.png").is_file() and (out / "photo_points.json").is_file()
    assert videos["notes"]["frames_counted"] == 0 and not (out / "notes_counts.csv").exists()
    with open(out / "summary_videos.csv") as f:
        assert [bool(r["error"]) for r in csv.DictReader(f)] == [True, True, True]


@pytest.mark.parametrize("suffix, codec", [(".mkv", "libx264"), (".webm", "libvpx-vp9")])
def test_truncation_without_a_frame_count_is_found_by_the_duration(tmp_path, suffix, codec):
    # Matroska / WebM store no frame count, only the duration (here 4 s at 10 frames/s).
    noise = np.random.default_rng(0).integers(0, 256, (40, 48, 64, 3), dtype=np.uint8)
    data = write_video(tmp_path / f"whole{suffix}", list(noise), codec=codec).read_bytes()
    (tmp_path / f"cut{suffix}").write_bytes(data[: len(data) // 2])
    assert video_info(tmp_path / f"whole{suffix}").declared_frames is None
    assert len(list(VideoFrames(tmp_path / f"whole{suffix}"))) == 40
    frames = VideoFrames(tmp_path / f"cut{suffix}", sampling=FrameSampling(every=5))
    kept = []
    with pytest.raises(VideoDecodeError, match=r"truncated: frames end at .* of the 4\.00 s it declares") as caught:
        kept.extend(frame.index for frame in frames)
    assert 0 < caught.value.frames_decoded == frames.frames_decoded < 40
    assert kept == list(range(0, frames.frames_decoded, 5))


def test_damaged_data_inside_a_complete_file_is_reported(tmp_path):
    noise = np.random.default_rng(1).integers(0, 256, (20, 48, 64, 3), dtype=np.uint8)
    path = write_video(tmp_path / "noise.mp4", list(noise))
    assert len(list(VideoFrames(path))) == 20  # the intact file: no error
    with av.open(str(path)) as container:
        packets = [(p.pos, p.size) for p in container.demux(video=0) if p.size]
    # The middle half of the coded data of frames 4-15 replaced by random bytes: the decoder
    # mostly conceals such damage (no exception), and FFmpeg's log says so. One damaged frame
    # may go unnoticed (entropy-coded data can decode into valid nonsense); twelve do not.
    data = bytearray(path.read_bytes())
    rng = np.random.default_rng(0)
    for position, size in packets[4:16]:
        start = position + size // 4
        data[start : start + size // 2] = rng.integers(0, 256, size // 2, dtype=np.uint8).tobytes()
    (tmp_path / "damaged.mp4").write_bytes(bytes(data))
    frames = VideoFrames(tmp_path / "damaged.mp4")
    with pytest.raises(VideoDecodeError, match="damaged.mp4: .*(decoding error|could not be decoded)"):
        list(frames)
    assert frames.frames_decoded >= 16


def test_a_longer_audio_track_is_no_truncation(tmp_path):
    # 1 s of picture and 4 s of sound: the container lasts 4.2 s, the video track 1 s.
    path = tmp_path / "talk.mkv"
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=10)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        audio = container.add_stream("aac", rate=8000)
        audio.layout = "mono"
        for k in range(10):
            pixels = np.full((48, 64, 3), 20 * k, np.uint8)
            container.mux(video.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
        container.mux(video.encode(None))
        for start in range(0, 4 * 8000, 1024):
            sound = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            sound.sample_rate, sound.pts = 8000, start
            container.mux(audio.encode(sound))
        container.mux(audio.encode(None))
    with av.open(str(path)) as container:
        assert container.duration / 1e6 > 4.0
    assert video_info(path).duration_s == pytest.approx(1.0)
    assert [frame.index for frame in VideoFrames(path)] == list(range(10))


def _tag_rotation(path, matrix):
    """Writes ``matrix`` (a, b, u, c, d, v, x, y, w: QuickTime's 16.16 / 2.30 fixed point) into
    the track header of an mp4, as phones store the way a clip is to be displayed."""
    data = bytearray(path.read_bytes())
    start = data.index(b"tkhd") + 4 + 40  # version/flags, times, track id, duration, layer, volume
    assert struct.unpack(">9i", data[start : start + 36]) == (1 << 16, 0, 0, 0, 1 << 16, 0, 0, 0, 1 << 30)
    data[start : start + 36] = struct.pack(">9i", *matrix)
    path.write_bytes(bytes(data))


def test_display_rotation_is_applied(tmp_path):
    pixels = np.zeros((32, 64, 3), np.uint8)
    pixels[:, :8] = 255  # a white band on the left of the stored frames
    path = write_video(tmp_path / "phone.mp4", [pixels] * 2)
    # What `ffmpeg -metadata:s:v rotate=90` writes: (x, y) -> (-y, x), shown turned 90° clockwise.
    _tag_rotation(path, (0, 1 << 16, 0, -(1 << 16), 0, 0, 0, 0, 1 << 30))
    info = video_info(path)
    assert (info.width, info.height) == (32, 64)
    upright = next(iter(VideoFrames(path))).image  # what count_video predicts
    assert upright.shape == (64, 32, 3)
    assert upright[:6].mean() > 200 and upright[12:].mean() < 30  # the band is now on top


def test_without_pyav_the_error_says_how_to_install_it(model_dir, clip, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "av", None)  # `import av` raises ImportError
    assert main([str(clip), "--checkpoint", str(model_dir), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    (line,) = [line for line in err.splitlines() if line.startswith("error: ")]
    assert line.startswith("error: reading video needs PyAV") and line.endswith("pip install 'gcc_jax[video]'")
    assert "Traceback" not in err
    # The library says the same where a video is opened.
    with pytest.raises(ImportError, match=r"pip install 'gcc_jax\[video\]'"):
        video_info(clip)


def test_a_video_without_frames_still_gets_its_table_and_plot(tmp_path):
    outputs = VideoOutputs(tmp_path, "nothing", annotate=True)
    outputs.close(title="nothing decoded")
    assert (tmp_path / "nothing_counts.csv").read_text().splitlines() == ["frame,time_s,count"]
    assert (tmp_path / "nothing_points.jsonl").read_text() == ""
    assert Image.open(tmp_path / "nothing_counts.png").format == "PNG"
    assert not (tmp_path / "nothing_annotated.mp4").exists()  # no picture, no video


def test_empty_and_missing_files_are_named(tmp_path):
    (tmp_path / "empty.webm").write_bytes(b"")
    with pytest.raises(ValueError, match="empty.webm: not a readable video"):
        video_info(tmp_path / "empty.webm")
    with pytest.raises(FileNotFoundError, match="missing.mp4: no such video file"):
        video_info(tmp_path / "missing.mp4")
