"""scripts/bench_boot.py: the verdicts it prints from the runs it timed, and the host's priming
before them."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from scripts.bench_boot import BenchError, JobTime, Run, parse_args, prime_host, report


def run(boot: str, first_s: float, start_s: float, warm_s: float | None) -> Run:
    timed = Run(boot, "first-job", "480x832", 1, ok=True, to_first_video_s=first_s)
    timed.comfyui_start_s = start_s
    timed.first = JobTime(True, first_s, stages={"sample_high_noise": 13.0})
    timed.warm = JobTime(True, warm_s, stages={"sample_high_noise": 11.0}) if warm_s else None
    return timed


def row(text: str, boot: str) -> list[str]:
    line = next(x for x in text.splitlines() if x.startswith(f"| {boot} |"))
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_the_target_is_comfyuis_start_plus_one_point_one_warm_jobs():
    # 20 s of ComfyUI's start + 1.1 x a 36 s warm job = 59.6 s.
    text = report([run("fast", 59.0, 20.0, 36.0), run("slow", 60.0, 20.0, 36.0)])
    assert row(text, "fast")[8] == "<= 59.6 met"
    assert row(text, "slow")[8] == "<= 59.6 missed"
    assert row(text, "slow")[6] == "1.7"  # first / warm


def test_a_run_without_a_warm_job_still_reports_its_first_video():
    cells = row(report([run("old", 89.3, 13.6, None)]), "old")
    assert cells[3:6] == ["1/1", "89.3", "-"]
    assert cells[7] == "13.6"  # ComfyUI's start
    assert cells[8] == "<= - -"  # no warm job, no target
    text = report([run("old", 89.3, 13.6, None)])
    assert "- old first-job 480x832 warm: -" in text
    assert "- old first-job 480x832 first: sample_high_noise 13.0" in text


def test_every_run_gets_its_own_line_with_what_it_cost_over_a_warm_job():
    text = report([run("new", 59.0, 20.0, 36.0), run("new", 71.4, 25.2, 31.2)])
    lines = [x for x in text.splitlines() if x.startswith("| new | 480x832 | 1 |")]
    # one line per run, both numbered 1 by the helper: 59.0 - 20.0 - 36.0 = 3.0 over warm,
    # within the 3.6 s allowance; 71.4 - 25.2 - 31.2 = 15.0 over, against 3.1 s.
    assert lines == [
        "| new | 480x832 | 1 | 59.0 | 20.0 | 36.0 | 59.6 met | 3.0 | 3.6 |",
        "| new | 480x832 | 1 | 71.4 | 25.2 | 31.2 | 59.5 missed | 15.0 | 3.1 |",
    ]


def test_a_run_without_a_warm_job_has_no_line_of_its_own():
    text = report([run("old", 89.3, 13.6, None)])
    assert "Every first-job run" not in text


def compiled(source: Path) -> bool:
    return Path(importlib.util.cache_from_source(str(source))).is_file()


def write(path: Path, text: str = "x = 1\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_priming_compiles_comfyui_and_what_each_boot_imports_of_its_checkout(tmp_path):
    comfy = [write(tmp_path / "ComfyUI" / "main.py"), write(tmp_path / "ComfyUI/comfy/ops.py")]
    comfy.append(write(tmp_path / "ComfyUI/custom_nodes/pack/nodes.py"))
    new = [write(tmp_path / "new/rp_handler.py"), write(tmp_path / "new/wan_worker/boot.py")]
    old = [write(tmp_path / "old/wan_worker/provision.py")]  # no rp_handler.py: skipped
    never = [write(tmp_path / "new/tests/test_x.py"), write(tmp_path / "new/scripts/bench.py")]

    took = prime_host(
        sys.executable,
        sys.executable,
        tmp_path / "ComfyUI",
        [tmp_path / "new", tmp_path / "old"],
        gpu=False,
        log=tmp_path / "prime.log",
    )

    assert [p for p in comfy + new + old if not compiled(p)] == []
    assert [p for p in never if compiled(p)] == []
    assert list(took) == ["bytecode_s"]  # no GPU step without a GPU


def test_priming_that_fails_names_the_command_and_the_way_around_it(tmp_path):
    write(tmp_path / "ComfyUI/main.py", "def broken(:\n")
    (tmp_path / "new").mkdir()
    with pytest.raises(BenchError) as caught:
        prime_host(
            sys.executable,
            sys.executable,
            tmp_path / "ComfyUI",
            [tmp_path / "new"],
            gpu=False,
            log=tmp_path / "prime.log",
        )
    assert "compileall" in str(caught.value)
    assert "--no-prime" in str(caught.value)
    assert "SyntaxError" in (tmp_path / "prime.log").read_text(encoding="utf-8")


def test_the_gpu_is_first_used_by_comfyuis_python_after_the_bytecode(tmp_path):
    calls = tmp_path / "calls"
    fake = write(
        tmp_path / "bin/comfy-python",
        f'#!/bin/sh\necho "$*" >> {calls}\ncase "$1" in -c) exit 3;; esac\n',
    )
    fake.chmod(0o755)
    write(tmp_path / "ComfyUI/main.py")
    write(tmp_path / "new/wan_worker/boot.py")
    with pytest.raises(BenchError, match="exited 3"):
        prime_host(
            str(fake),
            sys.executable,
            tmp_path / "ComfyUI",
            [tmp_path / "new"],
            gpu=True,
            log=tmp_path / "prime.log",
        )
    lines = calls.read_text(encoding="utf-8").splitlines()
    assert lines[0] == f"-m compileall -q -j 0 {tmp_path / 'ComfyUI'}"
    assert lines[1].startswith("-c import torch; torch.zeros(1, device='cuda')")
    assert len(lines) == 2  # the checkout was compiled by the handler's Python
    assert compiled(tmp_path / "new/wan_worker/boot.py")


def test_priming_is_on_unless_turned_off(tmp_path):
    write(tmp_path / "ComfyUI/main.py")
    write(tmp_path / "new/start.sh", "")
    common = ["--boot", f"new={tmp_path / 'new'}", "--comfyui-dir", str(tmp_path / "ComfyUI")]
    common += ["--models-root", str(tmp_path), "--out", str(tmp_path / "out")]
    assert parse_args(common).prime is True
    assert parse_args([*common, "--no-prime"]).prime is False
