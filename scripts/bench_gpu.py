"""Time the fixed workflow on a GPU with full-size synthetic weights: SageAttention vs SDPA.

For every size and attention mode it starts a fresh ComfyUI, runs the project's workflow
through the worker's own handler (``wan_worker.handler.handle``) and records:

* the wall time of every stage, as the handler reports it (``timings.stages``);
* seconds per sampling step, from the handler's progress events (a sampler's mean time
  between consecutive steps; see ``analyse``), and the part of each sampler stage that is not
  steps (moving the expert to the GPU, the LoRA patches, first-use setup);
* peak GPU memory of ComfyUI's process, read with ``nvidia-smi`` while the job runs;
* whole-job time, and which stage outside the transformer takes the largest share of it.

The first job on a fresh server is "cold" (models read from disk, first-use compilation); the
next ones are "warm": a new seed and a new prompt on the same server, as a busy worker sees.

GPU memory is held to a budget (``--vram-budget-mib``, default the RTX 5090's 32607 MiB) by a
helper process that allocates the rest of the card before ComfyUI starts, so ComfyUI sees the
free memory of a 5090 and any allocation past the budget fails as it would there.

Missing model files are written first with ``scripts/make_synthetic_weights.py`` (one process
per file, in parallel); files already complete are kept. Results go to ``--out``:
``bench_gpu.json`` (every number and event), ``bench_gpu.md`` (the tables) and one ComfyUI log
per configuration. Run from the project root, with the Python environment that runs ComfyUI::

    python scripts/bench_gpu.py --comfyui-dir COMFYUI --models-root MODELS --out OUT

``--weights tiny --sizes 128x128 --frames 9 --vram-budget-mib 0 --extra-comfyui-args=--cpu``
is a dry run of the same path on a CPU. torch is never imported by this script; ComfyUI and the
memory-holding helper are separate processes.
"""

from __future__ import annotations

import argparse
import base64
import io
import itertools
import json
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

SYNTH_SCRIPT = REPO_ROOT / "scripts" / "make_synthetic_weights.py"
MODEL_PATHS = REPO_ROOT / "extra_model_paths.yaml"
MANIFEST = REPO_ROOT / "workflows" / "models.json"
DEFAULT_COMFYUI_ARGS = "--fast fp16_accumulation --preview-method none --disable-auto-launch"
RTX_5090_MIB = 32607  # what nvidia-smi reports as the RTX 5090's total memory
SAMPLER_STAGES = ("sample_high_noise", "sample_low_noise")
STAGE_ORDER = (
    "load_models",
    "text_encode",
    "image_encode",
    "sample_high_noise",
    "sample_low_noise",
    "vae_decode",
    "interpolate",
    "encode_mp4",
)
STEP_RATIO_TARGET = 0.8  # SageAttention's step at most 0.8 x SDPA's
STAGE_SHARE_TARGET = 0.15  # no stage outside the transformer above 15% of the job
PROMPTS = (
    "A person turns to the camera and smiles, natural motion, cinematic lighting.",
    "Waves roll onto a rocky shore at sunset, spray in the wind, slow camera pan.",
    "A cat jumps onto a windowsill and looks outside, soft morning light.",
)

# The helper that holds GPU memory: it allocates everything above the budget, reports, and
# keeps the allocation until its stdin closes (when the benchmark ends, however it ends).
BALLAST_CODE = """
import sys
import torch

budget = int(sys.argv[1]) * 2**20
free, total = torch.cuda.mem_get_info()
hold = max(0, free - budget)
block = torch.empty(hold, dtype=torch.uint8, device="cuda") if hold else None
free_after, _ = torch.cuda.mem_get_info()
print(f"READY {hold} {free_after} {total}", flush=True)
sys.stdin.read()
"""


class BenchError(Exception):
    """A setup problem the user can fix; printed as one line, exit status 2."""


