"""Jobs through the worker's own handler (`wan_worker.handler.handle`), one configuration
(size and attention mode) at a time on a fresh ComfyUI: a cold job, then warm ones with a new
seed and prompt, as a busy worker sees them."""

from __future__ import annotations

import argparse
import base64
import io
import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scripts.gpu_bench import BenchError
from scripts.gpu_bench.analysis import ConfigRecord, JobRecord, ProgressEvent, analyse
from scripts.gpu_bench.comfyui import (
    TRITON_BACKEND_FLAG,
    ComfyServer,
    comfyui_args,
    conv3d_state,
    kitchen_backends,
    stack_problem,
)
from scripts.gpu_bench.memory import GpuMemorySampler
from scripts.gpu_bench.report import format_job

PROMPTS = (
    "A person turns to the camera and smiles, natural motion, cinematic lighting.",
    "Waves roll onto a rocky shore at sunset, spray in the wind, slow camera pan.",
    "A cat jumps onto a windowsill and looks outside, soft morning light.",
)


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


def run_job(
    worker: Any,
    progress: ProgressLog,
    record: JobRecord,
    job: dict[str, Any],
    gpu: GpuMemorySampler | None,
    baseline_mib: int | None,
    video_path: Path | None = None,
) -> JobRecord:
    """One job through the handler; with `video_path`, its MP4 is saved there (so that two runs
    of the same seed and inputs can be compared frame by frame)."""
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
        if video_path is not None and result.get("video"):
            video_path.parent.mkdir(parents=True, exist_ok=True)
            video_path.write_bytes(base64.b64decode(result["video"]))
            record.video = video_path.name
    analyse(record)
    if gpu is not None:
        peak = gpu.peak(started, ended)
        record.peak_vram_mib = peak - baseline_mib if peak and baseline_mib is not None else peak
    return record


def fast_features(args: argparse.Namespace) -> list[str]:
    """ComfyUI `--fast` features asked for, plus fp16_accumulation in the old, global mode."""
    if getattr(args, "fp16_accumulation", "workflow") == "global":
        return [*args.fast, "fp16_accumulation"]
    return list(args.fast)


def server_flags(args: argparse.Namespace) -> list[str]:
    """ComfyUI's flags for this run: --comfyui-args, --extra-comfyui-args, the --fast features,
    and ComfyUI's --enable-triton-backend with --triton-backend."""
    flags = comfyui_args(args.comfyui_args, args.extra_comfyui_args, fast_features(args))
    if getattr(args, "triton_backend", False) and TRITON_BACKEND_FLAG not in flags:
        flags.append(TRITON_BACKEND_FLAG)
    return flags


def server_env(args: argparse.Namespace) -> dict[str, str]:
    """Environment for ComfyUI beyond the benchmark's own: TRITON_CACHE_DIR with
    --triton-cache-dir (Triton's compiled kernels; empty for a first-job compile cost)."""
    cache = getattr(args, "triton_cache_dir", None)
    return {} if cache is None else {"TRITON_CACHE_DIR": str(cache)}


