"""The x264 preset timing (scripts/gpu_bench/encode_presets.py) and the spreads over runs
(scripts/gpu_bench/summarise.py), on a CPU with real ffmpeg."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from scripts.gpu_bench import analysis, encode_presets, report, summarise

pytestmark = pytest.mark.integration  # ffmpeg encodes

needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg")


def test_the_encode_is_videohelpersuite_h264_mp4_with_a_preset(tmp_path):
    command = encode_presets.encode_command(
        tmp_path / "f.rgb", 720, 1280, tmp_path / "o.mp4", "fast"
    )
    text = " ".join(command)
    # VideoHelperSuite's input flags for RGB frames, then video/h264-mp4's main pass at CRF 15
    assert "-f rawvideo -pix_fmt rgb24 -color_range pc -colorspace rgb" in text
    assert "-color_trc bt709 -s 720x1280 -r 24 -i" in text
    assert "-c:v libx264 -preset fast -pix_fmt yuv420p -crf 15" in text
    assert "-vf scale=out_color_matrix=bt709 -color_range tv -colorspace bt709" in text
    assert "-threads" not in text  # x264 chooses its threads, as in the workflow
    assert command[-1] == str(tmp_path / "o.mp4")


@needs_ffmpeg
def test_presets_are_timed_sized_and_checked_against_the_source(tmp_path, capsys):
    code = encode_presets.main([
        "--lavfi", "testsrc2=s=64x48:r=24", "--frames", "10", "--runs", "2",
        "--presets", "medium,superfast", "--json", str(tmp_path / "p.json"),
        "--workdir", str(tmp_path / "work"),
    ])  # fmt: skip

    assert code == 0
    saved = json.loads((tmp_path / "p.json").read_text())
    assert (saved["width"], saved["height"], saved["frames"], saved["crf"]) == (64, 48, 10, 15)
    assert list(saved["presets"]) == ["medium", "superfast"]
    for preset, row in saved["presets"].items():
        assert len(row["runs_s"]) == 2
        assert row["wall_s"]["min"] <= row["wall_s"]["median"] <= row["wall_s"]["max"]
        assert row["bytes"] == (tmp_path / "work" / f"{preset}.mp4").stat().st_size
        assert 20 < row["psnr_min_db"] <= row["psnr_mean_db"] < 99
    assert saved["presets"]["medium"]["vs_first_psnr_mean_db"] == float("inf")
    assert saved["presets"]["superfast"]["vs_first_psnr_mean_db"] < 99
    # the source as raw RGB: 10 frames of 64x48
    assert (tmp_path / "work" / "source.rgb").stat().st_size == 10 * 64 * 48 * 3
    table = capsys.readouterr().out
    assert "10 frames 64x48, CRF 15, 2 runs each" in table
    assert "| medium |" in table and "| superfast |" in table


@needs_ffmpeg
def test_thread_counts_are_variants_of_each_preset_with_their_cpu_time(tmp_path, capsys):
    assert "-preset veryfast -threads 3 -pix_fmt" in " ".join(
        encode_presets.encode_command(tmp_path / "f.rgb", 64, 48, tmp_path / "o.mp4", "veryfast",
                                      threads=3)
    )  # fmt: skip
    code = encode_presets.main([
        "--lavfi", "testsrc2=s=64x48:r=24", "--frames", "10", "--runs", "1",
        "--presets", "veryfast", "--threads", "0,1", "--json", str(tmp_path / "p.json"),
        "--workdir", str(tmp_path / "work"),
    ])  # fmt: skip

    assert code == 0
    saved = json.loads((tmp_path / "p.json").read_text())["presets"]
    assert list(saved) == ["veryfast", "veryfast@1"]
    for name, row in saved.items():
        assert row["bytes"] == (tmp_path / "work" / f"{name}.mp4").stat().st_size
        assert 0 < row["cpu_s"]["min"] <= row["cpu_s"]["max"]
    assert "| veryfast@1 |" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        encode_presets.main(["--lavfi", "x", "--frames", "1", "--threads", "-1"])
    assert "--threads takes counts of 0 or more" in capsys.readouterr().err


@needs_ffmpeg
def test_an_mp4_source_and_the_printed_command_encode_the_same_frames(tmp_path, capsys):
    source = tmp_path / "in.mp4"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-nostdin", "-f", "lavfi", "-i", "testsrc2=s=32x32:r=8",
         "-frames:v", "6", "-c:v", "libx264", "-pix_fmt", "yuv420p", str(source)],
        check=True,
    )  # fmt: skip
    work = tmp_path / "work"

    assert encode_presets.main(["--source", str(source), "--workdir", str(work),
                                "--print-command", "veryfast"]) == 0  # fmt: skip

    command = capsys.readouterr().out.split()
    assert command[command.index("-preset") + 1] == "veryfast"
    subprocess.run(command, check=True)
    assert (work / "out.mp4").stat().st_size > 0
    assert (work / "source.rgb").stat().st_size == 6 * 32 * 32 * 3


def test_arguments_need_a_source_and_frames_for_lavfi(capsys):
    with pytest.raises(SystemExit):
        encode_presets.parse_args([])
    with pytest.raises(SystemExit):
        encode_presets.parse_args(["--lavfi", "testsrc2"])
    assert "--lavfi needs --frames" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        encode_presets.parse_args(["--lavfi", "testsrc2", "--frames", "3", "--print-command", "x"])
    assert "--print-command needs --workdir" in capsys.readouterr().err


def run_with(step_s: float, warm_totals: list[float], tmp: Path, name: str) -> Path:
    """A saved run of one cold and len(warm_totals) warm jobs with two 3-step samplers."""
    config = analysis.ConfigRecord("720x1280", "sage", comfyui_start_s=20.0, peak_vram_mib=30000)
    for kind, total in [("cold", 90.0)] + [("warm", t) for t in warm_totals]:
        events = [analysis.ProgressEvent(1.0, "sample_high_noise", 0, 0)]
        events += [
            analysis.ProgressEvent(3.0 + step_s * k, "sample_high_noise", k, 3) for k in (1, 2, 3)
        ]
        job = analysis.JobRecord(
            "720x1280", "sage", kind, ok=True, total_s=total, events=events,
            stages={"sample_high_noise": 2 + 3 * step_s, "encode_mp4": 3.0},
        )  # fmt: skip
        analysis.analyse(job)
        config.jobs.append(job)
    report.save(tmp / name, {}, [config], 32607)
    return tmp / name


def test_spreads_over_runs_are_min_median_max_per_group(tmp_path, capsys):
    b1 = run_with(8.6, [68.0, 69.0], tmp_path, "b1")
    b2 = run_with(8.6, [70.0, 68.5], tmp_path, "b2")
    c1 = run_with(7.4, [63.0, 63.4], tmp_path, "c1")

    assert summarise.main(["--group", "B", str(b1), str(b2 / "bench_gpu.json"),
                           "--group", "C", str(c1), "--json", str(tmp_path / "s.json")]) == 0  # fmt: skip

    saved = json.loads((tmp_path / "s.json").read_text())
    b = saved["B"]["720x1280 sage"]
    assert b["runs"] == 2
    assert b["warm_job_s"] == {"n": 4, "min": 68.0, "median": 68.75, "max": 70.0}
    assert b["s_per_step"]["median"] == 8.6
    assert b["cold_job_s"] == {"n": 2, "min": 90.0, "median": 90.0, "max": 90.0}
    assert b["warm_parts"]["encode_mp4"]["median"] == 3.0
    assert b["warm_parts"]["high setup"]["median"] == pytest.approx(2.0)
    assert saved["C"]["720x1280 sage"]["warm_job_s"]["max"] == 63.4
    table = capsys.readouterr().out
    assert "| B | 720x1280 sage | 2 | 68.0 / 68.8 / 70.0 | 8.60 / 8.60 / 8.60 |" in table
