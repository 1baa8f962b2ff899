"""The inline-video benchmark runs end to end on tiny inputs, so its numbers stay reproducible."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration  # ffmpeg

PROJECT = Path(__file__).resolve().parent.parent


def test_bench_fit_measures_a_clip_and_noise(tmp_path: Path):
    clip = tmp_path / "clip.mp4"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=s=96x64:r=25,noise=alls=40:allf=t+u", "-frames:v", "5",
         "-c:v", "libx264", "-preset", "ultrafast", str(clip)],
        check=True,
    )  # fmt: skip
    out = tmp_path / "results.json"
    subprocess.run(
        [sys.executable, "scripts/bench_fit.py", f"--clip=real={clip}", "--noise",
         "--sizes", "160x96", "--frames", "9", "--runs", "2", "--budget", "100000",
         "--quality", "--json", str(out)],
        cwd=PROJECT, check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    real, noise = json.loads(out.read_text())
    assert (real["source"], noise["source"]) == ("real", "noise")
    assert real["fits_inline"] and real["forced"]  # under the budget: measured at half its size
    assert real["budget_bytes"] == real["original_bytes"] // 2
    assert not noise["fits_inline"] and noise["budget_bytes"] == 75000
    for case in (real, noise):
        fit = case["fits"]["veryfast"]
        assert fit["probe"] == "160x96, 9 frames, 24/1 fps"  # looped from 5 frames, relabelled
        assert fit["bytes"]["max"] <= case["budget_bytes"]
        assert (
            case["original_s"]["min"] <= case["original_s"]["median"] <= case["original_s"]["max"]
        )
        assert 0 < fit["ssim"] <= 1 and 0 < case["original_ssim"] <= 1
