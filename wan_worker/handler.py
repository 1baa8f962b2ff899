"""The RunPod job handler: input in, MP4 out, every failure an `{"error": ...}`.

A job runs these steps, each timed: validate the input, load the start image, wait for
ComfyUI, upload the image, build the prompt from the fixed workflow, run it, download the
video, deliver it. Whatever happens, the job's files are removed and the result is a dict;
no exception reaches the runpod SDK, so no job can take the worker down with it.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from wan_worker.comfy_client import ComfyClient
from wan_worker.comfy_process import ComfyProcess
from wan_worker.delivery import deliver
from wan_worker.errors import WorkerError, error_result, redact
from wan_worker.job_files import JobFiles
from wan_worker.job_input import parse_job_input
from wan_worker.progress import JobProgress, Sender, runpod_sender
from wan_worker.settings import Settings
from wan_worker.start_image import load_start_image
from wan_worker.workflow import OUTPUT_NODE, STAGES, WorkflowTemplate, load_template

log = logging.getLogger(__name__)


@dataclass
class Worker:
    """What a job needs that outlives it: settings, the workflow, the ComfyUI client."""

    settings: Settings
    template: WorkflowTemplate
    client: ComfyClient
    send_progress: Sender | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def from_settings(cls, settings: Settings) -> Worker:
        process = ComfyProcess(settings.comfyui_pid_file, settings.comfyui_log)
        return cls(
            settings=settings,
            template=load_template(settings.workflow_path),
            client=ComfyClient(settings.comfyui_url, process),
            send_progress=runpod_sender(),
        )


class _Timer:
    def __init__(self) -> None:
        self.start = time.monotonic()
        self.mark = self.start
        self.laps: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.monotonic()
        self.laps[name] = round(now - self.mark, 3)
        self.mark = now


def handle(job: dict[str, Any], worker: Worker) -> dict[str, Any]:
    """Run one job. Always returns a dict: the result, or `{"error": ...}`."""
    settings = worker.settings
    job_id = job.get("id", "local") if isinstance(job, dict) else "local"
    files = JobFiles(settings.comfyui_input_dir, settings.comfyui_output_dir, job_id)
    timer = _Timer()
    deadline = timer.start + settings.job_timeout_s
    try:
        raw_input = job.get("input") if isinstance(job, dict) else None
        request = parse_job_input(raw_input, worker.template, settings)
        image = load_start_image(request.start_image, settings)
        timer.lap("input_s")
        with worker.lock:  # ComfyUI runs one prompt at a time; so does this worker
            worker.client.wait_ready(settings.ready_timeout_s)
            timer.lap("wait_ready_s")
            files.uploaded_as = worker.client.upload_image(image.png, files.image_name)
            timer.lap("upload_s")
            prompt = worker.template.build(
                request.params,
                image_name=files.uploaded_as,
                output_prefix=files.output_prefix,
                attention=settings.attention,
            )
            progress = JobProgress(job, worker.send_progress)
            outcome = worker.client.run(
                prompt,
                output_node=OUTPUT_NODE,
                deadline=deadline,
                progress=progress,
                stage_of=STAGES.get,
            )
            timer.mark = time.monotonic()
            video = worker.client.view(outcome.video)
            timer.lap("fetch_s")
        delivered = deliver(video, settings)
        timer.lap("deliver_s")
        params = request.params
        timings: dict[str, Any] = dict(timer.laps)
        timings.update(
            queued_s=round(outcome.queued_s, 3),
            inference_s=round(outcome.executed_s, 3),
            stages={k: round(v, 3) for k, v in outcome.stage_s.items()},
            total_s=round(time.monotonic() - timer.start, 3),
        )
        return {
            **delivered,
            "format": "mp4",
            "seed": params.seed,
            "width": params.width,
            "height": params.height,
            "frames": worker.template.output_frames,
            "fps": worker.template.fps,
            "attention": settings.attention,
            "bytes": len(video),
            "timings": timings,
        }
    except Exception as exc:  # every failure becomes an error result
        if not isinstance(exc, WorkerError):
            log.exception("job %s failed unexpectedly", job_id)
        else:
            log.warning("job %s failed: %s", job_id, redact(exc.message))
        return error_result(exc)
    finally:
        files.cleanup()


@lru_cache(maxsize=1)
def default_worker() -> Worker:
    return Worker.from_settings(Settings.from_env())


def handler(job: dict[str, Any]) -> dict[str, Any]:
    """The entry point runpod.serverless.start calls."""
    try:
        worker = default_worker()
    except Exception as exc:  # a configuration error: say so in every job until fixed
        return error_result(exc)
    return handle(job, worker)
