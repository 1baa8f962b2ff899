"""scripts/bench_boot.py's report: the verdicts it prints from the runs it timed."""

from __future__ import annotations

from scripts.bench_boot import JobTime, Run, report


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
