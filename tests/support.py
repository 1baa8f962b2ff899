"""What the tests share, in one place: ports, images, a server in a thread, waiting on an
event, and the ComfyUI double as a test drives it. Fixtures that use these live in
conftest.py; tests and scripts/ import from here.

- `free_port`, `closed_port`: loopback ports for servers a test starts, or for nothing at all.
- `make_png`: a real PNG with a gradient.
- `serve`: an aiohttp app on loopback in a background thread.
- `wait_for`: poll observable state until it shows what the test waits for (an event, never a
  delay), failing early when whatever would produce it has gone.
- `ComfyServer`, `start_double`, `stop`: the ComfyUI double (tests/comfy_double.py) in a
  subprocess, or a real ComfyUI given by COMFYUI_URL, with what a test needs to inspect or
  break it.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import requests
from aiohttp import web
from PIL import Image

from wan_worker.comfy.client import ComfyClient
from wan_worker.comfy.process import ComfyProcess
from wan_worker.settings.worker import WorkerSettings
from wan_worker.worker import Worker
from wan_worker.workflow import load_template

PROJECT = Path(__file__).resolve().parent.parent
#: How often `wait_for` looks again: short, so a test goes on as soon as the state shows.
POLL_S = 0.02

T = TypeVar("T")


def free_port() -> int:
    """A loopback port free now, for a server the test is about to start on it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def closed_port() -> int:
    """A loopback port nothing listens on (connection refused)."""
    return free_port()


