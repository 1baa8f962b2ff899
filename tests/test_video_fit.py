"""Re-encoding to fit a byte budget, on real MP4s made by ffmpeg and read back with ffprobe."""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.media import graph_tags, make_mp4, probe, tags
from wan_worker import video_fit
from wan_worker.errors import OutputError
from wan_worker.video_fit import fit_video, minimum_bytes

pytestmark = pytest.mark.integration  # ffmpeg


@pytest.fixture
def scratch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The fitter's temporary folder, to check that nothing is left in it."""
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    return temp


def color_tags(data: bytes) -> dict[str, str]:
    with tempfile.NamedTemporaryFile(suffix=".mp4") as handle:
        Path(handle.name).write_bytes(data)
        out = subprocess.run(
            ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
             "stream=pix_fmt,color_range,color_space,color_transfer,color_primaries",
             "-of", "json", handle.name],
            check=True, capture_output=True,
        )  # fmt: skip
    return json.loads(out.stdout)["streams"][0]


def test_a_large_video_is_fitted_with_its_size_frames_rate_and_colours(tmp_path, scratch):
    source = make_mp4(tmp_path, frames=49, rate="25")
    budget = len(source) // 3
    fitted = fit_video(source, budget, preset="veryfast")
    assert len(fitted.video) <= budget
    assert fitted.original_bytes == len(source)
    assert fitted.attempts == 1
    info = probe(fitted.video)  # counts the frames by decoding them
    assert (info.codec, info.width, info.height, info.frames, info.fps) == (
        "h264",
        160,
        96,
        49,
        25.0,
    )
    assert color_tags(fitted.video) == color_tags(source)
    assert color_tags(fitted.video)["color_space"] == "bt709"
    assert list(scratch.iterdir()) == []


