"""Time a worker from start.sh's first line to its first video: one boot against another.

Each boot (`--boot NAME=PATH`: a checkout of the project, e.g. `old=` the main branch before the
parallel boot and `new=` this one) is started as the image starts it, `bash PATH/start.sh`,
with RunPod's job queue played on loopback (tests/runpod_queue.py, so the worker runs in
serverless mode through the runpod SDK) and a real ComfyUI, for every size and scenario,
`--runs` times:

- `first-job`: a job is already queued when start.sh starts (a request woke the worker). Time
  to its result, then one more job on the same worker (warm), as a busy worker sees it;
- `warmup`: no job at boot. Once the worker is idle (the new boot: its warm-up has ended; the
  old one: its queue is open) one job comes, then a warm one. The target: the first job takes
  at most 1.1 x the warm one;
- `answer`: as `first-job` until ComfyUI first answers, then the boot is stopped: time from
  start.sh's first line to ComfyUI's answer, the one thing a job that arrives at boot should wait
  for. Cheap (no job runs), so it takes many runs to compare what a boot does beside ComfyUI's
  start; `--boot-env` gives one boot name its own settings (the same checkout may be booted
  under several names).

`--stack image` (the default) runs ComfyUI as the image's torch makes it run, as
`scripts/bench_gpu.py --stack image` does: COMFYUI_PYTHON is a small wrapper (`OUT/comfyui-python`)
that starts ComfyUI's main.py through `scripts/gpu_bench/comfy_launch.py`, and a run whose log
does not show that stack fails. `--stack host` runs the host's own stack.

`--drop-caches` drops the page cache before each boot (`sync; echo 3 > /proc/sys/vm/drop_caches`,
as root), so the models come from disk as on a fresh host. Before the first boot the host is primed
once, untimed (`--no-prime` skips it): ComfyUI's and each checkout's bytecode is compiled, as the
image compiles them at build, and the GPU is initialised once, so a fresh host's first boot pays
neither inside its timed start. The models are full-size synthetic weights (`--weights full`,
written by scripts/make_synthetic_weights.py when missing) under `--models-root`, listed in a
manifest of their real sizes, so both boots verify them by marker as on a warm network volume.
Every time is read on this process's clock; the new boot's own events, read from its log
(`tests.boot_events`), give its stages. Results: `--out`/bench_boot.json and bench_boot.md, with
each boot's log. Run from the project root with the project's virtualenv (the handlers of both
boots run with `--python`, ComfyUI with `--comfyui-python`):

    python scripts/bench_boot.py --boot old=/path/to/old --boot new=. \\
        --comfyui-dir /opt/ComfyUI --comfyui-python /opt/venv/bin/python \\
        --models-root /models --drop-caches --out /tmp/bench-boot

docs/history/benchmarks.md gives the commands used, and a dry run of the same path on a CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from scripts.gpu_bench import BenchError  # noqa: E402
from scripts.gpu_bench.comfyui import LAUNCHER, STACKS, stack_problem  # noqa: E402
from scripts.gpu_bench.jobs import PROMPTS, start_image_b64  # noqa: E402
from scripts.gpu_bench.jobs import workflow_with_frames as gpu_bench_workflow  # noqa: E402
from scripts.gpu_bench.memory import VramBallast  # noqa: E402
from scripts.gpu_bench.weights import ensure_weights  # noqa: E402
from tests.boot_events import parse_events  # noqa: E402
from tests.runpod_queue import QueuedJob, RunPodQueue  # noqa: E402
from tests.support import closed_port, free_port  # noqa: E402

MANIFEST = REPO_ROOT / "workflows" / "models.json"
SCENARIOS = ("first-job", "warmup", "answer")
WARMUP_ENDS = ("warmup_done", "warmup_preempted", "warmup_skipped", "warmup_failed")
FIRST_JOB_TARGET = 1.1  # the first job at most 1.1 x a warm one (after ComfyUI's own start)


@dataclass
class JobTime:
    """One job: end to end on this clock (queued or taken -> result) and the handler's timings."""

    ok: bool
    e2e_s: float
    total_s: float | None = None
    wait_ready_s: float | None = None
    stages: dict[str, float] = field(default_factory=dict)
    error: str = ""


