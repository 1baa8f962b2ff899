"""The RunPod job handler: input in, MP4 out, every failure an `{"error": ...}`.

A job runs these steps, each timed: validate the input, load the start image, wait for
ComfyUI (and, while the worker boots, for its models; a running warm-up is stopped), upload
the image, build the prompt from the fixed workflow, run it, download the video, deliver it.
Whatever happens, the job's files are removed and the result is a dict; no exception reaches
the runpod SDK, so no job can take the worker down with it.

The SDK's entry (the coroutine `job_handler` makes) runs the job in a thread, so the SDK's
event loop stays free to hear RunPod stop the job (its stop channel cancels the job's task: the
job was cancelled, or ran past the endpoint's execution timeout). The job's thread then
interrupts ComfyUI, removes the job's files and returns; the worker goes on with the next job.
In the local API, SIGTERM and SIGINT stop the jobs in hand the same way, so the process exits
within seconds (`StopJobsFirst`).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from types import FrameType
from typing import Any

from wan_worker.comfy.follower import INTERRUPT_GRACE_S, RunOutcome, run_prompt
from wan_worker.delivery import deliver
from wan_worker.errors import (
    JobCancelled,
    OutputError,
    SageAttentionFailed,
    WorkerError,
    error_result,
    redact,
)
from wan_worker.job_files import JobFiles
from wan_worker.job_input import JobRequest, read_job_input
from wan_worker.job_progress import JobProgress
from wan_worker.settings.worker import WorkerSettings
from wan_worker.video_check import FrameReport, inspect_frames
from wan_worker.worker import Worker
from wan_worker.workflow import OUTPUT_NODE, STAGES

log = logging.getLogger(__name__)


class StageTimer:
    """Wall time of a job's stages: each lap runs from the end of the one before."""

    def __init__(self) -> None:
        self.start = time.monotonic()
        self._lap_start = self.start
        self.laps: dict[str, float] = {}

    def lap(self, name: str) -> None:
        """Add the time since the last lap to `name` (a stage may be lapped more than once)."""
        now = time.monotonic()
        self.laps[name] = round(self.laps.get(name, 0.0) + now - self._lap_start, 3)
        self._lap_start = now

    @contextmanager
    def outside_laps(self) -> Iterator[None]:
        """A stretch that is no lap: the next lap starts where it ends (ComfyUI's run is timed
        by the run itself)."""
        try:
            yield
        finally:
            self._lap_start = time.monotonic()

    def total_s(self) -> float:
        return round(time.monotonic() - self.start, 3)


def local_copy(fullpath: str | None, size: int) -> Path | None:
    """ComfyUI's own file for the video, when it is on this machine (ffmpeg reads it there)."""
    if not fullpath:
        return None
    path = Path(fullpath)
    try:
        return path if path.stat().st_size == size else None
    except OSError:
        return None


@dataclass
class _Generation:
    video: bytes
    attention: str
    fp16_accumulation: bool
    #: Why the job ran with less than the worker's settings ask for; None if it did not.
    fallback_reason: str | None
    report: FrameReport
    outcomes: list[RunOutcome]