# --------------------------------------------------------------------------------------------
# Pure helpers (tested without a GPU)
# --------------------------------------------------------------------------------------------


def parse_size(text: str) -> tuple[int, int]:
    """``"720x1280"`` -> (width 720, height 1280)."""
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise argparse.ArgumentTypeError(f"size {text!r} must be WIDTHxHEIGHT, e.g. 720x1280")
    return int(parts[0]), int(parts[1])


def split_manifest(manifest: dict[str, Any], folder: Path) -> list[Path]:
    """One manifest file per model, so each model can be written by its own process."""
    paths = []
    for index, entry in enumerate(manifest["models"]):
        path = folder / f"manifest-{index}.json"
        path.write_text(json.dumps({"models": [entry]}), encoding="utf-8")
        paths.append(path)
    return paths


@dataclass(frozen=True)
class ProgressEvent:
    t: float  # seconds since the job was handed to the handler
    stage: str
    step: int
    total: int


def step_times(events: list[ProgressEvent], stage: str) -> tuple[list[float], float | None]:
    """Intervals between consecutive steps of ``stage``, and the time to its first step.

    The first step is counted from the moment the sampler node started, so it includes moving
    the model to the GPU; the intervals are the steady per-step cost.
    """
    start = next((e.t for e in events if e.stage == stage and e.step == 0), None)
    steps: dict[int, float] = {}
    for event in events:
        if event.stage == stage and event.step > 0:
            steps.setdefault(event.step, event.t)
    ordered = sorted(steps.items())
    intervals = [round(b[1] - a[1], 3) for a, b in itertools.pairwise(ordered) if b[0] == a[0] + 1]
    first = round(ordered[0][1] - start, 3) if ordered and start is not None else None
    return intervals, first


def job_breakdown(
    stages: dict[str, float], total_s: float, step_s: dict[str, float], steps: dict[str, int]
) -> dict[str, float]:
    """Seconds per part of a job, with each sampler split into its steps and its setup.

    ``other`` is what the handler spends outside the workflow's timed nodes (upload, small
    nodes, download, the video check).
    """
    parts: dict[str, float] = {}
    for stage in STAGE_ORDER:
        seconds = stages.get(stage)
        if seconds is None:
            continue
        if stage in SAMPLER_STAGES and stage in step_s:
            transformer = step_s[stage] * steps.get(stage, 0)
            parts[f"{stage}.steps"] = round(transformer, 3)
            parts[f"{stage}.setup"] = round(max(0.0, seconds - transformer), 3)
        else:
            parts[stage] = round(seconds, 3)
    parts["other"] = round(max(0.0, total_s - sum(stages.values())), 3)
    return parts


def worst_outside_transformer(parts: dict[str, float], total_s: float) -> tuple[str, float]:
    """The part outside the sampling steps with the largest share of the job."""
    outside = {k: v for k, v in parts.items() if not k.endswith(".steps")}
    if not outside or total_s <= 0:
        return "", 0.0
    name = max(outside, key=lambda k: outside[k])
    return name, round(outside[name] / total_s, 4)


# --------------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------------


@dataclass
class JobRecord:
    size: str
    attention: str
    kind: str  # cold or warm
    ok: bool = False
    error: str = ""
    total_s: float = 0.0
    inference_s: float = 0.0
    handler: dict[str, float] = field(default_factory=dict)
    stages: dict[str, float] = field(default_factory=dict)
    events: list[ProgressEvent] = field(default_factory=list)
    step_intervals: dict[str, list[float]] = field(default_factory=dict)
    first_step_s: dict[str, float | None] = field(default_factory=dict)
    s_per_step: float | None = None
    parts: dict[str, float] = field(default_factory=dict)
    worst_part: str = ""
    worst_share: float = 0.0
    peak_vram_mib: int | None = None
    frames: int | None = None
    video_bytes: int | None = None
    attention_used: str = ""


