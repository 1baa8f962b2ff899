"""ComfyUI's HTTP and websocket API, as the worker uses it.

One job is: connect the websocket with a `clientId`, upload the start image, `POST /prompt`
with that `client_id` (and a prompt id chosen here, so a lost reply loses nothing), then follow
the socket until the prompt succeeds or fails. The MP4's name arrives in the `executed` message
of the output node, so the job finishes the moment `execution_success` arrives; `/history` is
the fallback whenever a message may have been missed: after a reconnect, on silence, and when
`execution_success` came without the output (ComfyUI writes history only after it sends
`execution_success`, so the client then waits for `executing` with `node: null`, which ComfyUI
sends after the history is written).

Nothing here sleeps for a fixed time: waits are socket receives bounded by the job's deadline,
and the short retry backoff while ComfyUI boots or the socket reconnects.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import requests
import websocket

from wan_worker.comfy_process import ComfyProcess
from wan_worker.errors import (
    ComfyExecutionError,
    ComfyRejected,
    ComfyUnavailable,
    DiskFull,
    JobTimeout,
    OutOfMemory,
    OutputError,
    WorkerError,
)
from wan_worker.prompt_validation import MODEL_FILE_INPUTS

log = logging.getLogger(__name__)

PROCESS_CHECK_S = 2.0  # how often ComfyUI's process is checked while a job runs
HISTORY_CHECK_S = 15.0  # how often /history is asked, in case a message was lost
INTERRUPT_GRACE_S = 15.0  # how long an interrupted prompt may take to stop


@dataclass(frozen=True)
class OutputFile:
    """A file ComfyUI wrote, as /view addresses it."""

    filename: str
    subfolder: str
    type: str
    fullpath: str | None = None
    frame_rate: float | None = None
    extra_files: tuple[str, ...] = ()


@dataclass
class RunOutcome:
    prompt_id: str
    video: OutputFile
    queued_s: float = 0.0
    executed_s: float = 0.0
    stage_s: dict[str, float] = field(default_factory=dict)
    reconnects: int = 0
    finished_at: float = 0.0  # time.monotonic() when success was known


class ProgressSink(Protocol):
    def node_started(self, node_id: str) -> None: ...

    def step(self, node_id: str, value: int, total: int) -> None: ...


class _NoProgress:
    def node_started(self, node_id: str) -> None:
        pass

    def step(self, node_id: str, value: int, total: int) -> None:
        pass


def _backoff(attempt: int) -> float:
    return min(0.05 * (2**attempt), 1.0)


def format_node_errors(body: dict[str, Any], prompt: dict[str, Any]) -> str:
    """One readable sentence per problem in a /prompt 400 body, naming node, class and input."""
    parts: list[str] = []
    hint = ""
    for node_id, entry in (body.get("node_errors") or {}).items():
        class_type = entry.get("class_type") or prompt.get(node_id, {}).get("class_type", "?")
        for err in entry.get("errors", []):
            input_name = (err.get("extra_info") or {}).get("input_name")
            where = f"node {node_id} ({class_type})" + (
                f" input {input_name}" if input_name else ""
            )
            parts.append(f"{where}: {err.get('message')}: {err.get('details')}")
            if (class_type, input_name) in MODEL_FILE_INPUTS and err.get("type") == (
                "value_not_in_list"
            ):
                hint = (
                    " A model file is missing: check the worker's boot log for the model "
                    "download step and the network volume's free space."
                )
    if not parts:
        error = body.get("error")
        if isinstance(error, dict):
            parts.append(f"{error.get('message')}: {error.get('details')}".rstrip(": "))
        else:
            parts.append(str(error or body))
    return "ComfyUI rejected the workflow: " + "; ".join(parts) + "." + hint


def execution_error(data: dict[str, Any]) -> WorkerError:
    """The worker error for an `execution_error` message (socket or history)."""
    node_id = data.get("node_id", "?")
    node_type = data.get("node_type", "?")
    exc_type = str(data.get("exception_type", "")).rsplit(".", 1)[-1]
    message = str(data.get("exception_message", "")).strip()
    text = f"node {node_id} ({node_type}) failed: {exc_type}: {message}"
    if "No space left on device" in message or "Errno 28" in message:
        return DiskFull(
            f"ComfyUI's disk is full: {text[:600]}. The job was not completed; free space "
            "on the worker (or give it more container disk) and retry.",
            node_id=node_id,
            node_type=node_type,
        )
    if "OutOfMemory" in exc_type or "out of memory" in message.lower():
        return OutOfMemory(
            f"Out of memory in {text}. Lower width and height (for example 480x832), or use a "
            "GPU with more memory.",
            node_id=node_id,
            node_type=node_type,
        )
    return ComfyExecutionError(
        f"ComfyUI {text}", node_id=node_id, node_type=node_type, exception_type=exc_type
    )


def _output_from(ui: Any) -> OutputFile | None:
    if not isinstance(ui, dict):
        return None
    for key in ("gifs", "videos", "images"):
        items = ui.get(key)
        if isinstance(items, list) and items and isinstance(items[0], dict):
            item = items[0]
            extra = tuple(x for x in (item.get("workflow"),) if isinstance(x, str) and x)
            rate = item.get("frame_rate")
            return OutputFile(
                filename=str(item["filename"]),
                subfolder=str(item.get("subfolder", "")),
                type=str(item.get("type", "output")),
                fullpath=item.get("fullpath"),
                frame_rate=float(rate) if isinstance(rate, int | float) else None,
                extra_files=extra,
            )
    return None


class ComfyClient:
    """A ComfyUI server at `base_url`, optionally tied to its local process for liveness."""

    def __init__(
        self,
        base_url: str,
        process: ComfyProcess | None = None,
        *,
        http_timeout_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.ws_url = "ws" + self.base_url[len("http") :] + "/ws"
        self.process = process
        self.http_timeout_s = http_timeout_s
        self.clock = clock
        self.session = requests.Session()
        self._ready = False

    # -- process and readiness -------------------------------------------------------------

    def check_process(self) -> None:
        """Raise ComfyUnavailable, naming the cause, if ComfyUI's process has died."""
        if self.process is None:
            return
        state = self.process.state()
        if not state.alive:
            self._ready = False
            raise ComfyUnavailable(
                f"{state.detail}: {self.process.death_cause()}. The job was not completed; "
                "the worker will be replaced.",
                refresh_worker=True,
            )

    def _unreachable(self, what: str, exc: BaseException) -> ComfyUnavailable:
        self.check_process()
        return ComfyUnavailable(
            f"ComfyUI at {self.base_url} did not answer {what} ({type(exc).__name__}). "
            "The job was not completed; retry it.",
            refresh_worker=False,
        )

    def wait_ready(self, timeout_s: float) -> None:
        """Return once ComfyUI answers; fail at once if its process dies meanwhile."""
        if self._ready:
            self.check_process()
            return
        deadline = self.clock() + timeout_s
        attempt = 0
        last: BaseException | None = None
        while True:
            self.check_process()
            try:
                response = self.session.get(f"{self.base_url}/system_stats", timeout=2.0)
                if response.status_code == 200:
                    self._ready = True
                    return
                last = RuntimeError(f"HTTP {response.status_code}")
            except requests.RequestException as exc:
                last = exc
            remaining = deadline - self.clock()
            if remaining <= 0:
                raise ComfyUnavailable(
                    f"ComfyUI at {self.base_url} did not become ready within {timeout_s:g} s "
                    f"(last answer: {last}). See the worker log for ComfyUI's start-up output.",
                    refresh_worker=True,
                )
            time.sleep(min(_backoff(attempt), remaining))
            attempt += 1

    # -- HTTP ---------------------------------------------------------------------------------

    def _http(self, method: str, path: str, what: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", self.http_timeout_s)
        try:
            return self.session.request(method, f"{self.base_url}{path}", **kwargs)
        except requests.RequestException as exc:
            raise self._unreachable(what, exc) from exc

    def upload_image(self, data: bytes, name: str, subfolder: str = "") -> str:
        """Upload PNG bytes to ComfyUI's input folder; return the name LoadImage takes."""
        response = self._http(
            "POST",
            "/upload/image",
            "the image upload",
            files={"image": (name, data, "image/png")},
            data={"type": "input", "overwrite": "true", "subfolder": subfolder},
        )
        if response.status_code != 200:
            raise ComfyUnavailable(
                f"ComfyUI refused the start image upload (HTTP {response.status_code}). "
                "Retry the job.",
                refresh_worker=False,
            )
        body = response.json()
        sub = body.get("subfolder") or ""
        return f"{sub}/{body['name']}" if sub else str(body["name"])

    def submit(self, prompt: dict[str, Any], client_id: str, prompt_id: str) -> str:
        response = self._http(
            "POST",
            "/prompt",
            "the prompt",
            json={"prompt": prompt, "client_id": client_id, "prompt_id": prompt_id},
        )
        try:
            body = response.json()
        except ValueError:
            body = {"error": response.text[:500]}
        if response.status_code == 400:
            raise ComfyRejected(
                format_node_errors(body, prompt), node_errors=body.get("node_errors")
            )
        if response.status_code != 200:
            raise ComfyUnavailable(
                f"ComfyUI answered /prompt with HTTP {response.status_code}: {body}. "
                "Retry the job.",
                refresh_worker=False,
            )
        return str(body.get("prompt_id") or prompt_id)

    def history(self, prompt_id: str, timeout_s: float | None = None) -> dict[str, Any] | None:
        response = self._http(
            "GET",
            f"/history/{prompt_id}",
            "the history request",
            timeout=timeout_s or self.http_timeout_s,
        )
        if response.status_code != 200:
            return None
        entry = response.json().get(prompt_id)
        return entry if isinstance(entry, dict) else None

    def view(self, ref: OutputFile) -> bytes:
        response = self._http(
            "GET",
            "/view",
            "the video download",
            params={"filename": ref.filename, "subfolder": ref.subfolder, "type": ref.type},
        )
        if response.status_code != 200:
            raise OutputError(
                f"ComfyUI could not serve the finished video {ref.filename} "
                f"(HTTP {response.status_code}); it may have been removed or the disk is full."
            )
        return response.content

    def interrupt(self, prompt_id: str) -> None:
        """Stop the prompt if it runs, drop it if it waits; never raises."""
        with contextlib.suppress(requests.RequestException):
            self.session.post(
                f"{self.base_url}/interrupt", json={"prompt_id": prompt_id}, timeout=5
            )
            self.session.post(f"{self.base_url}/queue", json={"delete": [prompt_id]}, timeout=5)

    # -- websocket ----------------------------------------------------------------------------

    def connect(self, client_id: str, timeout_s: float = 10.0) -> websocket.WebSocket:
        try:
            return websocket.create_connection(
                f"{self.ws_url}?clientId={client_id}", timeout=timeout_s, enable_multithread=False
            )
        except (OSError, websocket.WebSocketException) as exc:
            raise self._unreachable("the websocket", exc) from exc

    def run(
        self,
        prompt: dict[str, Any],
        *,
        output_node: str,
        deadline: float,
        progress: ProgressSink | None = None,
        stage_of: Callable[[str], str | None] = lambda _node: None,
        prompt_id: str | None = None,
    ) -> RunOutcome:
        """Submit `prompt` and follow it to the end; return where its video is."""
        client_id = uuid.uuid4().hex
        prompt_id = prompt_id or str(uuid.uuid4())
        ws = self.connect(client_id)
        follower = _Follower(
            self,
            ws,
            client_id,
            prompt_id,
            output_node,
            deadline,
            progress or _NoProgress(),
            stage_of,
        )
        try:
            follower.submitted_at = self.clock()
            self.submit(prompt, client_id, prompt_id)
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
        progress: ProgressSink,
        stage_of: Callable[[str], str | None],
    ) -> None:
        self.client = client
        self.ws: websocket.WebSocket | None = ws
        self.client_id = client_id
        self.prompt_id = prompt_id
        self.output_node = output_node
        self.deadline = deadline
        self.progress = progress
        self.stage_of = stage_of
        self.video: OutputFile | None = None
        self.succeeded = False
        self.submitted_at = client.clock()
        self.started_at: float | None = None
        self.current: tuple[str | None, float] | None = None
        self.outcome = RunOutcome(prompt_id, OutputFile("", "", "output"))
        self.last_history_at = client.clock()
        self.next_process_check = client.clock() + PROCESS_CHECK_S

    def close(self) -> None:
        if self.ws is not None:
            with contextlib.suppress(Exception):
                self.ws.close()
            self.ws = None

    # -- bookkeeping -----------------------------------------------------------------

    def _enter(self, node_id: str | None) -> None:
        now = self.client.clock()
        if self.current is not None:
            stage = self.current[0]
            if stage is not None:
                self.outcome.stage_s[stage] = self.outcome.stage_s.get(stage, 0.0) + (
                    now - self.current[1]
                )
        self.current = (self.stage_of(node_id) if node_id else None, now)

    def _finish(self, video: OutputFile) -> RunOutcome:
        self._enter(None)
        now = self.client.clock()
        started = self.started_at if self.started_at is not None else self.submitted_at
        self.outcome.video = video
        self.outcome.queued_s = max(0.0, started - self.submitted_at)
        self.outcome.executed_s = max(0.0, now - started)
        self.outcome.finished_at = now
        return self.outcome

    # -- the loop --------------------------------------------------------------------

    def follow(self) -> RunOutcome:
        while True:
            now = self.client.clock()
            remaining = self.deadline - now
            if remaining <= 0:
                self._time_out()
            if self.ws is None:
                outcome = self._reconnect()
                if outcome is not None:
                    return outcome
                continue
            # Wake for the next liveness check even if messages keep coming: a node such as
            # Crystools broadcasts every second, so a quiet socket cannot be relied on.
            until_check = self.next_process_check - now
            self.ws.settimeout(max(0.01, min(remaining, until_check)))
            try:
                raw = self.ws.recv()
            except websocket.WebSocketTimeoutException:
                raw = None
            except (websocket.WebSocketException, OSError) as exc:
                log.warning("ComfyUI websocket dropped (%s); reconnecting", type(exc).__name__)
                self.close()
                continue
            if isinstance(raw, str):  # binary frames are previews and node text
                try:
                    message = json.loads(raw)
                except json.JSONDecodeError:
                    message = None
                if isinstance(message, dict):
                    outcome = self._on_message(message)
                    if outcome is not None:
                        return outcome
            outcome = self._periodic_checks()
            if outcome is not None:
                return outcome

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
            self._enter(str(node))
            self.progress.node_started(str(node))
        elif kind == "progress":
            node = str(data.get("node"))
            value, total = data.get("value"), data.get("max")
            if isinstance(value, int | float) and isinstance(total, int | float):
                self.progress.step(node, int(value), int(total))
        elif kind == "executed":
            if str(data.get("node")) == self.output_node:
                self.video = _output_from(data.get("output")) or self.video
        elif kind == "execution_success":
            self.succeeded = True
            if self.video is not None:
                return self._finish(self.video)
        elif kind == "execution_error":
            raise execution_error(data)
        elif kind == "execution_interrupted":
            raise JobTimeout(
                "ComfyUI interrupted the job before it finished (someone called /interrupt, or "
                "the worker is shutting down). Retry the job."
            )
        return None

    def _from_history(self, *, required: bool) -> RunOutcome | None:
        self.last_history_at = self.client.clock()
        entry = self.client.history(self.prompt_id)
        if entry is None:
            if required:
                raise OutputError(
                    "ComfyUI reported the job finished but has no record of it in /history. "
                    "Retry the job."
                )
            return None
        status = entry.get("status") or {}
        messages = status.get("messages") or []
        for kind, data in messages:
            if kind == "execution_error":
                raise execution_error(data)
            if kind == "execution_interrupted":
                raise JobTimeout("ComfyUI interrupted the job before it finished. Retry the job.")
        if status.get("status_str") == "error":
            raise ComfyExecutionError("ComfyUI reported an error for the job without details.")
        video = _output_from((entry.get("outputs") or {}).get(self.output_node))
        if video is not None:
            return self._finish(video)
        if status.get("completed") or required:
            raise OutputError(
                f"ComfyUI finished the job but node {self.output_node} wrote no video. "
                "Check the worker log for ffmpeg errors."
            )
        return None

    def _periodic_checks(self) -> RunOutcome | None:
        """Every few seconds: is ComfyUI's process alive; less often: did /history move on."""
        now = self.client.clock()
        if now < self.next_process_check:
            return None
        self.next_process_check = now + PROCESS_CHECK_S
        self.client.check_process()
        if now - self.last_history_at < HISTORY_CHECK_S:
            return None
        try:
            return self._from_history(required=False)
        except ComfyUnavailable:
            # Alive but not answering: busy, or hung. Keep following; the deadline decides,
            # and an interrupt that ComfyUI cannot act on gets the worker replaced.
            self.client.check_process()
            log.warning("ComfyUI is running but did not answer /history; still waiting")
            return None

    def _reconnect(self) -> RunOutcome | None:
        attempt = 0
        while True:
            self.client.check_process()
            remaining = self.deadline - self.client.clock()
            if remaining <= 0:
                self._time_out()
            try:
                self.ws = websocket.create_connection(
                    f"{self.client.ws_url}?clientId={self.client_id}",
                    timeout=max(0.05, min(remaining, 5.0)),
                )
            except (OSError, websocket.WebSocketException):
                time.sleep(min(_backoff(attempt), max(0.0, self.deadline - self.client.clock())))
                attempt += 1
                continue
            self.outcome.reconnects += 1
            try:
                return self._from_history(required=False)
            except ComfyUnavailable:
                self.close()
                raise

    def _time_out(self) -> None:
        stage = self.current[0] if self.current else None
        self.client.interrupt(self.prompt_id)
        stopped = self._wait_stopped()
        where = f" during {stage}" if stage else ""
        if stopped:
            raise JobTimeout(
                f"The job did not finish before its deadline{where}; ComfyUI was interrupted. "
                "Raise JOB_TIMEOUT_S, or lower width and height."
            )
        raise JobTimeout(
            f"The job did not finish before its deadline{where}, and ComfyUI did not stop when "
            "interrupted; the worker will be replaced.",
            refresh_worker=True,
        )

    def _wait_stopped(self) -> bool:
        """After an interrupt: True once ComfyUI reports the prompt ended or was never run."""
        end = self.client.clock() + INTERRUPT_GRACE_S
        while self.client.clock() < end:
            try:
                self.client.check_process()
            except ComfyUnavailable:
                return False
            if self.ws is not None:
                self.ws.settimeout(max(0.01, min(1.0, end - self.client.clock())))
                try:
                    raw = self.ws.recv()
                except websocket.WebSocketTimeoutException:
                    raw = None
                except (websocket.WebSocketException, OSError):
                    self.close()
                    raw = None
                if isinstance(raw, str):
                    with contextlib.suppress(json.JSONDecodeError):
                        message = json.loads(raw)
                        data = message.get("data") or {}
                        if data.get("prompt_id") == self.prompt_id and message.get("type") in (
                            "execution_interrupted",
                            "execution_error",
                            "execution_success",
                        ):
                            return True
                    continue
            try:
                if self.client.history(self.prompt_id) is not None:
                    return True
                queue = self.client.session.get(f"{self.client.base_url}/queue", timeout=2).json()
            except (requests.RequestException, ValueError, ComfyUnavailable):
                return False
            items = queue.get("queue_running", []) + queue.get("queue_pending", [])
            if not any(len(item) > 1 and item[1] == self.prompt_id for item in items):
                return True
            if self.ws is None:
                time.sleep(0.2)
        return False