@dataclass
class Run:
    boot: str
    scenario: str
    size: str
    index: int
    ok: bool = False
    error: str = ""
    to_first_video_s: float | None = None
    comfyui_start_s: float | None = None  # ComfyUI's launch to its first answer
    answer_s: float | None = None  # start.sh's first line to ComfyUI's first answer (answer)
    marks: dict[str, float] = field(default_factory=dict)  # since start.sh's first line
    first: JobTime | None = None
    warm: JobTime | None = None


# -- setting up ------------------------------------------------------------------------------


def _links_to(link: Path, target: Path) -> bool:
    try:
        return link.resolve(strict=True) == target.resolve(strict=True)
    except OSError:
        return False


def bench_manifest(models_root: Path, comfyui_dir: Path, out: Path) -> Path:
    """The real manifest with each file's actual size and no sha256 or reachable source: the
    synthetic weights pass verification by size once, then by marker, in both boots."""
    manifest = json.loads(MANIFEST.read_text(encoding="utf-8"))
    nowhere = f"http://127.0.0.1:{closed_port()}"
    for entry in manifest["models"]:
        path = models_root / entry["folder"] / entry["filename"]
        if not path.is_file():
            raise BenchError(f"{path} is missing; write the weights first (--weights)")
        entry["size"] = path.stat().st_size
        entry["sha256"] = None
        entry["sources"] = [{"type": "url", "url": f"{nowhere}/{entry['filename']}"}]
        entry["link_into"] = [
            folder
            for folder in entry.get("link_into", [])
            if not _links_to(
                Path(folder.format(comfyui_dir=comfyui_dir, models_root=models_root))
                / entry["filename"],
                path,
            )
        ]  # a link already in place is left alone (a shared ComfyUI's, say)
    path = out / "bench_manifest.json"
    path.write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return path


def workflow_with_frames(out: Path, frames: int | None) -> Path | None:
    """A copy of the workflow with another frame count; None: each boot's own workflow."""
    return None if frames is None else gpu_bench_workflow(out, frames)


def comfyui_python(args: argparse.Namespace) -> str:
    """COMFYUI_PYTHON for the boots: `--comfyui-python` itself on the host's stack, or a wrapper
    that runs ComfyUI through the launcher of `--stack` (the worker starts ComfyUI as
    `COMFYUI_PYTHON -u MAIN ARGS`, which the wrapper turns into `PYTHON -u LAUNCHER FLAGS --
    MAIN ARGS`)."""
    flags = STACKS[args.stack].launcher_flags()
    if not flags:
        return str(args.comfyui_python)
    wrapper = args.out / "comfyui-python"
    command = shlex.join([args.comfyui_python, "-u", str(LAUNCHER), *flags, "--"])
    wrapper.write_text(
        "#!/bin/sh\n"
        f"# ComfyUI on the {args.stack} stack (scripts/bench_boot.py --stack {args.stack})\n"
        'if [ "${1:-}" = "-u" ]; then shift; fi\n'
        f'exec {command} "$@"\n',
        encoding="utf-8",
    )
    wrapper.chmod(0o755)
    return str(wrapper)


def base_env(args: argparse.Namespace, manifest: Path, workflow: Path | None) -> dict[str, str]:
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "CUDA_VISIBLE_DEVICES")
    env = {k: v for k, v in os.environ.items() if k in keep}
    env.update(
        {
            "PYTHON": args.python,
            "COMFYUI_PYTHON": comfyui_python(args),
            "COMFYUI_DIR": str(args.comfyui_dir),
            "MODELS_ROOT": str(args.models_root),
            "MODELS_MANIFEST": str(manifest),
            "PROVISION_RETRIES": "1",
            "PROVISION_BACKOFF_S": "0",
            "HF_HUB_OFFLINE": "1",
            "ATTENTION": args.attention,
            "JOB_TIMEOUT_S": "3600",
            "COMFYUI_READY_TIMEOUT_S": "900",
            "MAX_OUTPUT_PIXELS": str(1280 * 720),
            # Every video inline, never re-encoded to fit: this times the boot, not the fit
            # (scripts/bench_fit.py times that).
            "MAX_BASE64_BYTES": str(1 << 31),
            "PYTHONUNBUFFERED": "1",
        }
    )
    if args.skip_gpu_check:
        env["SKIP_GPU_CHECK"] = "1"
    if workflow is not None:
        env["WORKFLOW_PATH"] = str(workflow)
    if args.extra_comfyui_args:
        env["COMFYUI_EXTRA_ARGS"] = args.extra_comfyui_args
    for item in args.env:
        key, _, value = item.partition("=")
        env[key] = value
    return env