@dataclass
class ConfigRecord:
    size: str
    attention: str
    comfyui_start_s: float = 0.0
    idle_vram_mib: int | None = None
    peak_vram_mib: int | None = None
    jobs: list[JobRecord] = field(default_factory=list)
    log: str = ""


# --------------------------------------------------------------------------------------------
# GPU memory: a sampler and a budget holder
# --------------------------------------------------------------------------------------------


class GpuMemorySampler:
    """``nvidia-smi`` device memory in use, every ``interval_ms``, stamped with our clock."""

    def __init__(self, interval_ms: int = 200) -> None:
        self.samples: list[tuple[float, int]] = []
        self.proc: subprocess.Popen[str] | None = None
        self.interval_ms = interval_ms
        self.thread: threading.Thread | None = None

    def start(self) -> bool:
        if shutil.which("nvidia-smi") is None:
            return False
        self.proc = subprocess.Popen(
            [
                "nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits",
                f"--loop-ms={self.interval_ms}", "-i", "0",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )  # fmt: skip
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()
        return True

    def _read(self) -> None:
        stdout = self.proc.stdout if self.proc is not None else None
        if stdout is None:
            return
        for line in stdout:
            text = line.strip()
            if text.isdigit():
                self.samples.append((time.monotonic(), int(text)))

    def now(self) -> int | None:
        """A fresh reading (one nvidia-smi call), independent of the sampling thread."""
        if shutil.which("nvidia-smi") is None:
            return None
        done = subprocess.run(
            ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits", "-i", "0"],
            capture_output=True,
            text=True,
            check=False,
        )
        text = done.stdout.strip()
        return int(text) if text.isdigit() else None

    def peak(self, start: float, end: float) -> int | None:
        values = [v for t, v in self.samples if start <= t <= end]
        return max(values) if values else None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


class VramBallast:
    """A process holding all GPU memory above ``budget_mib`` until the benchmark ends."""

    def __init__(self, python: str, budget_mib: int) -> None:
        self.python = python
        self.budget_mib = budget_mib
        self.proc: subprocess.Popen[str] | None = None
        self.info: dict[str, int] = {}

    def start(self) -> dict[str, int]:
        self.proc = subprocess.Popen(
            [self.python, "-c", BALLAST_CODE, str(self.budget_mib)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        line = self.proc.stdout.readline() if self.proc.stdout is not None else ""
        if not line.startswith("READY "):
            self.stop()
            raise BenchError(
                f"the helper that holds GPU memory above --vram-budget-mib failed ({line!r}); "
                "pass --vram-budget-mib 0 to run without a budget"
            )
        held, free_after, total = (int(x) for x in line.split()[1:])
        self.info = {
            "held_mib": held >> 20,
            "free_after_mib": free_after >> 20,
            "total_mib": total >> 20,
        }
        return self.info

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# --------------------------------------------------------------------------------------------
# ComfyUI
# --------------------------------------------------------------------------------------------


class ComfyServer:
    """A fresh ComfyUI process for one configuration, with its own log and PID file."""

    def __init__(
        self,
        python: str,
        comfyui_dir: Path,
        port: int,
        args: list[str],
        models_root: Path,
        log_path: Path,
        pid_file: Path,
    ) -> None:
        self.python = python
        self.comfyui_dir = comfyui_dir
        self.port = port
        self.args = args
        self.models_root = models_root
        self.log_path = log_path
        self.pid_file = pid_file
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_handle: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [
            self.python, "-u", "main.py", "--listen", "127.0.0.1", "--port", str(self.port),
            "--extra-model-paths-config", str(MODEL_PATHS), *self.args,
        ]  # fmt: skip

    def start(self) -> None:
        env = dict(os.environ, MODELS_ROOT=str(self.models_root), PYTHONUNBUFFERED="1")
        self.log_handle = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            self.command(),
            cwd=self.comfyui_dir,
            stdout=self.log_handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
        self.pid_file.write_text(str(self.proc.pid), encoding="ascii")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.log_handle is not None:
            self.log_handle.close()
        self.pid_file.unlink(missing_ok=True)


# --------------------------------------------------------------------------------------------
# Jobs through the handler
# --------------------------------------------------------------------------------------------


def start_image_b64(width: int, height: int) -> str:
    """A PNG with gradients and a pattern, so the encoded start frame is not flat."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (width, height))
    draw = ImageDraw.Draw(image)
    for y in range(height):
        draw.line([(0, y), (width, y)], fill=(y * 255 // height, 90, 255 - y * 255 // height))
    for x in range(0, width, 32):
        draw.ellipse([x, height // 3, x + 24, height // 3 + 24], fill=(255, x * 255 // width, 0))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


class ProgressLog:
    """The handler's progress sender: keeps every update with the time it arrived."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.events: list[ProgressEvent] = []

    def reset(self) -> None:
        self.t0 = time.monotonic()
        self.events = []

    def __call__(self, job: dict[str, Any], payload: dict[str, Any]) -> None:
        self.events.append(
            ProgressEvent(
                round(time.monotonic() - self.t0, 3),
                str(payload.get("stage")),
                int(payload.get("step") or 0),
                int(payload.get("total") or 0),
            )
        )


def analyse(record: JobRecord) -> None:
    """Derive the step times and the job's breakdown from its progress events and stages.

    ComfyUI sends a step's progress when the sampler's Python loop has queued that step, not
    when the GPU has finished it, so two consecutive intervals can differ by seconds while their
    sum is right. A sampler's seconds per step is therefore the mean of its intervals: the time
    from its first to its last step event over the steps in between.
    """
    step_s: dict[str, float] = {}
    steps: dict[str, int] = {}
    for stage in SAMPLER_STAGES:
        intervals, first = step_times(record.events, stage)
        record.step_intervals[stage] = intervals
        record.first_step_s[stage] = first
        totals = [e.total for e in record.events if e.stage == stage and e.total]
        steps[stage] = max(totals) if totals else 0
        if intervals:
            step_s[stage] = statistics.fmean(intervals)
    record.s_per_step = round(statistics.fmean(step_s.values()), 3) if step_s else None
    if record.ok:
        record.parts = job_breakdown(record.stages, record.total_s, step_s, steps)
        record.worst_part, record.worst_share = worst_outside_transformer(
            record.parts, record.total_s
        )


def run_job(
    worker: Any,
    progress: ProgressLog,
    record: JobRecord,
    job: dict[str, Any],
    gpu: GpuMemorySampler | None,
    baseline_mib: int | None,
) -> JobRecord:
    from wan_worker.handler import handle

    progress.reset()
    started = time.monotonic()
    result = handle(job, worker)
    ended = time.monotonic()
    record.events = list(progress.events)
    if "error" in result:
        record.error = str(result.get("error"))
    else:
        record.ok = True
        timings = result["timings"]
        record.total_s = float(timings["total_s"])
        record.inference_s = float(timings["inference_s"])
        record.stages = {k: float(v) for k, v in timings["stages"].items()}
        record.handler = {k: float(v) for k, v in timings.items() if isinstance(v, int | float)}
        record.frames = int(result["frames"])
        record.video_bytes = int(result["bytes"])
        record.attention_used = str(result["attention"])
    analyse(record)
    if gpu is not None:
        peak = gpu.peak(started, ended)
        record.peak_vram_mib = peak - baseline_mib if peak and baseline_mib is not None else peak
    return record


def make_worker(server: ComfyServer, attention: str, workflow: Path, progress: ProgressLog) -> Any:
    from wan_worker.comfy.client import ComfyClient
    from wan_worker.comfy.process import ComfyProcess
    from wan_worker.handler import Worker
    from wan_worker.settings import Settings
    from wan_worker.workflow import load_template

    settings = Settings(
        comfyui_url=server.url,
        comfyui_dir=server.comfyui_dir,
        comfyui_pid_file=server.pid_file,
        comfyui_log=server.log_path,
        workflow_path=workflow,
        attention=attention,
        attention_fallback=False,  # time the mode asked for; a black video is an error here
        ready_timeout_s=600.0,
        job_timeout_s=1800.0,
        max_base64_bytes=1 << 31,
    )
    return Worker(
        settings=settings,
        template=load_template(workflow),
        client=ComfyClient(server.url, ComfyProcess(server.pid_file, server.log_path)),
        send_progress=progress,
    )


def workflow_with_frames(out: Path, frames: int | None) -> Path:
    """The project's workflow, or a copy with another frame count (for quick dry runs)."""
    from wan_worker.settings import DEFAULT_WORKFLOW
    from wan_worker.workflow import FRAMES_NODE

    if frames is None:
        return DEFAULT_WORKFLOW
    graph = json.loads(DEFAULT_WORKFLOW.read_text(encoding="utf-8"))
    graph[FRAMES_NODE]["inputs"]["value"] = frames
    path = out / "workflow_frames.json"
    path.write_text(json.dumps(graph), encoding="utf-8")
    return path


def run_config(
    args: argparse.Namespace,
    size: tuple[int, int],
    attention: str,
    workflow: Path,
    gpu: GpuMemorySampler | None,
) -> ConfigRecord:
    width, height = size
    label = f"{width}x{height}"
    record = ConfigRecord(label, attention, log=f"comfyui-{label}-{attention}.log")
    server = ComfyServer(
        args.python,
        args.comfyui_dir,
        args.port,
        shlex.split(args.comfyui_args) + shlex.split(args.extra_comfyui_args),
        args.models_root,
        args.out / record.log,
        args.out / "comfyui.pid",
    )
    baseline = gpu.now() if gpu is not None else None
    progress = ProgressLog()
    started = time.monotonic()
    server.start()
    try:
        worker = make_worker(server, attention, workflow, progress)
        worker.client.wait_ready(args.ready_timeout)
        record.comfyui_start_s = round(time.monotonic() - started, 3)
        if gpu is not None and baseline is not None:
            idle = gpu.now()
            record.idle_vram_mib = idle - baseline if idle is not None else None
        image = start_image_b64(width, height)
        for index in range(args.jobs):
            kind = "cold" if index == 0 else "warm"
            job = {
                "id": f"bench-{label}-{attention}-{index}",
                "input": {
                    "start_image": image,
                    "prompt": PROMPTS[index % len(PROMPTS)],
                    "seed": 1000 + index,
                    "width": width,
                    "height": height,
                },
            }
            job_record = run_job(
                worker, progress, JobRecord(label, attention, kind), job, gpu, baseline
            )
            record.jobs.append(job_record)
            print(format_job(job_record), flush=True)
            if not job_record.ok and not server_alive(server):
                break
        if gpu is not None:
            peak = gpu.peak(started, time.monotonic())
            record.peak_vram_mib = peak - baseline if peak and baseline is not None else peak
    finally:
        server.stop()
    return record


def server_alive(server: ComfyServer) -> bool:
    return server.proc is not None and server.proc.poll() is None


# --------------------------------------------------------------------------------------------
# Weights
# --------------------------------------------------------------------------------------------


def ensure_weights(args: argparse.Namespace) -> float:
    """Write missing synthetic model files, one process per file; return the seconds taken."""
    started = time.monotonic()
    manifest = json.loads(MANIFEST.read_text(encoding="utf-8"))
    log_path = args.out / "weights.log"
    with tempfile.TemporaryDirectory() as tmp, log_path.open("ab") as log:
        procs = []
        for path in split_manifest(manifest, Path(tmp)):
            command = [
                args.python, str(SYNTH_SCRIPT), "--size", args.weights,
                "--models-root", str(args.models_root), "--comfyui-dir", str(args.comfyui_dir),
                "--manifest", str(path),
            ]  # fmt: skip
            procs.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT))
        failed = [p.args for p in procs if p.wait() != 0]
    if failed:
        raise BenchError(f"writing synthetic weights failed; see {log_path}")
    return round(time.monotonic() - started, 1)


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def format_job(job: JobRecord) -> str:
    if not job.ok:
        return f"{job.size} {job.attention} {job.kind}: FAILED: {job.error[:300]}"
    return (
        f"{job.size} {job.attention} {job.kind}: {job.total_s:.1f} s, "
        f"{job.s_per_step} s/step, peak {job.peak_vram_mib} MiB, "
        f"largest outside the steps: {job.worst_part} {job.worst_share:.0%}"
    )


def verdicts(configs: list[ConfigRecord], budget_mib: int) -> dict[str, Any]:
    """The three targets: SageAttention's step at most 0.8 x SDPA's, no part of a job outside
    the sampling steps above 15% of it, and every job done within the memory budget."""
    out: dict[str, Any] = {"step_ratio": {}, "stage_share": {}, "vram": {}}
    steps: dict[tuple[str, str], list[float]] = {}
    samplers: dict[tuple[str, str], list[float]] = {}
    for config in configs:
        for job in config.jobs:
            key = (config.size, config.attention)
            if job.s_per_step is not None:
                steps.setdefault(key, []).append(job.s_per_step)
            if job.ok:
                seconds = sum(job.stages.get(stage, 0.0) for stage in SAMPLER_STAGES)
                samplers.setdefault(key, []).append(seconds)
            if job.ok:
                out["stage_share"][f"{config.size} {config.attention} {job.kind}"] = {
                    "worst": job.worst_part,
                    "share": job.worst_share,
                    "pass": job.worst_share <= STAGE_SHARE_TARGET,
                }
        failed = [job.error for job in config.jobs if not job.ok]
        peak = config.peak_vram_mib
        out["vram"][f"{config.size} {config.attention}"] = {
            "peak_mib": peak,
            "budget_mib": budget_mib,
            "errors": failed,
            "pass": not failed and (budget_mib == 0 or (peak is not None and peak <= budget_mib)),
        }
    for size in sorted({c.size for c in configs}):
        sage, sdpa = steps.get((size, "sage")), steps.get((size, "sdpa"))
        if sage and sdpa:
            ratio = statistics.fmean(sage) / statistics.fmean(sdpa)
            # A second measure, free of the progress events' timing: both sampler stages
            # whole, their setup (moving the expert to the GPU, the LoRA) included.
            stage_sage, stage_sdpa = samplers.get((size, "sage")), samplers.get((size, "sdpa"))
            stage_ratio = (
                round(statistics.fmean(stage_sage) / statistics.fmean(stage_sdpa), 3)
                if stage_sage and stage_sdpa
                else None
            )
            out["step_ratio"][size] = {
                "sage_s": round(statistics.fmean(sage), 3),
                "sdpa_s": round(statistics.fmean(sdpa), 3),
                "ratio": round(ratio, 3),
                "sampler_stages_ratio": stage_ratio,
                "pass": ratio <= STEP_RATIO_TARGET,
            }
    return out


def markdown(configs: list[ConfigRecord], verdict: dict[str, Any]) -> str:
    cols = [
        "load_models",
        "text_encode", "image_encode", "sample_high_noise.setup", "sample_low_noise.setup",
        "vae_decode", "interpolate", "encode_mp4", "other",
    ]  # fmt: skip
    lines = [
        "| size | attention | job | job s | s/step | steps s | "
        + " | ".join(c.replace("sample_", "").replace(".setup", " setup") for c in cols)
        + " | largest outside steps | peak MiB |",
        "|" + "---|" * (9 + len(cols)),
    ]
    for config in configs:
        for job in config.jobs:
            if not job.ok:
                lines.append(
                    f"| {job.size} | {job.attention} | {job.kind} | failed: "
                    f"{job.error[:120]} |" + " |" * (8 + len(cols))
                )
                continue
            steps_s = sum(v for k, v in job.parts.items() if k.endswith(".steps"))
            cells = [f"{job.parts.get(c, 0.0):.1f}" for c in cols]
            lines.append(
                f"| {job.size} | {job.attention} | {job.kind} | {job.total_s:.1f} | "
                f"{job.s_per_step} | {steps_s:.1f} | " + " | ".join(cells) + " | "
                f"{job.worst_part} {job.worst_share:.0%} | {job.peak_vram_mib} |"
            )
    lines += [
        "",
        "| size | SageAttention s/step | SDPA s/step | ratio | sampler stages ratio "
        "| target <= 0.8 |",
        "|---|---|---|---|---|---|",
    ]
    for size, v in verdict["step_ratio"].items():
        ok = "met" if v["pass"] else "missed"
        lines.append(
            f"| {size} | {v['sage_s']} | {v['sdpa_s']} | {v['ratio']} | "
            f"{v['sampler_stages_ratio']} | {ok} |"
        )
    lines += ["", "| config | ComfyUI start s | idle MiB | peak MiB | budget MiB | fits |"]
    lines.append("|---|---|---|---|---|---|")
    for config in configs:
        v = verdict["vram"][f"{config.size} {config.attention}"]
        lines.append(
            f"| {config.size} {config.attention} | {config.comfyui_start_s} | "
            f"{config.idle_vram_mib} | {v['peak_mib']} | {v['budget_mib']} | "
            f"{'yes' if v['pass'] else 'no'} |"
        )
    return "\n".join(lines) + "\n"


def environment(args: argparse.Namespace) -> dict[str, Any]:
    """Versions, read without touching the GPU from this process."""
    probe = (
        "import json, importlib.util, torch; s = importlib.util.find_spec('sageattention'); "
        "print(json.dumps({'torch': torch.__version__, 'cuda': torch.version.cuda, "
        "'sageattention': s.origin if s else None}))"
    )
    done = subprocess.run([args.python, "-c", probe], capture_output=True, text=True, check=False)
    env: dict[str, Any] = json.loads(done.stdout) if done.returncode == 0 else {}
    if shutil.which("nvidia-smi"):
        query = "--query-gpu=name,driver_version,memory.total"
        smi = subprocess.run(
            ["nvidia-smi", query, "--format=csv,noheader", "-i", "0"],
            capture_output=True,
            text=True,
            check=False,
        )
        env["gpu"] = smi.stdout.strip()
    env["python"] = sys.version.split()[0]
    env["comfyui_args"] = args.comfyui_args
    env["extra_comfyui_args"] = args.extra_comfyui_args
    return env


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--comfyui-dir", type=Path, help="folder with main.py (required)")
    parser.add_argument("--models-root", type=Path, help="synthetic models folder (required)")
    parser.add_argument("--out", type=Path, required=True, help="folder for results and logs")
    parser.add_argument(
        "--from-json",
        type=Path,
        help="rebuild the tables and verdicts from a saved bench_gpu.json, without running",
    )
    parser.add_argument(
        "--sizes",
        type=lambda s: [parse_size(x) for x in s.split(",")],
        default=[(720, 1280), (480, 832)],
        help="comma-separated WIDTHxHEIGHT list (720x1280,480x832)",
    )
    parser.add_argument("--attention", default="sage,sdpa", help="modes in order (sage,sdpa)")
    parser.add_argument("--jobs", type=int, default=2, help="jobs per server: 1 cold + warm ones")
    parser.add_argument("--weights", choices=("full", "tiny"), default="full")
    parser.add_argument("--frames", type=int, default=None, help="override the 81 frames")
    parser.add_argument(
        "--vram-budget-mib",
        type=int,
        default=RTX_5090_MIB,
        help="GPU memory left to ComfyUI (0: no budget, no memory readings)",
    )
    parser.add_argument("--comfyui-args", default=DEFAULT_COMFYUI_ARGS)
    parser.add_argument("--extra-comfyui-args", default="", help="appended to --comfyui-args")
    parser.add_argument("--python", default=sys.executable, help="Python that runs ComfyUI")
    parser.add_argument("--port", type=int, default=8188)
    parser.add_argument("--ready-timeout", type=float, default=600.0)
    args = parser.parse_args(argv)
    args.attention = [a.strip() for a in args.attention.split(",") if a.strip()]
    unknown = [a for a in args.attention if a not in ("sage", "sdpa")]
    if unknown:
        parser.error(f"--attention: unknown mode(s) {unknown}; use sage and/or sdpa")
    args.out = args.out.resolve()
    if args.from_json is not None:
        if not args.from_json.is_file():
            parser.error(f"--from-json {args.from_json} does not exist")
        return args
    if args.comfyui_dir is None or args.models_root is None:
        parser.error("--comfyui-dir and --models-root are required (unless --from-json)")
    if not (args.comfyui_dir / "main.py").is_file():
        parser.error(f"--comfyui-dir {args.comfyui_dir} has no main.py")
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    args.comfyui_dir = args.comfyui_dir.resolve()
    args.models_root = args.models_root.resolve()
    return args


def run(args: argparse.Namespace) -> dict[str, Any]:
    args.out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"command": sys.argv, "environment": environment(args)}
    report["vram_budget_mib"] = args.vram_budget_mib
    report["weights_s"] = ensure_weights(args)
    print(f"weights ready in {report['weights_s']} s", flush=True)
    workflow = workflow_with_frames(args.out, args.frames)
    gpu = GpuMemorySampler() if args.vram_budget_mib > 0 else None
    ballast = VramBallast(args.python, args.vram_budget_mib) if gpu is not None else None
    configs: list[ConfigRecord] = []
    try:
        if ballast is not None and gpu is not None:
            report["ballast"] = ballast.start()
            print(f"GPU memory held above the budget: {report['ballast']}", flush=True)
            gpu.start()
        for size in args.sizes:
            for attention in args.attention:
                configs.append(run_config(args, size, attention, workflow, gpu))
                save(args.out, report, configs, args.vram_budget_mib)
    finally:
        if gpu is not None:
            gpu.stop()
        if ballast is not None:
            ballast.stop()
    return save(args.out, report, configs, args.vram_budget_mib)


