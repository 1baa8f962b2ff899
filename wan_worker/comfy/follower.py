"""Run one prompt on ComfyUI and follow it over the websocket to its end.

A run is: connect the websocket with a `clientId`, `POST /prompt` with that `client_id` (and a
prompt id chosen by the caller, so a lost reply loses nothing), then follow the socket until
the prompt succeeds or fails. The MP4's name arrives in the `executed` message of the output
node, so the run finishes the moment `execution_success` arrives; `/history` is the fallback
whenever a message may have been missed: after a reconnect, on silence, and when
`execution_success` came without the output (ComfyUI writes history only after it sends
`execution_success`, so the follower then waits for `executing` with `node: null`, which
ComfyUI sends after the history is written).

Each node that starts is mapped to its stage once; that stage feeds both the run's per-stage
timings and the caller's `RunEvents` (the job's progress, for a job).

Nothing here sleeps for a fixed time: waits are socket receives bounded by the job's deadline,
and the short retry backoff while the socket reconnects.

A ComfyUI that is gone or stopped fails the run within seconds, not at its deadline, whether or
not the worker knows its process (its PID file, written by the boot; not in local mode). Every
PROCESS_CHECK_S the process is checked, and when nothing came on the socket for that long,
ComfyUI's HTTP server is asked (`ComfyClient.probe`); so is it whenever the socket drops and
cannot be opened again. A refused connection means nothing listens: ComfyUI is gone. No
message and no HTTP answer for STALL_S, though connections are accepted, means a stopped
(SIGSTOP) or hung ComfyUI.

A run can be stopped from another thread through its `cancel` event (the platform stopped the
job, or a job preempts the warm-up): the follower then interrupts the prompt in ComfyUI, waits
for it to stop, and raises JobCancelled. The event is looked at at least every CANCEL_POLL_S.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import websocket

from wan_worker.comfy import failures
from wan_worker.comfy.client import (
    PROBE_TIMEOUT_S,
    SOCKET_ERRORS,
    Answer,
    ComfyClient,
    OutputFile,
    backoff,
    output_file,
)
from wan_worker.errors import ComfyUnavailable

log = logging.getLogger(__name__)

PROCESS_CHECK_S = 2.0  # how often ComfyUI's process (and, when quiet, its HTTP) is checked
#: How long ComfyUI may send nothing and answer no request, though it accepts connections,
#: before the run fails as `comfyui_unavailable` (stopped or hung). ComfyUI answers HTTP on
#: its event loop, on the main thread, while a prompt runs on its own thread; the loop waits
#: only for the GIL, which CPython hands over every 5 ms of Python and PyTorch releases in its
#: kernels, and for the loop's own work (a /prompt's validation, under a second). A busy
#: ComfyUI thus answers the probe at once; a stopped one never does. Measured: ComfyUI 0.33.0
#: running a prompt on the CPU (synthetic weights, both cores of the machine busy) answered 140
#: probes in 2.6 ms (median), 0.14 s at most. 30 s is 200 times that, room for a host under
#: memory pressure or a long garbage collection, and still ends a stopped ComfyUI's job 500 s
#: before its deadline (JOB_TIMEOUT_S, 540 s). The job's answer comes at most one probe
#: (PROBE_TIMEOUT_S) and one check (PROCESS_CHECK_S) later.
STALL_S = 30.0
HISTORY_CHECK_S = 15.0  # how often /history is asked, in case a message was lost
INTERRUPT_GRACE_S = 15.0  # how long an interrupted prompt may take to stop
CANCEL_POLL_S = 0.25  # how often a run with a cancel event looks at it

StageOf = Callable[[str], str | None]


@dataclass
class RunOutcome:
    prompt_id: str
    video: OutputFile
    queued_s: float = 0.0
    executed_s: float = 0.0
    stage_s: dict[str, float] = field(default_factory=dict)


class RunEvents(Protocol):
    """Who hears the events of one run as they come: each stage as it starts (see `StageOf`),
    and each step of a stage that counts them (a sampler's)."""

    def stage_started(self, stage: str) -> None: ...

    def step(self, stage: str, value: int, total: int) -> None: ...


class _NoEvents:
    def stage_started(self, stage: str) -> None:
        pass

    def step(self, stage: str, value: int, total: int) -> None:
        pass


def run_prompt(
    client: ComfyClient,
    prompt: dict[str, Any],
    *,
    prompt_id: str,
    output_node: str,
    deadline: float,
    stage_of: StageOf = lambda _node: None,
    progress: RunEvents | None = None,
    cancel: threading.Event | None = None,
) -> RunOutcome:
    """Submit `prompt` and follow it to the end; return where its video is. The run's events
    go to `progress` (a job's progress, say). Setting `cancel` stops the run: the prompt is
    interrupted and JobCancelled raised."""
    client_id = uuid.uuid4().hex
    ws = client.connect(client_id)
    follower = _Follower(
        client, ws, client_id, prompt_id, output_node, deadline, progress or _NoEvents(), stage_of
    )
    follower.cancel = cancel
    try:
        follower.submitted_at = client.clock()
        client.submit(prompt, client_id, prompt_id)
        return follower.follow()
    finally:
        follower.close()


class _Follower:
    """State of one prompt being followed over the socket, with history as the fallback."""

    def __init__(
        self,
        client: ComfyClient,
        ws: websocket.WebSocket,
        client_id: str,
        prompt_id: str,
        output_node: str,
        deadline: float,
        events: RunEvents,
        stage_of: StageOf,
    ) -> None:
        self.client = client
        self.ws: websocket.WebSocket | None = ws
        self.client_id = client_id
        self.prompt_id = prompt_id
        self.output_node = output_node
        self.deadline = deadline
        self.events = events
        self.stage_of = stage_of
        self.video: OutputFile | None = None
        self.submitted_at = client.clock()
        self.started_at: float | None = None
        self.current: tuple[str | None, float] | None = None  # the running stage, since when
        self.outcome = RunOutcome(prompt_id, OutputFile("", "", "output"))
        self.last_history_at = client.clock()
        self.next_process_check = client.clock() + PROCESS_CHECK_S
        #: When ComfyUI was last heard from: a socket frame, or an answer to a request.
        self.last_heard = client.clock()
        self.cancel: threading.Event | None = None

    def close(self) -> None:
        if self.ws is not None:
            with contextlib.suppress(Exception):
                self.ws.close(timeout=1.0)
            self.ws = None

    def drop(self) -> None:
        """Close the socket without the closing handshake (the server may not answer)."""
        if self.ws is not None:
            with contextlib.suppress(Exception):
                self.ws.close(timeout=0)
            self.ws = None

    # -- bookkeeping -----------------------------------------------------------------

    def _enter(self, stage: str | None) -> None:
        """End the running stage's lap; start `stage`'s (None: no stage, or the end)."""
        now = self.client.clock()
        if self.current is not None:
            running, since = self.current
            if running is not None:
                self.outcome.stage_s[running] = self.outcome.stage_s.get(running, 0.0) + (
                    now - since
                )
        self.current = (stage, now)

    def _finish(self, video: OutputFile) -> RunOutcome:
        self._enter(None)
        now = self.client.clock()
        started = self.started_at if self.started_at is not None else self.submitted_at
        self.outcome.video = video
        self.outcome.queued_s = max(0.0, started - self.submitted_at)
        self.outcome.executed_s = max(0.0, now - started)
        return self.outcome

    # -- the loop --------------------------------------------------------------------

    def follow(self) -> RunOutcome:
        while True:
            now = self.client.clock()
            remaining = self.deadline - now
            if remaining <= 0:
                self._time_out()
            self._check_cancel()
            if self.ws is None:
                outcome = self._reconnect()
                if outcome is not None:
                    return outcome
                continue
            # Wake for the next liveness check even if messages keep coming: a node such as
            # Crystools broadcasts every second, so a quiet socket cannot be relied on.
            wait = min(remaining, self.next_process_check - now)
            if self.cancel is not None:
                wait = min(wait, CANCEL_POLL_S)
            raw = self._receive(max(0.01, wait))
            message = _parse(raw) if raw is not None else None
            if message is not None:
                outcome = self._on_message(message)
                if outcome is not None:
                    return outcome
            outcome = self._periodic_checks()
            if outcome is not None:
                return outcome

    def _receive(self, timeout_s: float) -> str | None:
        """The next text frame within `timeout_s`; None on silence, a binary frame (previews
        and node text) or a dropped socket (then closed, to be reconnected)."""
        if self.ws is None:
            return None
        self.ws.settimeout(timeout_s)
        try:
            raw = self.ws.recv()
        except websocket.WebSocketTimeoutException:
            return None
        except SOCKET_ERRORS as exc:
            log.warning("ComfyUI websocket dropped (%s); reconnecting", type(exc).__name__)
            self.close()
            return None
        self.last_heard = self.client.clock()
        return raw if isinstance(raw, str) else None

    def _on_message(self, message: dict[str, Any]) -> RunOutcome | None:
        kind = message.get("type")
        data = message.get("data") or {}
        if not isinstance(data, dict):
            return None
        if "prompt_id" in data and data["prompt_id"] != self.prompt_id:
            return None
        if kind == "execution_start":
            self.started_at = self.client.clock()
        elif kind == "executing":
            node = data.get("node")
            if node is None:
                if "prompt_id" in data:  # after history is written: the end, either way
                    return self._from_history(required=True)
                return None
            stage = self.stage_of(str(node))
            self._enter(stage)
            if stage is not None:
                self.events.stage_started(stage)
        elif kind == "progress":
            stage = self.stage_of(str(data.get("node")))
            value, total = data.get("value"), data.get("max")
            if (
                stage is not None
                and isinstance(value, int | float)
                and isinstance(total, int | float)
            ):
                self.events.step(stage, int(value), int(total))
        elif kind == "executed":
            if str(data.get("node")) == self.output_node:
                self.video = output_file(data.get("output")) or self.video
        elif kind == "execution_success":
            if self.video is not None:
                return self._finish(self.video)
        elif kind == "execution_error":
            raise failures.execution_error(data)
        elif kind == "execution_interrupted":
            raise failures.interrupted()
        return None

    def _from_history(self, *, required: bool, timeout_s: float | None = None) -> RunOutcome | None:
        self.last_history_at = self.client.clock()
        entry = self.client.history(self.prompt_id, timeout_s)
        self.last_heard = self.client.clock()
        if entry is None:
            if required:
                raise failures.no_history()
            return None
        status = entry.get("status") or {}
        failure = failures.history_failure(status)
        if failure is not None:
            raise failure
        video = output_file((entry.get("outputs") or {}).get(self.output_node))
        if video is not None:
            return self._finish(video)
        if status.get("completed") or required:
            raise failures.no_video(self.output_node)
        return None

    def _periodic_checks(self) -> RunOutcome | None:
        """Every few seconds: is ComfyUI alive and answering; less often: did /history move
        on."""
        now = self.client.clock()
        if now < self.next_process_check:
            return None
        self.check_alive()
        self.next_process_check = self.client.clock() + PROCESS_CHECK_S
        if now - self.last_history_at < HISTORY_CHECK_S:
            return None
        if self.client.clock() - self.last_heard >= PROCESS_CHECK_S:
            return None  # not answering now: check_alive counts the silence
        try:
            return self._from_history(required=False, timeout_s=PROBE_TIMEOUT_S)
        except ComfyUnavailable:
            # Alive but slow to answer: busy, or stopping. Keep following; check_alive
            # decides when silence has lasted too long.
            log.warning("ComfyUI is running but did not answer /history; still waiting")
            return None

    def check_alive(self, *, dropped: bool = False) -> None:
        """Raise ComfyUnavailable if ComfyUI's process died, if nothing listens at its address
        any more, or if it has answered nothing for STALL_S. Asks over HTTP only when the
        socket was quiet for PROCESS_CHECK_S or has `dropped`."""
        self.client.check_process()
        if not dropped and self.client.clock() - self.last_heard < PROCESS_CHECK_S:
            return
        answer = self.client.probe()
        if answer is Answer.ANSWERED:
            self.last_heard = self.client.clock()
            return
        self.client.check_process()  # it may have died meanwhile: that says more
        if answer is Answer.REFUSED:
            self.drop()
            raise self.client.refused_error("while the job ran")
        silent_s = self.client.clock() - self.last_heard
        if silent_s >= STALL_S:
            self.drop()  # no closing handshake with a server that does not answer
            raise failures.stopped_answering(
                self.client.base_url, silent_s, self.client.process_detail()
            )

    def _reconnect(self) -> RunOutcome | None:
        attempt = 0
        while True:
            self.client.check_process()
            remaining = self.deadline - self.client.clock()
            if remaining <= 0:
                self._time_out()
            self._check_cancel()
            try:
                self.ws = self.client.open_socket(self.client_id, max(0.05, min(remaining, 5.0)))
            except SOCKET_ERRORS:
                self.check_alive(dropped=True)
                time.sleep(min(backoff(attempt), max(0.0, self.deadline - self.client.clock())))
                attempt += 1
                continue
            self.last_heard = self.client.clock()
            try:
                return self._from_history(required=False)
            except ComfyUnavailable:
                self.close()
                raise

    def _time_out(self) -> None:
        stage = self.current[0] if self.current else None
        self.client.interrupt(self.prompt_id)
        raise failures.deadline_passed(stage, stopped=self._wait_stopped())

    def _check_cancel(self) -> None:
        if self.cancel is None or not self.cancel.is_set():
            return
        stage = self.current[0] if self.current else None
        self.client.interrupt(self.prompt_id)
        raise failures.cancelled(stage, stopped=self._wait_stopped())

    def _wait_stopped(self) -> bool:
        """After an interrupt: True once ComfyUI reports the prompt ended or was never run."""
        end = self.client.clock() + INTERRUPT_GRACE_S
        while self.client.clock() < end:
            try:
                self.client.check_process()
            except ComfyUnavailable:
                return False
            if self.ws is not None:
                raw = self._receive(max(0.01, min(1.0, end - self.client.clock())))
                if raw is not None:
                    if self._ends_prompt(_parse(raw)):
                        return True
                    continue
            try:
                if self.client.history(self.prompt_id) is not None:
                    return True
                if not self.client.queued(self.prompt_id):
                    return True
            except (ValueError, ComfyUnavailable):
                return False
            if self.ws is None:
                time.sleep(0.2)
        return False

    def _ends_prompt(self, message: dict[str, Any] | None) -> bool:
        """Whether a socket message says this prompt ended: interrupted, failed or done."""
        data = (message or {}).get("data")
        return (
            isinstance(data, dict)
            and data.get("prompt_id") == self.prompt_id
            and (message or {}).get("type")
            in ("execution_interrupted", "execution_error", "execution_success")
        )


def _parse(raw: str) -> dict[str, Any] | None:
    """A socket message as a dict; None if it is not a JSON object."""
    try:
        message = json.loads(raw)
    except json.JSONDecodeError:
        return None
    return message if isinstance(message, dict) else None
