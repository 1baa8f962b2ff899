"""Black and flat videos are caught on real decoded frames; SageAttention falls back per job."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path

import pytest

from tests.media import probe
from tests.support import ComfyServer, make_png
from wan_worker.handler import handle
from wan_worker.video_check import inspect_frames

pytestmark = pytest.mark.integration  # the ComfyUI double, ffmpeg


def encode(tmp_path: Path, source: str, frames: int = 40, preset: str = "ultrafast") -> bytes:
    out = tmp_path / "v.mp4"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", source, "-frames:v", str(frames),
         "-c:v", "libx264", "-preset", preset, "-crf", "15", "-pix_fmt", "yuv420p", str(out)],
        check=True,
    )  # fmt: skip
    return out.read_bytes()


def frame_types(video: bytes, tmp_path: Path) -> list[str]:
    """Each frame's picture type (I, P or B), as ffprobe reads the video."""
    path = tmp_path / "probed.mp4"
    path.write_bytes(video)
    lines = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v", "-show_frames",
         "-show_entries", "frame=pict_type", "-of", "csv=p=0", str(path)],
        check=True, capture_output=True, text=True,
    ).stdout.splitlines()  # fmt: skip
    return [line.split(",")[0] for line in lines if line]


SOURCES = [
    ("color=c=black:s=128x128:r=24", True),
    ("color=c=0x808080:s=128x128:r=24", True),  # flat grey, as a NaN-born video can be
    ("testsrc2=s=128x128:r=24", False),
    ("testsrc2=s=128x128:r=24,eq=brightness=-0.45", False),  # a dark but real scene
    ("mandelbrot=s=128x128:r=24", False),
]


@pytest.mark.parametrize(("source", "bad"), SOURCES)
def test_black_and_flat_videos_are_told_apart_from_real_ones(tmp_path, source, bad):
    report = inspect_frames(encode(tmp_path, source))
    assert report.frames == 10  # every fourth of 40: ultrafast makes no B-frames
    assert report.bad is bad, report.describe()


@pytest.mark.parametrize(("source", "bad"), SOURCES)
def test_with_the_workflows_preset_the_unreferenced_frames_are_not_decoded(tmp_path, source, bad):
    """x264 `fast` (node 906's format) makes B-frames, most of which nothing refers to: the
    check skips those at decode and judges every video as it does with every frame decoded."""
    video = encode(tmp_path, source, preset="fast")
    types = frame_types(video, tmp_path)
    assert len(types) == 40 and types.count("B") >= 10, types
    report = inspect_frames(video)
    # Every fourth of what was decoded: the I- and P-frames, and the B-frames referred to.
    assert (40 - types.count("B") + 3) // 4 <= report.frames < 10
    assert report.bad is bad, report.describe()


def test_a_video_that_cannot_be_decoded_is_an_output_error():
    from wan_worker.errors import OutputError

    with pytest.raises(OutputError, match="could not be decoded"):
        inspect_frames(b"\x00\x00\x00\x18ftypmp42 not really a video")


def job() -> dict:
    return {
        "id": "attn",
        "input": {
            "start_image": base64.b64encode(make_png()).decode(),
            "prompt": "p",
            "width": 128,
            "height": 128,
            "seed": 5,
        },
    }


def test_a_black_sage_video_is_redone_with_pytorch_attention(comfy_double: ComfyServer):
    comfy_double.set_fault(black_when="auto")  # the double blacks out SageAttention's output
    worker = comfy_double.worker(attention="sage")
    result = handle(job(), worker)
    assert "error" not in result, result
    assert (result["attention"], result["fp16_accumulation"]) == ("sdpa", False)
    assert result["attention_fallback"] is True
    assert result["attention_fallback_reason"].startswith(
        "the video was black or flat (41 of 41 sampled frames black"
    )
    assert result["attention_fallback_reason"].endswith(
        "with sage attention and fp16 accumulation, so the job ran again with PyTorch "
        "attention and without fp16 accumulation"
    )
    video = base64.b64decode(result["video"])
    assert not inspect_frames(video).bad
    assert probe(video).frames == 161
    assert comfy_double.job_files() == []
    comfy_double.set_fault()
    again = handle(job(), worker)
    assert (again["attention"], again["fp16_accumulation"], again["attention_fallback"]) == (
        "sage",
        True,
        False,
    )
    assert again["attention_fallback_reason"] is None


def test_a_black_video_with_fp16_accumulation_is_redone_without_it(comfy_double: ComfyServer):
    """SageAttention #221: black FP8 Wan frames on the 5090 with fp16 accumulation alone."""
    comfy_double.set_fault(black_when="fp16_accumulation")
    before = comfy_double.prompts_received()
    result = handle(job(), comfy_double.worker(attention="sdpa"))
    assert "error" not in result, result
    assert (result["attention"], result["fp16_accumulation"]) == ("sdpa", False)
    assert result["attention_fallback"] is True
    assert (
        "with sdpa attention and fp16 accumulation, so the job ran again"
        in (result["attention_fallback_reason"])
    )
    assert comfy_double.prompts_received() - before == 2
    assert not inspect_frames(base64.b64decode(result["video"])).bad


def test_without_fallback_a_black_video_is_an_error_not_a_result(comfy_double: ComfyServer):
    comfy_double.set_fault(black_when="auto")
    result = handle(job(), comfy_double.worker(attention="sage", attention_fallback=False))
    assert result["error_code"] == "output_error"
    assert "The generated video is black or flat (" in result["error"]
    assert (
        "with sage attention and fp16 accumulation. Set ATTENTION=sdpa and FP16_ACCUMULATION=0, "
        "or ATTENTION_FALLBACK=1" in result["error"]
    )


def test_black_with_pytorch_attention_too_points_at_the_models(comfy_double: ComfyServer):
    comfy_double.set_fault(black_when="always")
    result = handle(job(), comfy_double.worker(attention="sage"))
    assert result["error_code"] == "output_error"
    assert (
        "with sdpa attention. It happened with PyTorch attention and without fp16 "
        "accumulation too" in result["error"]
    )
    assert comfy_double.job_files() == []