def cache_files(folder: Path | None) -> int | None:
    """Files under a cache folder (None without one; 0 when it does not exist yet)."""
    if folder is None:
        return None
    return sum(1 for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else 0


def video_name(label: str, attention: str, index: int) -> str:
    """A job's MP4 name: the same for the same size, attention and job index (and so the same
    seed and prompt) in every run, so two runs' folders pair up by name."""
    return f"{label}-{attention}-job{index}.mp4"


def bypassed(prompt: dict[str, Any], node_ids: Iterable[str]) -> dict[str, Any]:
    """The prompt with model-patch nodes taken out: whatever read a node's model now reads the
    model that went into it (what ``--bypass`` measures: the cost of a LoRA or a patch)."""
    for node_id in node_ids:
        node = prompt.get(node_id)
        source = node["inputs"].get("model") if node is not None else None
        if not (isinstance(source, list) and len(source) == 2):
            raise BenchError(f"--bypass {node_id}: not a node of the workflow with a model input")
        del prompt[node_id]
        for other in prompt.values():
            for name, value in other["inputs"].items():
                if value == [node_id, 0]:
                    other["inputs"][name] = source
    return prompt


def with_video_format(prompt: dict[str, Any], video_format: str) -> dict[str, Any]:
    """The prompt with the output node's format replaced (``video/h264-mp4``:
    VideoHelperSuite's own, x264's default preset ``medium``), for a same-host A/B of the
    encode inside jobs."""
    from wan_worker.workflow import OUTPUT_NODE

    prompt[OUTPUT_NODE]["inputs"]["format"] = video_format
    return prompt


def without_fp16_nodes(prompt: dict[str, Any]) -> dict[str, Any]:
    """The prompt with the per-model fp16 accumulation nodes taken out (links bridged), as the
    workflow was when ComfyUI's global --fast fp16_accumulation did the job."""
    from wan_worker.workflow import FP16_ACCUMULATION_NODES

    return bypassed(prompt, FP16_ACCUMULATION_NODES)


def make_worker(
    server: ComfyServer,
    attention: str,
    workflow: Path,
    progress: ProgressLog,
    fp16_mode: str = "workflow",
    bypass: Sequence[str] = (),
    video_format: str | None = None,
) -> Any:
    from wan_worker.comfy.client import ComfyClient
    from wan_worker.comfy.process import ComfyProcess
    from wan_worker.settings.worker import WorkerSettings
    from wan_worker.worker import Worker
    from wan_worker.workflow import FP16_ACCUMULATION_NODES, WorkflowTemplate, load_template

    taken_out = [*bypass, *(FP16_ACCUMULATION_NODES if fp16_mode == "global" else ())]

    class EditedTemplate(WorkflowTemplate):
        def build(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
            prompt = bypassed(super().build(*args, **kwargs), taken_out)
            if video_format is not None:
                prompt = with_video_format(prompt, video_format)
            return prompt

    template = load_template(workflow)
    if taken_out or video_format is not None:
        template = EditedTemplate(template.graph)

    settings = WorkerSettings(
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
        template=template,
        client=ComfyClient(server.url, ComfyProcess(server.pid_file, server.log_path)),
        send_progress=progress,
    )


def workflow_with_frames(out: Path, frames: int | None) -> Path:
    """The project's workflow, or a copy with another frame count (for quick dry runs)."""
    from wan_worker.settings.worker import DEFAULT_WORKFLOW
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
    after_job: Callable[[ConfigRecord], None] | None = None,
) -> ConfigRecord:
    """One configuration on a fresh ComfyUI; `after_job(record so far)` after every job, so
    that a run cut short (a GPU host taken back) keeps the jobs it finished."""
    each = None if after_job is None else (lambda records: after_job(records[-1]))
    return run_server(args, [size], attention, workflow, gpu, each)[0]


def run_server(
    args: argparse.Namespace,
    sizes: list[tuple[int, int]],
    attention: str,
    workflow: Path,
    gpu: GpuMemorySampler | None,
    after_job: Callable[[list[ConfigRecord]], None] | None = None,
) -> list[ConfigRecord]:
    """One fresh ComfyUI running `args.jobs` jobs at each size in turn, one record per size.
    The server's first job is "cold"; the first job at each later size is "new-size" (what
    changing size costs a warm server). `after_job(records so far)`
    after every job."""
    labels = [f"{width}x{height}" for width, height in sizes]
    stack = getattr(args, "stack", "host")
    log_name = f"comfyui-{'+'.join(labels)}-{attention}.log"
    records = [ConfigRecord(label, attention, log=log_name, stack=stack) for label in labels]
    for position, record in enumerate(records):
        record.after_sizes = labels[:position]
    server = ComfyServer(
        args.python,
        args.comfyui_dir,
        args.port,
        server_flags(args),
        args.models_root,
        args.out / log_name,
        args.out / "comfyui.pid",
        stack=stack,
        env=server_env(args),
    )
    triton_cache: Path | None = getattr(args, "triton_cache_dir", None)
    videos: Path | None = getattr(args, "videos", None)
    baseline = gpu.now() if gpu is not None else None
    progress = ProgressLog()
    started = time.monotonic()
    begun: list[ConfigRecord] = []

    def count_caches(record: ConfigRecord, when: str) -> None:
        if triton_cache is not None:
            record.triton_cache.setdefault("dir", str(triton_cache))
            record.triton_cache[when] = cache_files(triton_cache)

    try:
        server.start()  # inside: a SIGTERM as it returns must still stop the ComfyUI it started
        worker = make_worker(
            server,
            attention,
            workflow,
            progress,
            getattr(args, "fp16_accumulation", "workflow"),
            getattr(args, "bypass", ()),
            getattr(args, "video_format", None),
        )
        worker.client.wait_ready(args.ready_timeout)
        start_s = round(time.monotonic() - started, 3)
        log = (args.out / log_name).read_text(encoding="utf-8", errors="replace")
        problem = stack_problem(stack, log)
        if problem is not None:
            raise BenchError(f"ComfyUI is not running on the {stack} stack: {problem}")
        idle = gpu.now() if gpu is not None and baseline is not None else None
        for position, ((width, height), record) in enumerate(zip(sizes, records, strict=True)):
            record.comfyui_command = server.command()
            record.comfyui_start_s = start_s
            record.kitchen_backends = kitchen_backends(log)
            record.conv3d_workaround = conv3d_state(log)
            if idle is not None and baseline is not None:
                record.idle_vram_mib = idle - baseline
            count_caches(record, "files_before")
            begun.append(record)
            record_started = started if position == 0 else time.monotonic()
            run_jobs(
                JobRun(args, worker, progress, server, gpu, baseline, videos, after_job, begun),
                record,
                (width, height),
                position,
            )
            if gpu is not None:
                peak = gpu.peak(record_started, time.monotonic())
                record.peak_vram_mib = peak - baseline if peak and baseline is not None else peak
            count_caches(record, "files_after")
            if not server_alive(server):
                break
    finally:
        server.stop()
        for record in begun:
            if "files_after" not in record.triton_cache:
                count_caches(record, "files_after")  # a run cut short: count what it left
    return begun


@dataclass
class JobRun:
    """What `run_jobs` needs of the server run it belongs to."""

    args: argparse.Namespace
    worker: Any
    progress: ProgressLog
    server: ComfyServer
    gpu: GpuMemorySampler | None
    baseline: int | None
    videos: Path | None
    after_job: Callable[[list[ConfigRecord]], None] | None
    begun: list[ConfigRecord]


def run_jobs(run: JobRun, record: ConfigRecord, size: tuple[int, int], position: int) -> None:
    """`args.jobs` jobs at one size; the first is "cold" on a fresh server (position 0),
    "new-size" after other sizes."""
    image = start_image_b64(*size)
    attention = record.attention
    for index in range(run.args.jobs):
        kind = "warm" if index else ("new-size" if position else "cold")
        job = {
            "id": f"bench-{record.size}-{attention}-{index}",
            "input": {
                "start_image": image,
                "prompt": PROMPTS[index % len(PROMPTS)],
                "seed": seed_for(index),
                "width": size[0],
                "height": size[1],
            },
        }
        video = video_name(record.size, attention, index)
        job_record = run_job(
            run.worker,
            run.progress,
            JobRecord(record.size, attention, kind, seed=seed_for(index)),
            job,
            run.gpu,
            run.baseline,
            run.videos / video if run.videos is not None else None,
        )
        record.jobs.append(job_record)
        print(format_job(job_record), flush=True)
        if run.after_job is not None:
            run.after_job(list(run.begun))
        if not job_record.ok and not server_alive(run.server):
            break


def seed_for(index: int) -> int:
    """Job `index`'s seed: the same in every run, so that outputs compare across runs."""
    return 1000 + index


def server_alive(server: ComfyServer) -> bool:
    return server.proc is not None and server.proc.poll() is None
