"""ComfyUI's HTTP API and its websocket, as the worker uses them.

One `ComfyClient` per ComfyUI server: readiness (tied to the local process when there is one),
the start image upload, queueing a prompt, /history, /queue, /view, /interrupt, and opening the
websocket a prompt is followed on (`wan_worker.comfy.follower`). It also learns where ComfyUI
keeps its input and output folders, from what ComfyUI reports: its base folder (the parent of
`custom_nodes` in `/internal/folder_paths`, asked once it is ready) and the output folder of
each video (VideoHelperSuite's `fullpath`), so a job's files are removed wherever ComfyUI runs
from, whatever COMFYUI_DIR says. Every failure is raised as a
worker error (`wan_worker.comfy.failures`); a request that gets no answer first asks whether
ComfyUI's process died, so the error names the cause; a refused connection says nothing listens
any more; an answer at ComfyUI's address that is not ComfyUI's (another program on its port)
says so at once. `probe` tells a running ComfyUI from a stopped or gone one while a job runs.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, NamedTuple

import requests
import websocket

from wan_worker.comfy import failures
from wan_worker.comfy.process import ComfyProcess
from wan_worker.errors import ComfyUnavailable

SOCKET_ERRORS = (OSError, websocket.WebSocketException)


@dataclass(frozen=True)
class OutputFile:
    """A file ComfyUI wrote, as /view addresses it."""

    filename: str
    subfolder: str
    type: str
    fullpath: str | None = None


def output_file(ui: Any) -> OutputFile | None:
    """The first file an output node reports (`executed` message or /history entry)."""
    if not isinstance(ui, dict):
        return None
    for key in ("gifs", "videos", "images"):
        items = ui.get(key)
        if isinstance(items, list) and items and isinstance(items[0], dict):
            item = items[0]
            return OutputFile(
                filename=str(item["filename"]),
                subfolder=str(item.get("subfolder", "")),
                type=str(item.get("type", "output")),
                fullpath=item.get("fullpath"),
            )
    return None


class ComfyFolders(NamedTuple):
    """Where ComfyUI keeps uploads and outputs, as far as it has said."""

    input: tuple[Path, ...] = ()
    output: tuple[Path, ...] = ()


def output_root(ref: OutputFile) -> Path | None:
    """ComfyUI's output folder, from a file's `fullpath` minus its subfolder and name."""
    if not ref.fullpath or ref.type != "output":
        return None
    full = PurePosixPath(ref.fullpath)
    tail = PurePosixPath(ref.subfolder, ref.filename).parts
    if not full.is_absolute() or full.parts[-len(tail) :] != tail or len(full.parts) <= len(tail):
        return None
    return Path(*full.parts[: -len(tail)])


# How often `wait_ready` asks while ComfyUI starts. Until ComfyUI listens, each try is a refused
# connection (about 0.4 ms of CPU on loopback); each pause between tries is time a job that arrived
# at boot, the readahead's held experts and the warm-up may wait past ComfyUI's first answer.
READY_POLL_S = 0.1


#: How long one liveness probe waits for ComfyUI's answer (see `ComfyClient.probe`).
PROBE_TIMEOUT_S = 5.0
#: How long a process whose port refuses connections may take to show as dead in /proc.
EXIT_SEEN_S = 1.0


class Answer(enum.Enum):
    """What one request found at ComfyUI's address."""

    #: An HTTP answer came, whatever its status: a server is there and running.
    ANSWERED = "answered"
    #: The connection was refused: nothing listens at the address.
    REFUSED = "refused"
    #: The connection was made (or not) but no answer came in time: a stopped (SIGSTOP) or
    #: hung process, whose kernel still accepts connections, or a slow network.
    SILENT = "silent"


def refused(exc: BaseException | None) -> bool:
    """Whether a failed request's cause is a refused connection: nothing listens there.

    requests wraps the OSError two levels down (ConnectionError -> MaxRetryError.reason ->
    NewConnectionError, raised from the OSError); websocket-client raises it as it is."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc] if exc is not None else []
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, ConnectionRefusedError) or (
            isinstance(current, OSError) and current.errno == errno.ECONNREFUSED
        ):
            return True
        linked = [current.__cause__, current.__context__, getattr(current, "reason", None)]
        linked += [arg for arg in current.args if isinstance(arg, BaseException)]
        todo += [item for item in linked if isinstance(item, BaseException)]
    return False


def describe_failure(exc: BaseException) -> str:
    """A failed request in a few words: refused, timed out, or the exception's type."""
    if refused(exc):
        return "connection refused"
    if isinstance(exc, requests.Timeout | websocket.WebSocketTimeoutException | TimeoutError):
        return "no answer in time"
    return type(exc).__name__


