"""What stands between a job and ComfyUI: the models, the boot's failures, the warm-up.

One `WorkerGate` per handler process, shared by the boot's threads (`wan_worker.boot`) and by
every job (`wan_worker.handler`), so it lives below both:

- **Models.** Pending until the provisioner has verified them; a job that reaches ComfyUI
  first waits here (bounded). A failure of the boot (a model that cannot be had, a ComfyUI
  that never answers) is kept, and every job that waits or comes later fails with it: its
  error asks RunPod to replace the worker.
- **Jobs.** How many are in hand, and whether one has reached ComfyUI yet.
- **The warm-up.** It starts only while no job is in hand and none has reached ComfyUI, and
  the job that reaches ComfyUI while it runs stops it (`reach_comfyui` sets its cancel event;
  ComfyUI interrupts the warm-up's prompt, and whatever it loaded stays loaded).
- **Stages.** The stages of the workflow that ComfyUI has begun (warm-up or job), so the
  readahead stops reading a file that ComfyUI is already loading itself.
- **ComfyUI's first answer**, which the readahead waits for before it reads past its cap
  (`wait_for_comfyui`).

Without a boot (rp_handler.py against a ComfyUI started elsewhere, and the tests) the gate is
open: models verified, no warm-up.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from wan_worker.errors import JobTimeout, WorkerError

if TYPE_CHECKING:
    from wan_worker.comfy.follower import RunEvents

#: Records one of the boot's events: `mark(name, **values)` (`wan_worker.boot.timeline`).
Mark = Callable[..., None]


class WorkerGate:
    def __init__(self, *, booting: bool = False, mark: Mark | None = None) -> None:
        """`booting`: the models are not verified yet and ComfyUI has not answered yet;
        otherwise the gate is open."""
        self._cond = threading.Condition()
        self._models_verified = not booting
        self._comfyui_answered = not booting
        self._failure: WorkerError | None = None
        self._in_hand = 0
        self._job_reached_comfyui = False
        self._warmup_cancel: threading.Event | None = None
        self._stages: set[str] = set()
        self._mark: Mark = mark or (lambda *_args, **_kwargs: None)

    # -- the boot reports ---------------------------------------------------------------------

    def models_verified(self) -> None:
        with self._cond:
            self._models_verified = True
            self._cond.notify_all()

    def fail(self, error: WorkerError) -> None:
        """The boot failed: every job from now on gets `error` (the first failure is kept)."""
        with self._cond:
            if self._failure is None:
                self._failure = error
            if self._warmup_cancel is not None:
                self._warmup_cancel.set()
            self._cond.notify_all()

    def comfyui_answered(self) -> None:
        with self._cond:
            self._comfyui_answered = True
            self._cond.notify_all()

    def wait_for_comfyui(self, timeout_s: float | None = None) -> bool:
        """Wait at most `timeout_s` (None: until it comes) for ComfyUI's first answer or the
        boot's failure; whether one of them has come."""
        with self._cond:
            return self._cond.wait_for(
                lambda: self._comfyui_answered or self._failure is not None, timeout=timeout_s
            )

    @property
    def failure(self) -> WorkerError | None:
        with self._cond:
            return self._failure

    def wait_settled(self) -> WorkerError | None:
        """Block until the models are verified (None) or the boot failed (its error)."""
        with self._cond:
            self._cond.wait_for(lambda: self._models_verified or self._failure is not None)
            return self._failure

    # -- jobs ---------------------------------------------------------------------------------

    def job_arrived(self) -> None:
        with self._cond:
            self._in_hand += 1
            self._cond.notify_all()

    def job_left(self) -> None:
        with self._cond:
            self._in_hand -= 1
            self._cond.notify_all()

    def idle(self) -> bool:
        with self._cond:
            return self._in_hand == 0

    def wait_models(self, timeout_s: float) -> None:
        """Return once the models are verified; raise the boot's failure, or JobTimeout after
        `timeout_s`."""
        with self._cond:
            settled = self._cond.wait_for(
                lambda: self._failure is not None or self._models_verified, timeout=timeout_s
            )
            if self._failure is not None:
                raise self._failure
            if not settled:
                raise JobTimeout(
                    f"The worker was still verifying its models {timeout_s:g} s after the job "
                    "arrived; the job was not run. Retry it."
                )

    def reach_comfyui(self, job_id: object) -> None:
        """A job is about to use ComfyUI: no warm-up starts from now on, a running one stops."""
        with self._cond:
            self._job_reached_comfyui = True
            cancel = self._warmup_cancel
            if cancel is not None:
                cancel.set()
            self._cond.notify_all()
        self._mark("job_reaches_comfyui", job=job_id, preempts_warmup=cancel is not None)

    # -- the warm-up --------------------------------------------------------------------------

    def begin_warmup(self, timeout_s: float) -> threading.Event | None:
        """Wait (at most `timeout_s`) until the models are verified and no job is in hand;
        return the warm-up's cancel event, or None when it must not run: a job has reached
        ComfyUI, the boot failed, or the wait timed out."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                if self._job_reached_comfyui or self._failure is not None:
                    return None
                if self._models_verified and self._in_hand == 0:
                    self._warmup_cancel = threading.Event()
                    return self._warmup_cancel
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._cond.wait(remaining)

    def why_no_warmup(self) -> str:
        with self._cond:
            if self._failure is not None:
                return "the boot failed"
            if self._job_reached_comfyui:
                return "a job reached ComfyUI first"
            return "jobs kept the worker busy"

    def end_warmup(self) -> None:
        with self._cond:
            self._warmup_cancel = None
            self._cond.notify_all()

    # -- stages -------------------------------------------------------------------------------

    def stage_started(self, stage: str) -> None:
        with self._cond:
            self._stages.add(stage)

    def stage_begun(self, stage: str) -> bool:
        with self._cond:
            return stage in self._stages

    def noting_stages(self, sink: RunEvents) -> RunEvents:
        """`sink`, also telling this gate which stages ComfyUI begins."""
        return _StageNotingSink(self, sink)


class _StageNotingSink:
    def __init__(self, gate: WorkerGate, sink: RunEvents) -> None:
        self.gate = gate
        self.sink = sink

    def stage_started(self, stage: str) -> None:
        self.gate.stage_started(stage)
        self.sink.stage_started(stage)

    def step(self, stage: str, value: int, total: int) -> None:
        self.sink.step(stage, value, total)
