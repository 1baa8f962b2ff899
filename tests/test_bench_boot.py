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