def backoff(attempt: int) -> float:
    """Seconds to wait before retry `attempt` (0, 1, ...) while the websocket reconnects."""
    return min(0.05 * 2.0**attempt, 1.0)


def _system_stats(response: requests.Response) -> bool:
    """Whether an answer of /system_stats is ComfyUI's: a JSON object with its `system`."""
    try:
        body = response.json()
    except ValueError:
        return False
    return isinstance(body, dict) and isinstance(body.get("system"), dict)


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
        self._base: Path | None = None  # ComfyUI's base folder, once it has said
        self._output_roots: list[Path] = []  # output folders its videos were written to

    # -- process and readiness -------------------------------------------------------------

    def check_process(self) -> None:
        """Raise ComfyUnavailable, naming the cause, if ComfyUI's process has died."""
        if self.process is None:
            return
        state = self.process.state()
        if not state.alive:
            self._ready = False
            raise failures.process_died(state.detail, self.process.death_cause())

    def unreachable(self, what: str, exc: BaseException) -> ComfyUnavailable:
        """The error for a request that got no answer: the process's death, if it died; that
        nothing listens any more, if the connection was refused."""
        self.check_process()
        if refused(exc):
            return self.refused_error(f"for {what}")
        return failures.unreachable(self.base_url, what, exc)

    def refused_error(self, when: str) -> ComfyUnavailable:
        """The error for a refused connection `when` ("while the job ran"). A process that
        exits closes its sockets a moment before /proc shows it dead: when the worker knows
        ComfyUI's process, it is given EXIT_SEEN_S to be seen dead, so that the error says
        why it died (`check_process` raises that one)."""
        if self.process is not None:
            end = self.clock() + EXIT_SEEN_S
            while self.process.state().pid is not None and self.clock() < end:
                self.check_process()
                time.sleep(0.01)
            self.check_process()
        return failures.refused(self.base_url, when)

    def probe(self, timeout_s: float = PROBE_TIMEOUT_S) -> Answer:
        """Whether ComfyUI's HTTP server answers, asked with its cheapest request: GET /prompt,
        the queue's length, which touches neither the GPU nor a model. ComfyUI serves HTTP on
        its event loop while prompts run on a thread of their own, so a busy ComfyUI answers
        it; a stopped one accepts the connection and never does."""
        try:
            self.session.get(f"{self.base_url}/prompt", timeout=timeout_s)
        except requests.RequestException as exc:
            return Answer.REFUSED if refused(exc) else Answer.SILENT
        return Answer.ANSWERED

    def process_detail(self) -> str | None:
        """How ComfyUI's process is, when the worker knows it (its PID file): `state T`, ..."""
        if self.process is None:
            return None
        state = self.process.state()
        return state.detail if state.pid is not None else None

    def wait_ready(self, timeout_s: float, cancel: threading.Event | None = None) -> None:
        """Return once ComfyUI answers; fail at once if its process dies meanwhile, or if
        something else answers at its address. Setting `cancel` stops the wait (JobCancelled).
        """
        if self._ready:
            self.check_process()
            return
        deadline = self.clock() + timeout_s
        last = "none"
        while True:
            if cancel is not None and cancel.is_set():
                raise failures.cancelled_waiting()
            self.check_process()
            try:
                response = self.session.get(f"{self.base_url}/system_stats", timeout=2.0)
            except requests.RequestException as exc:
                last = describe_failure(exc)
            else:
                if response.status_code == 200 and _system_stats(response):
                    self._ready = True
                    self._learn_base()
                    return
                last = f"HTTP {response.status_code}" + (
                    ", not ComfyUI's JSON" if response.status_code == 200 else ""
                )
                if response.status_code < 500:
                    # ComfyUI answers this route from the moment it listens, always with its
                    # JSON; a proxy before a ComfyUI that starts answers 502-504.
                    raise failures.not_comfyui(self.base_url, last, response.headers.get("Server"))
            remaining = deadline - self.clock()
            if remaining <= 0:
                launched = self.process is not None and self.process.state().pid is not None
                raise failures.not_ready(self.base_url, timeout_s, last, launched=launched)
            time.sleep(min(READY_POLL_S, remaining))

    # -- ComfyUI's folders ------------------------------------------------------------------

    def _learn_base(self) -> None:
        """ComfyUI's base folder: the parent of `custom_nodes` in /internal/folder_paths (the
        route its frontend reads). Optional: without an answer, outputs still tell."""
        if self._base is not None:
            return
        try:
            reply = self.session.get(f"{self.base_url}/internal/folder_paths", timeout=5.0)
            listed = reply.json().get("custom_nodes") if reply.status_code == 200 else None
        except (requests.RequestException, ValueError, AttributeError):
            return
        if isinstance(listed, list) and listed and isinstance(listed[0], str):
            custom_nodes = PurePosixPath(listed[0])
            if custom_nodes.is_absolute() and custom_nodes.name == "custom_nodes":
                self._base = Path(custom_nodes.parent)

    def known_folders(self) -> ComfyFolders:
        """The input and output folders ComfyUI has reported so far (possibly none)."""
        outputs = list(self._output_roots)
        inputs = [root.parent / "input" for root in outputs]
        if self._base is not None:
            outputs.insert(0, self._base / "output")
            inputs.insert(0, self._base / "input")
        return ComfyFolders(tuple(dict.fromkeys(inputs)), tuple(dict.fromkeys(outputs)))

    # -- HTTP ---------------------------------------------------------------------------------

    def _http(self, method: str, path: str, what: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", self.http_timeout_s)
        try:
            return self.session.request(method, f"{self.base_url}{path}", **kwargs)
        except requests.RequestException as exc:
            raise self.unreachable(what, exc) from exc

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
            raise failures.upload_refused(response.status_code)
        body = response.json()
        sub = body.get("subfolder") or ""
        return f"{sub}/{body['name']}" if sub else str(body["name"])

    def submit(self, prompt: dict[str, Any], client_id: str, prompt_id: str) -> str:
        """Queue `prompt` under `prompt_id` for the socket of `client_id`; return its id."""
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
            raise failures.rejected(body, prompt)
        if response.status_code != 200:
            raise failures.prompt_refused(response.status_code, body)
        return str(body.get("prompt_id") or prompt_id)

    def history(self, prompt_id: str, timeout_s: float | None = None) -> dict[str, Any] | None:
        """The prompt's /history entry; None until ComfyUI has finished it (or never ran it)."""
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

    def queued(self, prompt_id: str, timeout_s: float = 2.0) -> bool:
        """Whether the prompt is running or waiting in ComfyUI's queue."""
        queue = self._http("GET", "/queue", "the queue request", timeout=timeout_s).json()
        items = queue.get("queue_running", []) + queue.get("queue_pending", [])
        return any(len(item) > 1 and item[1] == prompt_id for item in items)

    def view(self, ref: OutputFile) -> bytes:
        root = output_root(ref)
        if root is not None and root not in self._output_roots:
            self._output_roots.append(root)
        response = self._http(
            "GET",
            "/view",
            "the video download",
            params={"filename": ref.filename, "subfolder": ref.subfolder, "type": ref.type},
        )
        if response.status_code != 200:
            raise failures.view_failed(ref.filename, response.status_code)
        return response.content

    def interrupt(self, prompt_id: str) -> None:
        """Stop the prompt if it runs, drop it if it waits; never raises."""
        with contextlib.suppress(requests.RequestException):
            self.session.post(
                f"{self.base_url}/interrupt", json={"prompt_id": prompt_id}, timeout=5
            )
            self.session.post(f"{self.base_url}/queue", json={"delete": [prompt_id]}, timeout=5)

    # -- websocket ----------------------------------------------------------------------------

    def open_socket(self, client_id: str, timeout_s: float) -> websocket.WebSocket:
        """The websocket for `client_id`; raises one of SOCKET_ERRORS when it cannot open."""
        return websocket.create_connection(
            f"{self.ws_url}?clientId={client_id}", timeout=timeout_s, enable_multithread=False
        )

    def connect(self, client_id: str, timeout_s: float = 10.0) -> websocket.WebSocket:
        """The websocket for `client_id`, or ComfyUnavailable naming why it did not open."""
        try:
            return self.open_socket(client_id, timeout_s)
        except SOCKET_ERRORS as exc:
            raise self.unreachable("the websocket", exc) from exc