def _generate(
    worker: Worker,
    job: dict[str, Any],
    request: JobRequest,
    files: JobFiles,
    image_name: str,
    deadline: float,
    timer: StageTimer,
    cancel: threading.Event | None = None,
) -> _Generation:
    """Run the workflow. If SageAttention fails, run it again with PyTorch attention; if the
    video is black or flat, run it again with PyTorch attention and no fp16 accumulation."""
    settings = worker.settings
    attention, fp16 = settings.attention, settings.fp16_accumulation
    outcomes: list[RunOutcome] = []
    reason: str | None = None
    if attention == "sage" and worker.sage_unusable is not None:
        attention = "sdpa"
        reason = f"{worker.sage_unusable} earlier on this worker, so it uses PyTorch attention"
        log.info("job %s: %s", job.get("id"), reason)
    while True:
        _stop_if_cancelled(cancel)
        prompt = worker.template.build(
            request.params,
            image_name=image_name,
            output_prefix=files.output_prefix,
            attention=attention,
            fp16_accumulation=fp16,
        )
        try:
            with timer.outside_laps():
                outcome = run_prompt(
                    worker.client,
                    prompt,
                    prompt_id=files.new_prompt_id(),
                    output_node=OUTPUT_NODE,
                    deadline=deadline,
                    stage_of=STAGES.get,
                    progress=worker.gate.noting_stages(JobProgress(job, worker.send_progress)),
                    cancel=cancel,
                )
        except SageAttentionFailed as exc:
            if attention != "sage" or not settings.attention_fallback or exc.refresh_worker:
                raise
            if exc.load_failure:
                worker.sage_unusable = exc.reason
                log.error(
                    "job %s: %s; this worker uses PyTorch attention from now on",
                    job.get("id"),
                    exc.reason,
                )
            else:
                log.warning(
                    "job %s: %s; running it with PyTorch attention", job.get("id"), exc.reason
                )
            attention = "sdpa"
            reason = f"{exc.reason}, so the job ran with PyTorch attention" + (
                "; this worker uses it from now on" if exc.load_failure else ""
            )
            continue
        outcomes.append(outcome)
        video = worker.client.view(outcome.video)
        timer.lap("fetch_s")
        report = inspect_frames(video, local_copy(outcome.video.fullpath, len(video)))
        timer.lap("check_s")
        if not report.bad:
            return _Generation(video, attention, fp16, reason, report, outcomes)
        if settings.attention_fallback and (attention == "sage" or fp16):
            log.warning(
                "job %s: the video is black or flat (%s) with %s attention%s; running it again "
                "with PyTorch attention and without fp16 accumulation",
                job.get("id"),
                report.describe(),
                attention,
                " and fp16 accumulation" if fp16 else "",
            )
            black = (
                f"the video was black or flat ({report.describe()}) with {attention} attention"
                + (" and fp16 accumulation" if fp16 else "")
                + ", so the job ran again with PyTorch attention and without fp16 accumulation"
            )
            reason = f"{reason}; then {black}" if reason else black
            attention, fp16 = "sdpa", False
            continue
        hint = (
            "It happened with PyTorch attention and without fp16 accumulation too, which "
            "points at damaged model files: check the model step of the worker's boot log."
            if attention == "sdpa" and not fp16
            else "Set ATTENTION=sdpa and FP16_ACCUMULATION=0, or ATTENTION_FALLBACK=1 to retry "
            "such jobs automatically."
        )
        raise OutputError(
            f"The generated video is black or flat ({report.describe()}) with {attention} "
            f"attention{' and fp16 accumulation' if fp16 else ''}. {hint}"
        )


def _stop_if_cancelled(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise JobCancelled("The job was stopped before it finished; nothing was left running.")


@contextmanager
def _locked_unless_cancelled(
    lock: threading.Lock, cancel: threading.Event | None
) -> Iterator[None]:
    """`lock`, waited for while looking at `cancel` (a warm-up being stopped, a job before)."""
    while not lock.acquire(timeout=0.25):
        _stop_if_cancelled(cancel)
    try:
        yield
    finally:
        lock.release()


def handle(
    job: dict[str, Any], worker: Worker, cancel: threading.Event | None = None
) -> dict[str, Any]:
    """Run one job. Always returns a dict: the result, or `{"error": ...}`. Setting `cancel`
    (from another thread) stops it: ComfyUI is interrupted and the files removed."""
    settings = worker.settings
    job_id = job.get("id", "local") if isinstance(job, dict) else "local"
    files = JobFiles(
        settings.comfyui_input_dir, settings.comfyui_output_dir, job_id, worker.client.known_folders
    )
    timer = StageTimer()
    deadline = timer.start + settings.job_timeout_s
    worker.gate.job_arrived()
    failed = False
    try:
        raw_input = job.get("input") if isinstance(job, dict) else None
        request, image = read_job_input(raw_input, worker.template, settings)
        timer.lap("input_s")
        _stop_if_cancelled(cancel)
        wait_s = min(settings.ready_timeout_s, max(0.0, deadline - time.monotonic()))
        worker.gate.wait_models(wait_s)
        worker.gate.reach_comfyui(job_id)
        # ComfyUI runs one prompt at a time; so do we.
        with _locked_unless_cancelled(worker.lock, cancel):
            worker.client.wait_ready(wait_s, cancel)
            timer.lap("wait_ready_s")
            _stop_if_cancelled(cancel)
            uploaded_as = worker.client.upload_image(image.png, files.image_name)
            files.uploaded_as = uploaded_as
            timer.lap("upload_s")
            generation = _generate(
                worker, job, request, files, uploaded_as, deadline, timer, cancel
            )
        _stop_if_cancelled(cancel)
        delivered = deliver(
            generation.video, f"{files.token}.mp4", settings, worker.store, deadline
        )
        timer.lap("deliver_s")
        params = request.params
        timings: dict[str, Any] = dict(timer.laps)
        stages: dict[str, float] = {}
        for outcome in generation.outcomes:
            for stage, seconds in outcome.stage_s.items():
                stages[stage] = round(stages.get(stage, 0.0) + seconds, 3)
        timings.update(
            queued_s=round(sum(o.queued_s for o in generation.outcomes), 3),
            inference_s=round(sum(o.executed_s for o in generation.outcomes), 3),
            stages=stages,
            total_s=timer.total_s(),
        )
        log.info(
            "job %s done in %.1f s: seed %d (%s), %dx%d, %s attention",
            job_id,
            timings["total_s"],
            params.seed,
            "random" if request.seed_was_random else "given",
            params.width,
            params.height,
            generation.attention,
        )
        return {
            **delivered,
            "format": "mp4",
            "seed": params.seed,
            "width": params.width,
            "height": params.height,
            "frames": worker.template.output_frames,
            "fps": worker.template.fps,
            "attention": generation.attention,
            "fp16_accumulation": generation.fp16_accumulation,
            "attention_fallback": generation.fallback_reason is not None,
            "attention_fallback_reason": generation.fallback_reason,
            "timings": timings,
        }
    except Exception as exc:  # every failure becomes an error result
        if not isinstance(exc, WorkerError):
            log.exception("job %s failed unexpectedly", job_id)
        else:
            log.warning("job %s failed: %s", job_id, redact(exc.message))
        failed = True
        return error_result(exc)
    finally:
        files.cleanup()
        _sweep_abandoned(worker)
        if failed and files.prompt_ids:
            # Its prompt may still run (ComfyUI did not act on the interrupt, or stopped):
            # asked after later jobs, not now, when ComfyUI may not answer.
            worker.abandoned.append(files)
        worker.gate.job_left()


MAX_ABANDONED = 20


def _sweep_abandoned(worker: Worker) -> None:
    """Remove what earlier failed jobs' prompts wrote since; forget them once finished."""
    keep: list[JobFiles] = []
    for files in worker.abandoned:
        files.cleanup()
        try:
            finished = all(
                worker.client.history(p, timeout_s=2.0) is not None for p in files.prompt_ids
            )
        except WorkerError:
            finished = False
        if not finished:
            keep.append(files)
    worker.abandoned = keep[-MAX_ABANDONED:]


@lru_cache(maxsize=1)
def default_worker() -> Worker:
    return Worker.from_settings(WorkerSettings.from_env())


#: How long a stopped job's thread may take to interrupt ComfyUI and remove its files before
#: the SDK is told the job stopped (the next job waits for the worker's lock in any case).
STOP_GRACE_S = INTERRUPT_GRACE_S + 5.0

JobHandler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]

