"""A benchmark run's records, and what is derived from a job's progress events and stages.

ComfyUI's progress events say when each sampling step was queued; the handler's timings say
how long each stage took. From both: seconds per step, each sampler stage split into its steps
and its setup (moving the expert to the GPU, the LoRA patches, first-use work), and the part of
the job outside the steps that takes the largest share of it.
"""

from __future__ import annotations

import itertools
import statistics
from dataclasses import dataclass, field
from typing import Any

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
    seed: int | None = None
    video: str = ""  # the MP4 as saved, relative to the run's videos folder ("" if not saved)


@dataclass
class ConfigRecord:
    size: str
    attention: str
    comfyui_start_s: float = 0.0
    idle_vram_mib: int | None = None
    peak_vram_mib: int | None = None
    jobs: list[JobRecord] = field(default_factory=list)
    log: str = ""
    stack: str = ""  # "image" or "host" (see scripts/gpu_bench/comfyui.py); "" before the option
    comfyui_command: list[str] = field(default_factory=list)
    kitchen_backends: dict[str, str] = field(default_factory=dict)  # from ComfyUI's log
    conv3d_workaround: str = ""  # the launcher's, from the log ("" on the host's stack)
    triton_cache: dict[str, Any] = field(default_factory=dict)  # dir, files before and after
    after_sizes: list[str] = field(default_factory=list)  # sizes its ComfyUI ran before it


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