# What the image compiles at build (Dockerfile: `compileall` of /opt/ComfyUI, of rp_handler.py
# and of wan_worker); the rest of a checkout (tests, scripts) is never imported by a boot.
CHECKOUT_SOURCES = ("rp_handler.py", "wan_worker")
CUDA_INIT = "import torch; torch.zeros(1, device='cuda'); torch.cuda.synchronize()"


def prime_host(
    comfyui_python: str,
    python: str,
    comfyui_dir: Path,
    checkouts: list[Path],
    *,
    gpu: bool,
    log: Path,
) -> dict[str, float]:
    """Do once, untimed, what a worker's host and image have done before any boot, so that the
    first timed boot on a fresh host costs what the later ones do: ComfyUI's and each checkout's
    bytecode compiled (the image compiles them at build; a first boot would compile them inside
    its ComfyUI start), and, with `gpu`, the GPU initialised once by a process of its own.
    Returns the seconds each took."""
    sources = [(comfyui_python, comfyui_dir)] + [
        (python, checkout / name) for checkout in checkouts for name in CHECKOUT_SOURCES
    ]
    steps: list[tuple[str, list[str]]] = [
        ("bytecode_s", [py, "-m", "compileall", "-q", "-j", "0", str(path)])
        for py, path in sources
        if path.exists()
    ]
    if gpu:
        steps.append(("cuda_init_s", [comfyui_python, "-c", CUDA_INIT]))
    took: dict[str, float] = {}
    with log.open("ab") as out:
        for key, command in steps:
            started = time.monotonic()
            done = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, check=False)
            took[key] = round(took.get(key, 0.0) + time.monotonic() - started, 2)
            if done.returncode != 0:
                raise BenchError(
                    f"priming the host failed: `{shlex.join(command)}` exited "
                    f"{done.returncode}; see {log} (or pass --no-prime)"
                )
    return took


