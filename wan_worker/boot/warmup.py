"""Run the workflow once at a small size as soon as ComfyUI answers and the models are verified,
so that the first job finds every model loaded and every first-use cost paid.

A first job on a fresh ComfyUI pays for loading and staging the models, the text encoder's
first use, the LoRA patch and kernel set-up: on an H200, 91 s against 65 s warm at 720x1280.
One 480x832 run of 9 frames pays all of it (the 720x1280 job after it took 65.5 s), so that is
the warm-up (`WarmupPlan`): the fixed workflow with the frame count changed, a generated start
image, a fixed seed, the configured attention and fp16 accumulation.

It never stands in a job's way (`wan_worker.worker_gate`): it starts only while no job is in
hand and none has used ComfyUI, and a job that reaches ComfyUI while it runs stops it. ComfyUI then
interrupts the warm-up's prompt at the end of the node it is in; every model that node and the
ones before it loaded stays loaded (ComfyUI keeps the outputs of the loader nodes, and the job's
loaders have the same inputs), so the job waits at most for one node, and that node is one
the job would run itself, cold, if it were first. The warm-up's files are removed like a job's;
its failure is logged and never stops the worker.
"""

from __future__ import annotations

import io
import logging
import time
from dataclasses import dataclass

from wan_worker.comfy.follower import run_prompt
from wan_worker.errors import JobCancelled, WorkerError
from wan_worker.job_files import JobFiles
from wan_worker.job_progress import JobProgress
from wan_worker.worker import Worker
from wan_worker.worker_gate import Mark
from wan_worker.workflow import FRAMES_NODE, OUTPUT_NODE, STAGES, JobParameters

log = logging.getLogger(__name__)

PROMPT = "A calm lake at dawn, gentle ripples on the water."


@dataclass(frozen=True)
class WarmupPlan:
    """The warm-up's run. Its size and frames are constants, not settings: measured in
    docs/history/benchmarks.md, "Cold worker to first video (H200)", a worker warmed up so ran
    its first 720x1280 job in 0.98x and 1.00x the time of the warm job after it."""

    width: int = 480
    height: int = 832
    frames: int = 9
    seed: int = 0


def gradient_png(width: int = 64, height: int = 64) -> bytes:
    """A small PNG with a gradient (the workflow scales it to the warm-up's size)."""
    from PIL import Image

    image = Image.new("RGB", (width, height))
    image.putdata([(x * 4 % 256, y * 4 % 256, 128) for y in range(height) for x in range(width)])
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def warm_up(worker: Worker, plan: WarmupPlan, *, wait_s: float, mark: Mark) -> str:
    """Run the warm-up when the gate allows it; return how it ended (for the log and tests):
    `done`, `skipped: ...`, `preempted` or `failed: ...`."""
    gate = worker.gate
    cancel = gate.begin_warmup(wait_s)
    if cancel is None:
        reason = gate.why_no_warmup()
        mark("warmup_skipped", reason=reason)
        return f"skipped: {reason}"
    settings = worker.settings
    files = JobFiles(
        settings.comfyui_input_dir,
        settings.comfyui_output_dir,
        "warmup",
        worker.client.known_folders,
    )
    began = time.monotonic()
    mark("warmup_started", size=f"{plan.width}x{plan.height}", frames=plan.frames)
    try:
        with worker.lock:
            if cancel.is_set():
                raise JobCancelled("a job reached ComfyUI before the warm-up began")
            worker.client.wait_ready(settings.ready_timeout_s)
            files.uploaded_as = worker.client.upload_image(gradient_png(), files.image_name)
            prompt = worker.template.build(
                JobParameters(PROMPT, worker.template.default_negative_prompt, plan.seed,
                              plan.width, plan.height),
                image_name=files.uploaded_as,
                output_prefix=files.output_prefix,
                attention="sdpa" if worker.sage_unusable else settings.attention,
                fp16_accumulation=settings.fp16_accumulation,
            )  # fmt: skip
            prompt[FRAMES_NODE]["inputs"]["value"] = plan.frames
            run = run_prompt(
                worker.client,
                prompt,
                prompt_id=files.new_prompt_id(),
                output_node=OUTPUT_NODE,
                deadline=time.monotonic() + settings.job_timeout_s,
                stage_of=STAGES.get,
                progress=gate.noting_stages(JobProgress({"id": "warmup"}, None)),
                cancel=cancel,
            )
        seconds = round(time.monotonic() - began, 1)
        stages = {stage: round(s, 1) for stage, s in run.stage_s.items()}
        mark("warmup_done", s=seconds, stages=stages)
        return "done"
    except JobCancelled as exc:
        mark("warmup_preempted", s=round(time.monotonic() - began, 1), detail=exc.message)
        return "preempted"
    except Exception as exc:  # the warm-up's failure is logged, never raised
        text = exc.message if isinstance(exc, WorkerError) else f"{type(exc).__name__}: {exc}"
        mark("warmup_failed", s=round(time.monotonic() - began, 1), error=text)
        log.warning("the warm-up failed (the first job will be a cold one): %s", text)
        return f"failed: {text}"
    finally:
        files.cleanup()
        if files.prompt_ids:
            worker.abandoned.append(files)  # removed again after the next job, until finished
        gate.end_warmup()
