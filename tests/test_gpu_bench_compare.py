"""The output check (scripts/gpu_bench/compare_videos.py) on real MP4s made by ffmpeg here.

The PSNR it reports must be the PSNR of the frames ffmpeg decodes: it is checked against the
same frames decoded separately to raw RGB and counted with numpy.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from scripts.gpu_bench import compare_videos as cv

pytestmark = [
    pytest.mark.integration,  # ffmpeg makes and decodes the videos
    pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg"),
]

W, H, FRAMES = 64, 48, 12


def make_mp4(path: Path, crf: int, source: str = "testsrc2", frames: int = FRAMES) -> Path:
    subprocess.run(
        ["ffmpeg", "-v", "error", "-nostdin", "-f", "lavfi",
         "-i", f"{source}=s={W}x{H}:r=8", "-frames:v", str(frames),
         "-c:v", "libx264", "-crf", str(crf), "-pix_fmt", "yuv420p", "-y", str(path)],
        check=True,
    )  # fmt: skip
    return path


def raw_rgb(path: Path) -> np.ndarray:
    done = subprocess.run(
        ["ffmpeg", "-v", "error", "-nostdin", "-i", str(path), "-f", "rawvideo",
         "-pix_fmt", "rgb24", "-"],
        capture_output=True, check=True,
    )  # fmt: skip
    return np.frombuffer(done.stdout, dtype=np.uint8).reshape(-1, H, W, 3)


def test_the_same_file_twice_is_identical(tmp_path):
    a = make_mp4(tmp_path / "a.mp4", 15)
    copy = tmp_path / "copy.mp4"
    copy.write_bytes(a.read_bytes())

    result = cv.compare(a, copy)

    assert result.error == ""
    assert result.frames == FRAMES and result.identical_frames == FRAMES
    assert math.isinf(result.psnr_min_db) and math.isinf(result.psnr_mean_db)
    assert math.isinf(result.psnr_video_db) and result.max_abs_diff == 0
    assert result.line().endswith("PSNR min inf, mean inf, whole video inf, max |diff| 0")


def test_psnr_is_that_of_the_decoded_frames(tmp_path):
    a = make_mp4(tmp_path / "a.mp4", 10)
    b = make_mp4(tmp_path / "b.mp4", 35)

    result = cv.compare(a, b)

    x, y = raw_rgb(a).astype(np.float64), raw_rgb(b).astype(np.float64)
    mse = ((x - y) ** 2).mean(axis=(1, 2, 3))
    per_frame = 10 * np.log10(255.0**2 / mse)
    assert result.frames == FRAMES and result.identical_frames == 0
    assert result.frame_psnr_db == pytest.approx(per_frame, abs=1e-3)
    assert result.psnr_min_db == pytest.approx(per_frame.min())
    assert result.psnr_mean_db == pytest.approx(per_frame.mean())
    assert result.psnr_video_db == pytest.approx(10 * math.log10(255.0**2 / mse.mean()))
    assert result.max_abs_diff == int(np.abs(x - y).max())
    assert 15 < result.psnr_min_db < 50


def test_folders_pair_by_name_and_json_writes_inf_as_text(tmp_path, capsys):
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    for name in ("720x1280-sage-job0.mp4", "720x1280-sage-job1.mp4"):
        make_mp4(one / name, 15)
        (two / name).write_bytes((one / name).read_bytes())
    make_mp4(one / "only-here.mp4", 15)

    assert cv.main([str(one), str(two), "--json", str(tmp_path / "c.json")]) == 0

    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and all("12 identical" in line for line in out)
    saved = json.loads((tmp_path / "c.json").read_text())
    assert [Path(c["a"]).name for c in saved] == [
        "720x1280-sage-job0.mp4",
        "720x1280-sage-job1.mp4",
    ]
    assert saved[0]["psnr_min_db"] == "inf" and saved[0]["frame_psnr_db"] == ["inf"] * FRAMES


def test_pairs_that_cannot_be_compared_say_why(tmp_path, capsys):
    a = make_mp4(tmp_path / "a.mp4", 15)
    short = make_mp4(tmp_path / "short.mp4", 15, frames=FRAMES - 3)
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypisom not a video")

    fewer = cv.compare(a, short)
    assert "a.mp4 has more frames (the other ends after 9)" in fewer.error
    assert "ffmpeg could not decode" in cv.compare(a, broken).error
    assert "No such file" in cv.compare(a, tmp_path / "missing.mp4").error
    assert cv.main([str(a), str(short)]) == 1
    assert "ERROR" in capsys.readouterr().out


def test_frames_of_another_size_are_not_compared(tmp_path):
    a = make_mp4(tmp_path / "a.mp4", 15)
    wide = tmp_path / "wide.mp4"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-nostdin", "-f", "lavfi", "-i", "testsrc2=s=96x48:r=8",
         "-frames:v", str(FRAMES), "-c:v", "libx264", "-pix_fmt", "yuv420p", "-y", str(wide)],
        check=True,
    )  # fmt: skip
    assert cv.compare(a, wide).error == "frame 0: size 64x48 vs 96x48"


def test_ppm_stream_reader_reads_sizes_from_each_frame():
    first = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    second = np.full((1, 2, 3), 7, dtype=np.uint8)
    stream = b"P6\n3 2\n255\n" + first.tobytes() + b"P6 2 1 255\n" + second.tobytes()
    import io

    frames = list(cv.read_ppm_stream(io.BytesIO(stream)))

    assert [f.shape for f in frames] == [(2, 3, 3), (1, 2, 3)]
    assert (frames[0] == first).all() and (frames[1] == second).all()
    with pytest.raises(cv.DecodeError, match="truncated"):
        list(cv.read_ppm_stream(io.BytesIO(b"P6\n3 2\n255\n" + b"\x00" * 5)))
    with pytest.raises(cv.DecodeError, match="not a binary PPM"):
        list(cv.read_ppm_stream(io.BytesIO(b"P5\n3 2\n255\n")))