def evict_models(models_root: Path) -> None:
    """Drop the model files (only them) from the page cache; no root needed."""
    for path in models_root.glob("*/*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def drop_caches() -> None:
    subprocess.run(["sync"], check=True)
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n", encoding="ascii")
    except OSError as exc:
        raise BenchError(f"--drop-caches needs root ({exc})") from None


def prepare_markers(checkout: Path, env: dict[str, str], log: Path) -> None:
    """One provisioning run, so the timed boots find every model verified (markers)."""
    with log.open("ab") as out:
        done = subprocess.run(
            [env["PYTHON"], "-m", "wan_worker.provision"],
            cwd=checkout,
            env={**env, "PYTHONPATH": str(checkout)},
            stdout=out,
            stderr=subprocess.STDOUT,
            check=False,
        )
    if done.returncode != 0:
        raise BenchError(f"provisioning the synthetic weights failed; see {log}")


# -- one boot --------------------------------------------------------------------------------


def job_input(size: tuple[int, int], seed: int) -> dict[str, Any]:
    width, height = size
    return {
        "start_image": "data:image/png;base64," + start_image_b64(width, height),
        "prompt": PROMPTS[seed % len(PROMPTS)],
        "width": width,
        "height": height,
        "seed": seed,
    }


def job_time(job: QueuedJob, since: float) -> JobTime:
    end = job.ended_at if job.ended_at is not None else time.monotonic()
    result = job.result or {}
    if job.state != "COMPLETED":
        return JobTime(False, round(end - since, 2), error=f"{job.state}: {result.get('error')}")
    timings = (result.get("output") or {}).get("timings") or {}
    return JobTime(
        True,
        round(end - since, 2),
        total_s=timings.get("total_s"),
        wait_ready_s=timings.get("wait_ready_s"),
        stages={k: float(v) for k, v in (timings.get("stages") or {}).items()},
    )


def read_events(log: Path, t0_wall: float) -> dict[str, float]:
    """The boot's events in its log (first of each name), in seconds since start.sh's first
    line."""
    marks: dict[str, float] = {}
    if log.exists():
        for event in parse_events(log.read_text(encoding="utf-8", errors="replace")):
            marks.setdefault(event["event"], round(event["t"] - t0_wall, 2))
            if event["event"] == "comfyui_answers":
                marks["comfyui_start_s"] = float(event["s_since_launch"])
            if event["event"] == "readahead_done":
                marks["readahead_mb"] = float(event["mb"])
    return marks


def old_comfyui_start(log: str) -> float | None:
    """The old boot's `[start] ComfyUI answers at URL after 25.3s`."""
    found = re.search(r"ComfyUI answers at \S+ after ([0-9.]+)s", log)
    return float(found.group(1)) if found else None


def answered(marks: dict[str, float], log: Path) -> bool:
    """Whether ComfyUI has answered: the new boot's event, or the old boot's log line."""
    if "comfyui_answers" in marks:
        return True
    return log.exists() and old_comfyui_start(log.read_text(errors="replace")) is not None


def idle(queue: RunPodQueue, marks: dict[str, float], env: dict[str, str]) -> bool:
    """Whether a booted worker has nothing left to do: its warm-up has ended (a boot with a
    warm-up), ComfyUI answers (a boot without), or its queue is open (the old boot, which opens
    it only once ComfyUI answers, and writes no events)."""
    if "comfyui_launched" not in marks:
        return queue.first_poll_at is not None
    if env.get("WARMUP", "1").strip().lower() in ("0", "false", "no", "off"):
        return "comfyui_answers" in marks and "jobs_open" in marks
    return any(name in marks for name in WARMUP_ENDS)


def wait_for(predicate: Any, timeout_s: float, what: str, proc: subprocess.Popen[bytes]) -> None:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if predicate():
            return
        if proc.poll() is not None:
            raise BenchError(f"the boot exited ({proc.returncode}) before {what}")
        time.sleep(0.1)
    raise BenchError(f"{what} did not happen within {timeout_s:g} s")


def stop_boot(proc: subprocess.Popen[bytes], pid_file: Path) -> None:
    """End the handler and the ComfyUI it started, and wait until ComfyUI is gone (its GPU
    memory free) before the next boot."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    try:
        pid = int(pid_file.read_text())
    except (OSError, ValueError):
        return
    for sig, wait_s in ((signal.SIGTERM, 30.0), (signal.SIGKILL, 10.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        end = time.monotonic() + wait_s
        while time.monotonic() < end:
            if not Path(f"/proc/{pid}").exists():
                return
            time.sleep(0.1)


def time_jobs(
    args: argparse.Namespace,
    run: Run,
    queue: RunPodQueue,
    first_id: str,
    scenario: str,
    size: tuple[int, int],
    t0: float,
) -> None:
    """Wait for the first job's result, then time a warm job (unless --no-warm-job)."""
    first = queue.wait(first_id, timeout_s=args.timeout)
    since = first.submitted_at if scenario == "warmup" else t0
    run.first = job_time(first, since)
    run.to_first_video_s = round((first.ended_at or time.monotonic()) - t0, 2)
    if args.warm_job:
        warm = queue.wait(queue.submit(job_input(size, 2)), timeout_s=args.timeout)
        run.warm = job_time(warm, warm.submitted_at)
    if first.taken_at is not None:
        run.marks["first_job_taken"] = round(first.taken_at - t0, 2)


def boot_env(items: list[tuple[str, str, str]], name: str) -> dict[str, str]:
    """The settings `--boot-env` gives this boot name alone."""
    return {key: value for boot, key, value in items if boot == name}


def run_boot(
    args: argparse.Namespace,
    name: str,
    checkout: Path,
    scenario: str,
    size: tuple[int, int],
    index: int,
    env: dict[str, str],
) -> Run:
    label = f"{size[0]}x{size[1]}"
    run = Run(name, scenario, label, index)
    tag = f"{name}-{scenario}-{label}-{index}"
    log_path = args.out / f"boot-{tag}.log"
    pid_file = args.out / "comfyui.pid"
    port = free_port()
    with RunPodQueue(max_result_bytes=1 << 31) as queue, log_path.open("wb") as log:
        env = {
            **env,
            **boot_env(args.boot_env, name),
            **queue.env(),
            "APP_DIR": str(checkout),
            "COMFYUI_URL": f"http://127.0.0.1:{port}",
            # An older checkout's start.sh started ComfyUI on COMFYUI_PORT (this one takes the
            # port from COMFYUI_URL, and logs that COMFYUI_PORT is no longer read).
            "COMFYUI_PORT": str(port),
            "COMFYUI_PID_FILE": str(pid_file),
            "COMFYUI_LOG": str(args.out / f"comfyui-{tag}.log"),
        }
        first_id = queue.submit(job_input(size, 1)) if scenario != "warmup" else None
        if args.drop_caches:
            drop_caches()
        elif args.evict_models:
            evict_models(args.models_root)
        t0, t0_wall = time.monotonic(), time.time()
        proc = subprocess.Popen(
            ["bash", str(checkout / "start.sh")], cwd=checkout, env=env, stdout=log, stderr=log
        )
        try:
            if scenario == "answer":
                wait_for(
                    lambda: answered(read_events(log_path, t0_wall), log_path),
                    args.timeout,
                    "ComfyUI answered",
                    proc,
                )
                run.answer_s = round(time.monotonic() - t0, 2)
                first_id = None  # the job that woke the worker is left to the boot's end
            elif first_id is None:
                wait_for(
                    lambda: idle(queue, read_events(log_path, t0_wall), env),
                    args.timeout,
                    "the worker became idle",
                    proc,
                )
                run.marks["idle"] = round(time.monotonic() - t0, 2)
                first_id = queue.submit(job_input(size, 1))
            if first_id is not None:
                time_jobs(args, run, queue, first_id, scenario, size, t0)
            if queue.first_poll_at is not None:
                run.marks["queue_open"] = round(queue.first_poll_at - t0, 2)
        except (BenchError, TimeoutError) as exc:
            run.error = str(exc)
        finally:
            stop_boot(proc, pid_file)
    run.marks.update(read_events(log_path, t0_wall))
    boot_log = log_path.read_text(errors="replace")
    run.comfyui_start_s = run.marks.pop("comfyui_start_s", None) or old_comfyui_start(boot_log)
    if scenario == "answer":
        run.ok = not run.error and run.comfyui_start_s is not None
        if not run.ok and not run.error:
            run.error = "ComfyUI answered, but its start (launch to answer) was not logged"
        check_stack(args, run, boot_log)
        return run
    warm_ok = (run.warm is not None and run.warm.ok) if args.warm_job else True
    run.ok = not run.error and bool(run.first and run.first.ok and warm_ok)
    if not run.ok and not run.error:
        run.error = (run.first.error if run.first else "") or (run.warm.error if run.warm else "")
    check_stack(args, run, boot_log)
    return run


def check_stack(args: argparse.Namespace, run: Run, log: str) -> None:
    """Fail a run whose log shows ComfyUI on another stack than `--stack`."""
    problem = stack_problem(args.stack, log)
    if problem is not None and not run.error:
        run.ok = False
        run.error = f"ComfyUI did not run on the {args.stack} stack: {problem}"


# -- report ----------------------------------------------------------------------------------


def spread(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{min(values):.1f} / {statistics.median(values):.1f} / {max(values):.1f}"


def first_job_target(comfyui_start_s: float, warm_s: float) -> float:
    """The issue's target for a first job that arrives at boot: ComfyUI's start + 1.1 x warm."""
    return comfyui_start_s + FIRST_JOB_TARGET * warm_s


def every_run(runs: list[Run]) -> list[str]:
    """One line per first-job run that has a warm job: its own target, and what it cost beyond
    ComfyUI's start and a warm job ("over warm"), set against the target's 10 % allowance.
    "Over warm" leaves out the spread of ComfyUI's start, which varies by several seconds from
    boot to boot, so runs compare on what the boot and the first job add."""
    rows = [
        r
        for r in runs
        if r.ok
        and r.scenario == "first-job"
        and r.to_first_video_s
        and r.warm is not None
        and r.comfyui_start_s is not None
    ]
    if not rows:
        return []
    lines = [
        "",
        "Every first-job run: over warm = first video - ComfyUI start - warm job; the target is "
        f"met when it is at most the allowance, {FIRST_JOB_TARGET - 1:.1f} x the warm job.",
        "",
        "| boot | size | run | first video | ComfyUI start | warm job | target | over warm "
        "| allowance |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        assert r.to_first_video_s is not None and r.warm is not None  # noqa: S101 - filtered
        assert r.comfyui_start_s is not None  # noqa: S101 - filtered above
        warm = r.warm.e2e_s
        over = r.to_first_video_s - r.comfyui_start_s - warm
        target = first_job_target(r.comfyui_start_s, warm)
        verdict = "met" if r.to_first_video_s <= target else "missed"
        lines.append(
            f"| {r.boot} | {r.size} | {r.index} | {r.to_first_video_s:.1f} "
            f"| {r.comfyui_start_s:.1f} | {warm:.1f} | {target:.1f} {verdict} | {over:.1f} "
            f"| {(FIRST_JOB_TARGET - 1) * warm:.1f} |"
        )
    return lines


def answers(runs: list[Run]) -> list[str]:
    """The `answer` runs: when ComfyUI first answered, and what of that was ComfyUI's own start
    (its launch to its answer, on its own clock) and what came before its launch."""
    groups: dict[tuple[str, str], list[Run]] = {}
    for run in runs:
        if run.scenario == "answer":
            groups.setdefault((run.boot, run.size), []).append(run)
    if not groups:
        return []
    lines = [
        "ComfyUI's first answer (answer runs), seconds, min / median / max: from start.sh's first "
        "line; ComfyUI's start, its launch to its answer; and before its launch, the difference.",
        "",
        "| boot | size | runs ok | ComfyUI answers | ComfyUI start | before its launch "
        "| GPU ready |",
        "|---|---|---|---|---|---|---|",
    ]
    for (boot, size), group in groups.items():
        ok = [r for r in group if r.ok and r.answer_s is not None]
        at = [r.answer_s for r in ok if r.answer_s is not None]
        starts = [r.comfyui_start_s for r in ok if r.comfyui_start_s is not None]
        before = [a - s for a, s in zip(at, starts, strict=True)]
        gpu = [r.marks["gpu_ready"] for r in ok if "gpu_ready" in r.marks]
        lines.append(
            f"| {boot} | {size} | {len(ok)}/{len(group)} | {spread(at)} | {spread(starts)} "
            f"| {spread(before)} | {spread(gpu)} |"
        )
    return lines


def job_tables(timed: list[Run]) -> list[str]:
    """The runs that timed jobs (first-job, warmup): each group's spreads and verdict, every
    first-job run's line, and the jobs' stages."""
    if not timed:
        return []
    lines = [
        "Seconds; with several runs, min / median / max. `first` is start.sh's first line to "
        "the first job's result (first-job), or the job's submission to its result (warmup).",
        "",
        "| boot | scenario | size | runs ok | first | warm job | first / warm | ComfyUI start "
        "| target | queue open | models verified | readahead (MB, done at) | first job's wait "
        "for ComfyUI |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    groups: dict[tuple[str, str, str], list[Run]] = {}
    for run in timed:
        groups.setdefault((run.boot, run.scenario, run.size), []).append(run)
    for (boot, scenario, size), group in groups.items():
        ok = [r for r in group if r.ok and r.first]  # a run with --no-warm-job has no warm
        firsts: list[float] = []
        warms: list[float] = []
        starts: list[float] = []
        paired: list[float] = []  # the first jobs of the runs that have a warm job
        for r in ok:
            assert r.first is not None  # noqa: S101 - filtered above
            first = (r.to_first_video_s if scenario == "first-job" else r.first.e2e_s) or 0.0
            firsts.append(first)
            if r.warm is not None:
                warms.append(r.warm.e2e_s)
                paired.append(first)
                if r.comfyui_start_s is not None:
                    starts.append(r.comfyui_start_s)
        ratios = [f / w for f, w in zip(paired, warms, strict=True) if w]
        all_starts = [r.comfyui_start_s for r in ok if r.comfyui_start_s is not None]
        if scenario == "first-job":
            target = [first_job_target(s, w) for s, w in zip(starts, warms, strict=False)]
            verdict = (
                "met"
                if target and all(f <= t for f, t in zip(paired, target, strict=False))
                else "missed"
                if target
                else "-"
            )
            target_text = f"<= {spread(target)} {verdict}"
        else:
            met = ratios and all(x <= FIRST_JOB_TARGET for x in ratios)
            target_text = f"first/warm <= {FIRST_JOB_TARGET}: {'met' if met else 'missed'}"

        def mark(key: str, runs: list[Run] = ok) -> str:
            return spread([r.marks[key] for r in runs if key in r.marks])

        readahead = spread([r.marks["readahead_mb"] for r in ok if "readahead_mb" in r.marks])
        waits = spread([r.first.wait_ready_s for r in ok if r.first and r.first.wait_ready_s])
        lines.append(
            f"| {boot} | {scenario} | {size} | {len(ok)}/{len(group)} | {spread(firsts)} "
            f"| {spread(warms)} | {spread(ratios)} | {spread(all_starts)} | {target_text} "
            f"| {mark('queue_open')} | {mark('models_verified')} "
            f"| {readahead}, {mark('readahead_done')} | {waits} |"
        )
    lines += every_run(timed)
    lines += ["", "Stages of the first and the warm job (medians, seconds):", ""]
    for (boot, scenario, size), group in groups.items():
        ok = [r for r in group if r.ok and r.first]
        for kind in ("first", "warm"):
            jobs = [job for r in ok if (job := getattr(r, kind)) is not None]
            names = sorted({n for j in jobs for n in j.stages})
            text = ", ".join(
                f"{n} {statistics.median(j.stages.get(n, 0.0) for j in jobs):.1f}" for n in names
            )
            lines.append(f"- {boot} {scenario} {size} {kind}: {text or '-'}")
    return lines


def report(runs: list[Run]) -> str:
    lines = job_tables([r for r in runs if r.scenario != "answer"])
    if answered_runs := answers(runs):
        lines += ([""] if lines else []) + answered_runs
    failed = [r for r in runs if not r.ok]
    if failed:
        lines += ["", "Failed runs:", ""]
        lines += [f"- {r.boot} {r.scenario} {r.size} #{r.index}: {r.error[:300]}" for r in failed]
    return "\n".join(lines) + "\n"


def progress_line(run: Run) -> str:
    """One boot's outcome, printed as soon as it ends."""
    status = "ok" if run.ok else f"FAILED: {run.error[:200]}"
    timed = (
        f"ComfyUI answered at {run.answer_s} s (its start {run.comfyui_start_s} s)"
        if run.scenario == "answer"
        else f"first {run.to_first_video_s} s"
    )
    return f"{run.boot} {run.scenario} {run.size} #{run.index}: {timed}, {status}"


def save(out: Path, meta: dict[str, Any], runs: list[Run]) -> str:
    data = {**meta, "runs": [asdict(r) for r in runs]}
    (out / "bench_boot.json").write_text(json.dumps(data, indent=2), encoding="utf-8")
    text = report(runs)
    (out / "bench_boot.md").write_text(text, encoding="utf-8")
    return text


# -- command line ----------------------------------------------------------------------------


def parse_boot(text: str) -> tuple[str, Path]:
    name, _, path = text.partition("=")
    checkout = Path(path).resolve()
    if not name or not (checkout / "start.sh").is_file():
        raise argparse.ArgumentTypeError(f"--boot {text!r}: want NAME=PATH to a checkout")
    return name, checkout


def parse_boot_env(text: str) -> tuple[str, str, str]:
    name, _, setting = text.partition(":")
    key, equals, value = setting.partition("=")
    if not name or not key or not equals:
        raise argparse.ArgumentTypeError(
            f"--boot-env {text!r}: want NAME:KEY=VALUE, e.g. new0:READAHEAD_BEFORE_ANSWER_MB=0"
        )
    return name, key, value


def parse_size(text: str) -> tuple[int, int]:
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise argparse.ArgumentTypeError(f"size {text!r} must be WIDTHxHEIGHT, e.g. 720x1280")
    return int(parts[0]), int(parts[1])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--boot",
        type=parse_boot,
        action="append",
        required=True,
        metavar="NAME=PATH",
        help="a checkout to boot (repeatable, in order)",
    )
    parser.add_argument("--comfyui-dir", type=Path, required=True, help="folder with main.py")
    parser.add_argument("--comfyui-python", default=sys.executable, help="Python for ComfyUI")
    parser.add_argument("--python", default=sys.executable, help="Python for the handler")
    parser.add_argument("--models-root", type=Path, required=True)
    parser.add_argument(
        "--weights",
        choices=("full", "tiny", "none"),
        default="full",
        help="write missing synthetic weights of this size (none: as they are)",
    )
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--sizes",
        type=lambda s: [parse_size(x) for x in s.split(",")],
        default=[(720, 1280), (480, 832)],
    )
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--runs", type=int, default=1, help="runs of each boot/scenario/size")
    parser.add_argument("--frames", type=int, default=None, help="override the 81 frames")
    parser.add_argument(
        "--no-warm-job",
        dest="warm_job",
        action="store_false",
        help="skip the warm job after the first (its time then comes from another run)",
    )
    parser.add_argument("--drop-caches", action="store_true", help="before each boot (root)")
    parser.add_argument(
        "--no-prime",
        dest="prime",
        action="store_false",
        help="skip compiling ComfyUI's and the boots' bytecode and the first GPU use before the "
        "boots (prime_host); a fresh host's first boot then pays them",
    )
    parser.add_argument(
        "--evict-models",
        action="store_true",
        help="before each boot, drop only the model files from the page cache (no root needed)",
    )
    parser.add_argument("--attention", default="sage", choices=("sage", "sdpa"))
    parser.add_argument("--extra-comfyui-args", default="", help="COMFYUI_EXTRA_ARGS, e.g. --cpu")
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="more environment for every boot (repeatable)",
    )
    parser.add_argument(
        "--boot-env",
        type=parse_boot_env,
        action="append",
        default=[],
        metavar="NAME:KEY=VALUE",
        help="more environment for the boot NAME alone, over --env (repeatable)",
    )
    parser.add_argument(
        "--stack",
        choices=sorted(STACKS),
        default="image",
        help="image: ComfyUI as the image's torch makes it run, through the launcher; host: "
        "the host's own stack (see scripts/bench_gpu.py)",
    )
    parser.add_argument("--skip-gpu-check", action="store_true", help="SKIP_GPU_CHECK=1 (CPU)")
    parser.add_argument(
        "--vram-budget-mib",
        type=int,
        default=0,
        help="hold GPU memory to this budget (32607: an RTX 5090); 0: no hold",
    )
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per wait")
    args = parser.parse_args(argv)
    args.scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = [s for s in args.scenarios if s not in SCENARIOS]
    if unknown:
        parser.error(f"--scenarios: unknown {unknown}; use {', '.join(SCENARIOS)}")
    names = [name for name, _path in args.boot]
    if len(set(names)) != len(names):
        parser.error(f"--boot: each boot needs a name of its own (got {', '.join(names)})")
    strangers = sorted({name for name, _k, _v in args.boot_env if name not in names})
    if strangers:
        parser.error(f"--boot-env: no --boot is named {', '.join(strangers)}")
    if not (args.comfyui_dir / "main.py").is_file():
        parser.error(f"--comfyui-dir {args.comfyui_dir} has no main.py")
    args.out = args.out.resolve()
    args.models_root = args.models_root.resolve()
    args.comfyui_dir = args.comfyui_dir.resolve()
    return args


def run(args: argparse.Namespace) -> str:
    args.out.mkdir(parents=True, exist_ok=True)
    meta: dict[str, Any] = {
        "command": sys.argv,
        "boots": {n: str(p) for n, p in args.boot},
        "stack": args.stack,
    }
    if args.weights != "none":
        meta["weights_s"] = ensure_weights(
            args.comfyui_python, args.weights, args.models_root, args.comfyui_dir, args.out
        )
    manifest = bench_manifest(args.models_root, args.comfyui_dir, args.out)
    env = base_env(args, manifest, workflow_with_frames(args.out, args.frames))
    meta["env"] = {k: v for k, v in env.items() if k not in ("PATH", "HOME")}
    for _name, checkout in args.boot:
        prepare_markers(checkout, env, args.out / "prepare.log")
    if args.prime:
        meta["prime"] = prime_host(
            args.comfyui_python,
            args.python,
            args.comfyui_dir,
            [checkout for _name, checkout in args.boot],
            gpu=not args.skip_gpu_check,
            log=args.out / "prime.log",
        )
    ballast = (
        VramBallast(args.comfyui_python, args.vram_budget_mib) if args.vram_budget_mib else None
    )
    runs: list[Run] = []
    try:
        if ballast is not None:
            meta["ballast"] = ballast.start()
        for index in range(1, args.runs + 1):
            for scenario in args.scenarios:
                for size in args.sizes:
                    for name, checkout in args.boot:  # interleaved: the same conditions
                        run_ = run_boot(args, name, checkout, scenario, size, index, env)
                        runs.append(run_)
                        print(progress_line(run_), flush=True)
                        save(args.out, meta, runs)
    finally:
        if ballast is not None:
            ballast.stop()
    return save(args.out, meta, runs)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        print(run(args))
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"command: {shlex.join(sys.argv)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
