"""scripts/bench_boot.py: the verdicts it prints from the runs it timed, the host's priming
before them, and the `answer` runs that stop a boot once ComfyUI answers."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from scripts.bench_boot import (
    BenchError,
    JobTime,
    Run,
    base_env,
    parse_args,
    prime_host,
    progress_line,
    report,
    run_boot,
)
from tests.fake_comfy_stack import make_fake_comfy


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


@pytest.mark.integration
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


@pytest.mark.integration
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


@pytest.mark.integration
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


# -- answer runs: real boots of a stand-in start.sh, stopped once ComfyUI answers ------------

# The new boot logs its events (wan_worker.boot.timeline's lines); the old one logs the answer.
# Each shows the setting that --env and --boot-env give, records its pid, then waits to be
# stopped.
NEW_START = """#!/usr/bin/env bash
set -euo pipefail
echo "$$" > "$APP_DIR/pid"
echo "READAHEAD=${READAHEAD_BEFORE_ANSWER_MB:-unset} PROBE=${SKIP_GPU_CHECK:-unset}"
mark() {
  printf '%s INFO wan_worker.boot: [boot] +0.1s %s\\n' "$(date '+%Y-%m-%d %H:%M:%S,%3N')" "$*" >&2
}
mark comfyui_launched pid=1
mark gpu_ready s=0.1 probes=1
mark comfyui_answers s_since_launch=2.5
exec sleep 600
"""
OLD_START = """#!/usr/bin/env bash
set -euo pipefail
echo "$$" > "$APP_DIR/pid"
echo "[start] ComfyUI answers at $COMFYUI_URL after 3.1s"
exec sleep 600
"""


def checkout(path: Path, start: str) -> Path:
    write(path / "start.sh", start)
    return path


def answer_args(tmp_path: Path, *extra: str) -> Any:
    write(tmp_path / "ComfyUI/main.py")
    new = checkout(tmp_path / "new", NEW_START)
    old = checkout(tmp_path / "old", OLD_START)
    args = parse_args(
        [
            *("--boot", f"old={old}", "--boot", f"new={new}", "--boot", f"new0={new}"),
            *("--comfyui-dir", str(tmp_path / "ComfyUI"), "--models-root", str(tmp_path)),
            *("--out", str(tmp_path / "out"), "--scenarios", "answer", "--timeout", "60"),
            *(() if "--stack" in extra else ("--stack", "host")),  # the stand-ins run no ComfyUI
            *extra,
        ]
    )
    args.out.mkdir()
    return args


def boot(args: Any, name: str, tmp_path: Path) -> Run:
    path = dict(args.boot)[name]
    env = base_env(args, tmp_path / "manifest.json", None)
    return run_boot(args, name, path, "answer", (480, 832), 1, env)


def gone(pid_file: Path) -> bool:
    return not Path(f"/proc/{pid_file.read_text(encoding='utf-8').strip()}").exists()


@pytest.mark.integration
def test_an_answer_run_stops_the_boot_once_comfyui_answers(tmp_path):
    args = answer_args(
        tmp_path,
        *("--env", "SKIP_GPU_CHECK=1", "--boot-env", "new0:READAHEAD_BEFORE_ANSWER_MB=0"),
    )

    new, new0, old = (boot(args, name, tmp_path) for name in ("new", "new0", "old"))

    assert (new.ok, new0.ok, old.ok) == (True, True, True)
    assert new.comfyui_start_s == 2.5  # the new boot's event
    assert old.comfyui_start_s == 3.1  # the old boot's log line
    for run_ in (new, new0, old):
        # A stand-in answers within milliseconds of its start: 0.0 s once rounded.
        assert run_.answer_s is not None and 0 <= run_.answer_s < 60
        assert run_.first is None and run_.to_first_video_s is None  # no job ran
    assert "gpu_ready" in new.marks and "gpu_ready" not in old.marks
    assert gone(tmp_path / "new/pid") and gone(tmp_path / "old/pid")
    logs = {n: (args.out / f"boot-{n}-answer-480x832-1.log").read_text() for n in ("new", "new0")}
    assert "READAHEAD=unset PROBE=1" in logs["new"]  # --env reaches every boot
    assert "READAHEAD=0 PROBE=1" in logs["new0"]  # --boot-env only its own
    assert progress_line(old) == (
        f"old answer 480x832 #1: ComfyUI answered at {old.answer_s} s (its start 3.1 s), ok"
    )


@pytest.mark.integration
def test_a_boot_that_exits_before_comfyui_answers_fails_its_run_with_why(tmp_path):
    args = answer_args(tmp_path)
    write(tmp_path / "new/start.sh", "#!/usr/bin/env bash\necho 'CUDA is not ready'\nexit 4\n")

    failed = boot(args, "new", tmp_path)

    assert not failed.ok
    assert failed.error == "the boot exited (4) before ComfyUI answered"
    assert "- new answer 480x832 #1: the boot exited (4)" in report([failed])


# A stand-in boot that starts "ComfyUI" as the worker does (COMFYUI_PYTHON -u MAIN ARGS), lets
# it print what it saw, then logs the answer.
LAUNCHING_START = """#!/usr/bin/env bash
set -euo pipefail
echo "$$" > "$APP_DIR/pid"
cd "$COMFYUI_DIR"
"$COMFYUI_PYTHON" -u "$COMFYUI_DIR/main.py" --listen 127.0.0.1
printf '%s INFO wan_worker.boot: [boot] +0.1s comfyui_answers s_since_launch=1.5\\n' \\
  "$(date '+%Y-%m-%d %H:%M:%S,%3N')" >&2