def test_the_graph_in_the_tags_does_not_survive_a_fit(tmp_path):
    source = make_mp4(tmp_path, metadata=True)
    assert set(graph_tags(source)) == {"prompt", "workflow", "comment"}  # the check can fail
    fitted = fit_video(source, len(source) // 2)
    assert graph_tags(fitted.video) == {}
    assert "job-42" not in json.dumps(tags(fitted.video))
    assert b"class_type" not in fitted.video


def test_an_overshoot_is_retried_once_at_a_lower_rate(tmp_path, monkeypatch):
    source = make_mp4(tmp_path)
    budget = len(source) // 4
    monkeypatch.setattr(video_fit, "HEADROOM", 1.8)  # plan a rate far above the budget
    fitted = fit_video(source, budget)
    assert fitted.attempts == 2
    assert len(fitted.video) <= budget
    assert probe(fitted.video).frames == 48


def test_a_budget_below_the_lowest_quality_is_refused_before_encoding(tmp_path, scratch):
    source = make_mp4(tmp_path)
    shape = video_fit.VideoShape(160, 96, 48, video_fit.Fraction(24), {})
    floor = minimum_bytes(shape)
    with pytest.raises(OutputError) as caught:
        fit_video(source, floor - 1)
    assert caught.value.message == (
        f"The video (160x96, 48 frames at 24 fps) cannot be made to fit {floor - 1} bytes: even "
        f"at the lowest quality allowed (0.02 bits per pixel) it needs {floor} bytes."
    )
    assert fit_video(source, floor).video  # the floor itself is accepted
    assert list(scratch.iterdir()) == []


def test_a_video_that_stays_too_large_is_an_error_with_the_sizes(tmp_path, scratch, monkeypatch):
    source = make_mp4(tmp_path)
    shape = video_fit.VideoShape(160, 96, 48, video_fit.Fraction(24), {})
    monkeypatch.setattr(video_fit, "HEADROOM", 4.0)  # overshoot; the retry would pass the floor
    with pytest.raises(OutputError) as caught:
        fit_video(source, minimum_bytes(shape) + 100)
    message = caught.value.message
    assert "cannot be made to fit" in message
    assert "it still took" in message
    assert "below the lowest quality allowed (0.02 bits per pixel)" in message
    assert list(scratch.iterdir()) == []


def test_a_video_still_too_large_after_the_retry_is_an_error(tmp_path, scratch, monkeypatch):
    source = make_mp4(tmp_path)
    budget = len(source) // 4
    monkeypatch.setattr(video_fit, "HEADROOM", 1.8)  # the first encode overshoots
    monkeypatch.setattr(video_fit, "RETRY_MARGIN", 1.5)  # and so does the retry
    with pytest.raises(OutputError) as caught:
        fit_video(source, budget)
    message = caught.value.message
    assert message.startswith(
        f"The video (160x96, 48 frames at 24 fps) cannot be made to fit {budget} bytes: at "
    )
    assert message.endswith("and that was the last of 2 tries.")
    assert list(scratch.iterdir()) == []


def test_a_video_without_a_frame_count_in_its_index_is_counted(tmp_path):
    """Matroska keeps no frame count: the fitter counts the frames by decoding them."""
    mkv = tmp_path / "source.mkv"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=s=160x96:r=24,noise=alls=60:allf=t+u",
         "-frames:v", "30", "-c:v", "libx264", "-preset", "ultrafast", "-crf", "15", str(mkv)],
        check=True,
    )  # fmt: skip
    source = mkv.read_bytes()
    fitted = fit_video(source, len(source) // 2)
    assert fitted.shape.frames == 30
    assert probe(fitted.video).frames == 30


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (lambda mp4: mp4[: len(mp4) // 2], "moov atom not found"),  # the index is at the end
        (lambda mp4: b"\x00" * 64 + mp4[64:], "Invalid data found when processing input"),
        (lambda _mp4: b"not a video at all", "Invalid data found when processing input"),
    ],
)
def test_a_damaged_video_fails_with_ffmpegs_own_words(tmp_path, scratch, damage, expected):
    source = make_mp4(tmp_path)
    with pytest.raises(OutputError) as caught:
        fit_video(damage(source), 10_000)
    assert caught.value.message.startswith("Reading ComfyUI's video failed (ffprobe: ")
    assert expected in caught.value.message
    assert list(scratch.iterdir()) == []


def test_an_mp4_without_a_video_stream_says_so(tmp_path, scratch):
    audio = tmp_path / "audio.mp4"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "sine=d=1", "-c:a", "aac", str(audio)],
        check=True,
    )  # fmt: skip
    with pytest.raises(OutputError, match=r"^ComfyUI's video has no video stream\.$"):
        fit_video(audio.read_bytes(), 10_000)
    assert list(scratch.iterdir()) == []


def test_a_video_damaged_after_its_header_fails_while_encoding(tmp_path, scratch):
    source = bytearray(make_mp4(tmp_path))
    mdat = source.index(b"mdat") + 4
    source[mdat : mdat + len(source) // 2] = b"\xff" * (len(source) // 2)  # frames destroyed
    with pytest.raises(OutputError) as caught:
        fit_video(bytes(source), 10_000)
    assert "failed (ffmpeg: " in caught.value.message or "changed the video" in caught.value.message
    assert list(scratch.iterdir()) == []


def test_the_time_limit_stops_ffmpeg_and_says_which_setting(tmp_path, scratch):
    source = make_mp4(tmp_path)
    with pytest.raises(OutputError) as caught:
        fit_video(source, len(source) // 2, timeout_s=0.001)
    assert caught.value.message == (
        "Re-encoding the video took over 0.001 s (REENCODE_TIMEOUT_S) and was stopped."
    )
    assert list(scratch.iterdir()) == []


def test_an_unknown_preset_is_a_programming_error():
    with pytest.raises(ValueError, match="unknown x264 preset 'warp'"):
        fit_video(b"", 1, preset="warp")