#: The stop events of the jobs in hand, set by `StopJobsFirst` when the process is told to stop.
_jobs_in_hand: set[threading.Event] = set()

SignalHandler = Callable[[int, FrameType | None], Any] | int | None


class StopJobsFirst:
    """A signal handler that stops the jobs in hand, then does what `previous` did.

    The runpod SDK's local API (--rp_serve_api) is uvicorn, which on SIGTERM or SIGINT stops
    taking requests and then waits for the open ones, with no time limit; a job's request stays
    open until the job ends, so `kill` waited for the job, up to its deadline. Put before
    uvicorn's handler, this sets every job's stop event: each job interrupts its prompt,
    removes its files and answers `cancelled` within seconds, and uvicorn then exits."""

    def __init__(self, previous: SignalHandler) -> None:
        self.previous = previous

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        for stop in list(_jobs_in_hand):
            stop.set()
        if callable(self.previous):
            self.previous(signum, frame)
        elif self.previous == signal.SIG_DFL:
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)

    @classmethod
    def install(cls) -> None:
        """Put one before the current handlers of SIGTERM and SIGINT, unless one is there.
        Called as a job starts: uvicorn installs its handlers only once it serves."""
        if threading.current_thread() is not threading.main_thread():
            return  # only the main thread may set signal handlers
        for signum in (signal.SIGTERM, signal.SIGINT):
            current = signal.getsignal(signum)
            if not isinstance(current, cls):
                signal.signal(signum, cls(current))


def job_handler(get_worker: Callable[[], Worker], *, stop_on_signal: bool = False) -> JobHandler:
    """The coroutine runpod.serverless.start calls for each job, on the worker `get_worker`
    gives (a configuration error it raises becomes every job's error, until fixed).

    `stop_on_signal` (the local API): SIGTERM or SIGINT stops the jobs in hand, so the
    process exits within seconds (`StopJobsFirst`). Not on RunPod, whose SDK lets a job in
    hand finish when the worker is told to stop."""

    async def handler(job: dict[str, Any]) -> dict[str, Any]:
        try:
            worker = get_worker()
        except Exception as exc:
            return error_result(exc)
        cancel = threading.Event()
        if stop_on_signal:
            StopJobsFirst.install()
            _jobs_in_hand.add(cancel)
        work = asyncio.get_running_loop().run_in_executor(None, handle, job, worker, cancel)
        try:
            return await asyncio.shield(work)
        except asyncio.CancelledError:
            log.warning("job %s: RunPod stopped it; stopping it here too", job.get("id"))
            cancel.set()
            await asyncio.wait({work}, timeout=STOP_GRACE_S)
            raise
        finally:
            _jobs_in_hand.discard(cancel)

    return handler