def save(out: Path, report: dict[str, Any], configs: list[ConfigRecord], budget: int) -> dict:
    verdict = verdicts(configs, budget)
    out.mkdir(parents=True, exist_ok=True)
    report["configs"] = [asdict(c) for c in configs]
    report["verdicts"] = verdict
    (out / "bench_gpu.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
    (out / "bench_gpu.md").write_text(markdown(configs, verdict), encoding="utf-8")
    return report


def load_report(path: Path) -> tuple[dict[str, Any], list[ConfigRecord]]:
    """A saved report, with every job's derived numbers computed again from its events."""
    report = json.loads(path.read_text(encoding="utf-8"))
    configs = []
    for raw in report.get("configs", []):
        jobs = []
        for job in raw.get("jobs", []):
            record = JobRecord(**{**job, "events": [ProgressEvent(**e) for e in job["events"]]})
            analyse(record)
            jobs.append(record)
        configs.append(ConfigRecord(**{**raw, "jobs": jobs}))
    return report, configs


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.from_json is not None:
        report, configs = load_report(args.from_json)
        save(args.out, report, configs, int(report.get("vram_budget_mib", args.vram_budget_mib)))
        print((args.out / "bench_gpu.md").read_text(encoding="utf-8"))
        return 0
    try:
        run(args)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print((args.out / "bench_gpu.md").read_text(encoding="utf-8"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