def tcp_ports(pid: int) -> frozenset[int]:
    """The local ports of a live process's TCP sockets, from Linux's /proc: the socket inodes
    its file descriptors point to, looked up in the TCP tables of the test's own network."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:  # closed since the listing
            continue
        if target.startswith("socket:["):
            inodes.add(target.removeprefix("socket:[").removesuffix("]"))
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text(encoding="ascii").splitlines()[1:]:
            fields = line.split()  # sl local_address rem_address st ... uid timeout inode
            if fields[9] in inodes:
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return frozenset(ports)


def make_png(
    width: int = 160, height: int = 128, color: tuple[int, int, int] = (200, 80, 40)
) -> bytes:
    """A real PNG with a gradient, so frames built from it are not flat."""
    image = Image.new("RGB", (width, height), color)
    pixels = image.load()
    for x in range(width):
        for y in range(0, height, 4):
            pixels[x, y] = (x * 255 // width, y * 255 // height, 128)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def small_job(name: str) -> dict[str, Any]:
    """A valid 128x128 job with a PNG start image: quick on the double."""
    return {
        "id": name,
        "input": {
            "start_image": base64.b64encode(make_png(144, 128)).decode(),
            "prompt": "a boat drifts across a calm lake",
            "width": 128,
            "height": 128,
            "seed": 11,
        },
    }


def at_stage(worker: Worker, stage: str | None, action: Callable[[], None]) -> dict[str, float]:
    """Run `action` once, when the job reaches `stage` (None: at its first progress event); the
    returned dict gets the time it ran at, taken just before it."""
    fired: dict[str, float] = {}

    def on_progress(_job: dict[str, Any], payload: dict[str, Any]) -> None:
        if stage in (None, payload["stage"]) and not fired:
            fired["at"] = time.monotonic()
            action()

    worker.send_progress = on_progress
    return fired


@contextmanager
def serve(app: web.Application) -> Iterator[str]:
    """Serve `app` on 127.0.0.1 at a free port; yield its base URL once it listens."""
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app)
    started = threading.Event()
    port: list[int] = []

    async def start() -> None:
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port.append(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
        started.set()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(start())
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    if not started.wait(timeout=10):
        raise RuntimeError("the test HTTP server did not start")
    try:
        yield f"http://127.0.0.1:{port[0]}"
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


def wait_for(
    found: Callable[[], T | None],
    what: str,
    *,
    timeout_s: float = 60.0,
    gone: Callable[[], bool] = lambda: False,
    context: Callable[[], str] = lambda: "",
) -> T:
    """What `found()` returns once it is not None: poll the state the test waits for (a line
    in a log, a file, an answer) until it shows. Fails, naming `what` with `context()` (a log
    tail), once `gone()` says it can no longer come (the process that would produce it has
    exited) or after `timeout_s`, which is only a bound for a hung test, never a delay to wait
    out: the test goes on as soon as the state shows."""
    deadline = time.monotonic() + timeout_s
    while True:
        # Ask `gone` first: state written just before the process exited is still found.
        over = gone() or time.monotonic() >= deadline
        value = found()
        if value is not None:
            return value
        if over:
            break
        time.sleep(POLL_S)
    raise AssertionError(f"never saw {what}\n{context()}")


@dataclass
class ComfyServer:
    """A ComfyUI endpoint for a test, with what the test needs to inspect or break it."""

    url: str
    root: Path
    pid_file: Path
    log_file: Path
    proc: subprocess.Popen[bytes] | None
    is_double: bool

    def set_fault(self, **fault: Any) -> None:
        if not self.is_double:
            pytest.skip("fault injection needs the ComfyUI double")
        requests.post(f"{self.url}/__double__/fault", json=fault, timeout=5).raise_for_status()

    def prompts_received(self) -> int:
        return int(
            requests.get(f"{self.url}/__double__/stats", timeout=5).json()["prompts_received"]
        )

    def alive(self) -> bool:
        return ComfyProcess(self.pid_file, self.log_file).state().alive

    def job_files(self) -> list[Path]:
        """Files any job left in input/ and output/ (the double starts with both empty)."""
        found = []
        for folder in ("input", "output"):
            base = self.root / folder
            found += [p for p in base.rglob("*") if p.is_file() and "wan-i2v" in str(p)]
        return found

    def signal(self, signum: int) -> None:
        """Send a signal to the ComfyUI process (SIGKILL to crash it, SIGSTOP to hang it)."""
        os.kill(int(self.pid_file.read_text()), signum)

    def restart(self) -> None:
        """Bring ComfyUI back after a crash: a new double on the same port, or COMFYUI_RESTART."""
        if self.is_double:
            stop(self)
            port = int(self.url.rsplit(":", 1)[1])
            fresh = start_double(self.root.parent, port=port)
            self.proc = fresh.proc
            return
        command = os.environ.get("COMFYUI_RESTART")
        if not command:
            pytest.skip("restarting a real ComfyUI needs COMFYUI_RESTART (a command)")
        subprocess.run(["bash", "-c", command], check=True, timeout=600)

    def settings(self, **overrides: Any) -> WorkerSettings:
        values: dict[str, Any] = {
            "comfyui_url": self.url,
            "comfyui_dir": self.root,
            "comfyui_pid_file": self.pid_file,
            "comfyui_log": self.log_file,
            "attention": "sdpa",
            "ready_timeout_s": 30.0,
            "job_timeout_s": 60.0 if self.is_double else 900.0,
        }
        values.update(overrides)
        return WorkerSettings(**values)

    def worker(self, **overrides: Any) -> Worker:
        settings = self.settings(**overrides)
        return Worker(
            settings=settings,
            template=load_template(settings.workflow_path),
            client=ComfyClient(
                settings.comfyui_url, ComfyProcess(settings.comfyui_pid_file, settings.comfyui_log)
            ),
        )

    def env(self) -> dict[str, str]:
        return {
            "COMFYUI_URL": self.url,
            "COMFYUI_DIR": str(self.root),
            "COMFYUI_PID_FILE": str(self.pid_file),
            "COMFYUI_LOG": str(self.log_file),
            "ATTENTION": "sdpa",
        }


def start_double(
    tmp: Path,
    fault: dict[str, Any] | None = None,
    port: int = 0,
    env: dict[str, str] | None = None,
) -> ComfyServer:
    """The double in a subprocess, returned once it listens (it prints `READY <port>`)."""
    root = tmp / "comfyui"
    root.mkdir(parents=True, exist_ok=True)
    pid_file, log_file = tmp / "comfyui.pid", tmp / "comfyui.log"
    with log_file.open("ab") as log_handle:  # the double keeps its own copy
        proc = subprocess.Popen(
            [
                sys.executable, "-m", "tests.comfy_double", "--root", str(root),
                "--port", str(port), "--pid-file", str(pid_file),
                "--fault", json.dumps(fault or {}),
            ],
            cwd=PROJECT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=log_handle,
        )  # fmt: skip
    assert proc.stdout is not None
    for raw in proc.stdout:
        line = raw.decode().strip()
        if line.startswith("READY "):
            port = int(line.split()[1])
            break
    else:
        raise RuntimeError(f"the ComfyUI double did not start: {log_file.read_text()}")
    return ComfyServer(f"http://127.0.0.1:{port}", root, pid_file, log_file, proc, True)


def stop(server: ComfyServer) -> None:
    if server.proc is not None and server.proc.poll() is None:
        server.proc.send_signal(signal.SIGTERM)
        try:
            server.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait()
    if server.proc is not None and server.proc.stdout is not None:
        server.proc.stdout.close()