exec sleep 600
"""


@pytest.mark.integration
def test_an_image_stack_boot_starts_comfyui_through_the_launcher(tmp_path):
    comfy, site = make_fake_comfy(tmp_path / "fake")
    new = checkout(tmp_path / "new", LAUNCHING_START)
    args = parse_args(
        [
            *("--boot", f"new={new}", "--comfyui-dir", str(comfy), "--models-root", str(tmp_path)),
            *("--out", str(tmp_path / "out"), "--scenarios", "answer", "--timeout", "60"),
            *("--env", f"PYTHONPATH={site}", "--env", "FAKE_DEVICE=nvidia"),
        ]
    )
    assert args.stack == "image"  # the default, as bench_gpu's
    args.out.mkdir()

    run_ = boot(args, "new", tmp_path)

    assert run_.ok, run_.error
    assert run_.comfyui_start_s == 1.5
    log = (args.out / "boot-new-answer-480x832-1.log").read_text()
    seen = json.loads(next(line for line in log.splitlines() if line.startswith("{")))
    assert seen["argv"] == [str(comfy / "main.py"), "--listen", "127.0.0.1"]
    assert seen["disabled"] == ["cuda", "triton"]
    assert seen["conv3d"] == "cudnn_convolution"
    assert "comfy_launch: conv3d workaround on" in log
    wrapper = (args.out / "comfyui-python").read_text()
    assert wrapper.startswith("#!/bin/sh\n# ComfyUI on the image stack")
    assert gone(tmp_path / "new/pid")


@pytest.mark.integration
def test_a_boot_whose_comfyui_is_not_on_the_image_stack_fails_its_run(tmp_path):
    args = answer_args(tmp_path, "--stack", "image")

    failed = boot(args, "new", tmp_path)  # its ComfyUI never went through the launcher

    assert not failed.ok
    assert failed.error == (
        "ComfyUI did not run on the image stack: "
        "the launcher never disabled comfy-kitchen's 'cuda' backend"
    )
    assert base_env(args, tmp_path / "m.json", None)["COMFYUI_PYTHON"] == str(
        args.out / "comfyui-python"
    )
    host = answer_args(tmp_path / "host")
    assert base_env(host, tmp_path / "m.json", None)["COMFYUI_PYTHON"] == host.comfyui_python


def answered(boot_name: str, at: float, start: float) -> Run:
    timed = Run(boot_name, "answer", "480x832", 1, ok=True, answer_s=at, comfyui_start_s=start)
    return timed


def test_answer_runs_report_when_comfyui_answered_and_what_came_before_its_launch():
    runs = [answered("old", 20.0, 12.0), answered("old", 22.0, 13.0), answered("old", 30.0, 14.0)]
    runs += [answered("new", 16.0, 15.5), answered("new", 17.0, 16.5)]

    text = report(runs)

    assert row(text, "old") == [
        "old",
        "480x832",
        "3/3",
        "20.0 / 22.0 / 30.0",
        "12.0 / 13.0 / 14.0",
        "8.0 / 9.0 / 16.0",
        "-",
    ]
    assert row(text, "new")[3:6] == ["16.0 / 16.5 / 17.0", "15.5 / 16.0 / 16.5", "0.5 / 0.5 / 0.5"]
    assert "first / warm" not in text  # no job ran, so no job table
    assert text.startswith("ComfyUI's first answer")
    both = report([run("new", 59.0, 20.0, 36.0), *runs])
    assert "| new | first-job | 480x832 | 1/1 | 59.0 |" in both  # each table has its own runs
    assert row(both.split("ComfyUI's first answer")[1], "new")[2] == "2/2"


@pytest.mark.parametrize(
    ("extra", "complaint"),
    [
        (["--boot-env", "newer:KEY=1"], "no --boot is named newer"),
        (["--boot-env", "new0=KEY"], "want NAME:KEY=VALUE"),
        (["--boot", "new=."], "each boot needs a name of its own"),
    ],
)
def test_boot_settings_that_cannot_apply_are_refused(tmp_path, capsys, extra, complaint):
    with pytest.raises(SystemExit):
        answer_args(tmp_path, *extra)
    assert complaint in capsys.readouterr().err
