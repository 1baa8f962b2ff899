"""Another program on ComfyUI's port (a user's own ComfyUI, or any web server): the double
refuses to start and says so on stderr, naming the port and how to choose another; the worker
fails each job at once as `comfyui_unavailable`, naming COMFYUI_URL, what answered there, and
that another program may hold the port; and README's local mode, pasted into a terminal with
the port taken, shows both there and ends.
"""

from __future__ import annotations

import base64
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.boot_harness import BootRun, boot_env, hold_comfyui
from tests.support import PROJECT, make_png
from tests.test_readme_local_mode import block_for_test, paste_into_terminal
from wan_worker.comfy.client import ComfyClient
from wan_worker.comfy.process import ComfyProcess
from wan_worker.handler import handle
from wan_worker.settings.worker import WorkerSettings
from wan_worker.worker import Worker
from wan_worker.workflow import load_template

pytestmark = pytest.mark.integration  # foreign servers, the double, the boot and a shell


class NotFound(BaseHTTPRequestHandler):
    """A web server that is not ComfyUI: 404 for every path, as a static file server."""

    server_version = "OtherApp/1.0"

    def do_GET(self) -> None:
        self.send_error(404)

    do_POST = do_GET

    def log_message(self, format: str, *args: object) -> None:
        pass


def serve_foreign(port: int = 0) -> tuple[ThreadingHTTPServer, threading.Thread]:
    server = ThreadingHTTPServer(("127.0.0.1", port), NotFound)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, thread


@pytest.fixture
def foreign() -> Iterator[int]:
    """The port of a running web server that is not ComfyUI."""
    server, thread = serve_foreign()
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()
    thread.join()


def test_the_double_refuses_a_port_in_use_on_stderr(foreign: int, tmp_path: Path):
    started = time.monotonic()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.comfy_double",
            "--root",
            str(tmp_path),
            "--port",
            str(foreign),
        ],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert time.monotonic() - started < 10
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert f"port {foreign} on 127.0.0.1 is already in use" in done.stderr
    assert f"--port {foreign + 1}" in done.stderr
    assert f"COMFYUI_URL=http://127.0.0.1:{foreign + 1}" in done.stderr
    assert "READY" not in done.stdout


def test_a_job_fails_at_once_when_comfyui_url_is_not_comfyui(foreign: int, tmp_path: Path):
    settings = WorkerSettings(
        comfyui_url=f"http://127.0.0.1:{foreign}",
        comfyui_dir=tmp_path,
        comfyui_pid_file=tmp_path / "no-such.pid",
        attention="sdpa",
    )  # the default wait for ComfyUI: 180 s
    worker = Worker(
        settings=settings,
        template=load_template(settings.workflow_path),
        client=ComfyClient(settings.comfyui_url, ComfyProcess(tmp_path / "no-such.pid", tmp_path)),
    )
    job = {
        "id": "port-taken",
        "input": {
            "start_image": base64.b64encode(make_png(144, 128)).decode(),
            "prompt": "a boat drifts across a calm lake",
            "width": 128,
            "height": 128,
        },
    }
    started = time.monotonic()
    result = handle(job, worker)
    assert time.monotonic() - started < 5
    assert result["error_code"] == "comfyui_unavailable"
    assert result["error"].startswith(
        f"comfyui_unavailable: Something answers at COMFYUI_URL (http://127.0.0.1:{foreign}) "
        "but it is not ComfyUI: GET /system_stats got HTTP 404 from a server that calls "
        "itself 'OtherApp/1.0 Python/"
    )
    assert "Another program may hold the port" in result["error"]


def test_readme_local_mode_with_the_port_taken_says_so_on_the_terminal(tmp_path: Path):
    script, env, (comfy_port, _api_port) = block_for_test(tmp_path)
    server, thread = serve_foreign(comfy_port)
    try:
        shown, exited = paste_into_terminal(script, env, timeout_s=60)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    assert exited, shown[-3000:]
    assert f"comfy_double: port {comfy_port} on 127.0.0.1 is already in use" in shown
    # The client's error, then the curl's answer: both name the address and the cause.
    cause = f"Something answers at COMFYUI_URL (http://127.0.0.1:{comfy_port}) but it is not"
    assert shown.count(cause) >= 2, shown[-3000:]
    assert '"status": "FAILED"' in shown
    assert not (tmp_path / "local.mp4").exists()


def test_a_boot_whose_comfyui_port_is_taken_fails_naming_it(tmp_path: Path, foreign: int):
    """On RunPod too (start.sh's boot): the launched ComfyUI is still importing, something
    else answers on its port; the boot fails at once with that cause, not after
    COMFYUI_READY_TIMEOUT_S with 'did not answer'."""
    env = hold_comfyui(boot_env(tmp_path), tmp_path)  # ComfyUI "imports" until told
    env.update(
        SKIP_PROVISION="1",
        MODELS_ROOT=str(tmp_path / "models"),
        WARMUP="0",
        COMFYUI_URL=f"http://127.0.0.1:{foreign}",
    )
    started = time.monotonic()
    run = BootRun(env, tmp_path)
    try:
        status = run.wait(timeout_s=120)
    finally:
        run.stop()
    assert status == 1
    assert time.monotonic() - started < 30  # COMFYUI_READY_TIMEOUT_S is 60
    assert (
        f"[boot] FAILED: Something answers at COMFYUI_URL (http://127.0.0.1:{foreign}) but "
        "it is not ComfyUI: GET /system_stats got HTTP 404"
    ) in run.stderr
