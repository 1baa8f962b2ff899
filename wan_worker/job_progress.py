"""A job's progress as RunPod shows it: stage, step, total and an overall percent.

It is fed by the events of the job's ComfyUI runs (`RunEvents`, in `wan_worker.comfy.follower`),
and the client's bar (`wan_worker.client.progress_bar`) shows it. Updates go through
`runpod.serverless.progress_update` when the worker runs under RunPod (the SDK posts them to the
job's status); in local runs they are logged instead. Each update is sent only when it changes
what a caller would see, so a 6-step job sends a handful, not hundreds.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

# Share of a typical job's wall time per stage, in order; used for the overall percent.
STAGE_WEIGHTS: dict[str, float] = {
    "load_models": 10,
    "text_encode": 3,
    "image_encode": 2,
    "sample_high_noise": 38,
    "sample_low_noise": 38,
    "vae_decode": 5,
    "interpolate": 3,
    "encode_mp4": 1,
}
_ORDER = list(STAGE_WEIGHTS)
_TOTAL_WEIGHT = sum(STAGE_WEIGHTS.values())

Sender = Callable[[dict[str, Any], dict[str, Any]], None]


def runpod_sender() -> Sender | None:
    """The SDK's progress_update when running under RunPod, else None (log only)."""
    if not os.environ.get("RUNPOD_WEBHOOK_POST_OUTPUT"):
        return None
    from runpod.serverless import progress_update

    sender: Sender = progress_update
    return sender


class JobProgress:
    """Turns a run's stage and step events into RunPod progress updates for one job."""

    def __init__(self, job: dict[str, Any], send: Sender | None) -> None:
        self.job = job
        self.send = send
        self.stage = "queued"
        self.step_value = 0
        self.step_total = 0
        self.last: dict[str, Any] | None = None

    def _percent(self) -> int:
        if self.stage not in STAGE_WEIGHTS:
            return 100 if self.stage == "done" else 0
        index = _ORDER.index(self.stage)
        before = sum(STAGE_WEIGHTS[s] for s in _ORDER[:index])
        within = self.step_value / self.step_total if self.step_total else 0.0
        return int((before + STAGE_WEIGHTS[self.stage] * within) * 100 / _TOTAL_WEIGHT)

    def update(self, stage: str, step: int = 0, total: int = 0) -> None:
        if (
            stage in STAGE_WEIGHTS
            and self.stage in STAGE_WEIGHTS
            and _ORDER.index(stage) < _ORDER.index(self.stage)
        ):
            return  # nodes of an earlier stage may start late; never go backwards
        self.stage, self.step_value, self.step_total = stage, step, total
        payload = {"stage": stage, "step": step, "total": total, "percent": self._percent()}
        if payload == self.last:
            return
        self.last = payload
        log.info("job %s progress %s", self.job.get("id"), payload)
        if self.send is not None:
            self.send(self.job, payload)

    # RunEvents (wan_worker.comfy.follower): the run's stages as they start, and its steps
    def stage_started(self, stage: str) -> None:
        self.update(stage)

    def step(self, stage: str, value: int, total: int) -> None:
        if stage in ("sample_high_noise", "sample_low_noise"):
            self.update(stage, value, total)
