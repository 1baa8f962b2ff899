"""A ComfyUI that dies or stops mid-job fails the job as `comfyui_unavailable` within seconds,
in local mode (no PID file: the worker knows ComfyUI only by its address) as on RunPod (the
boot's PID file); a busy ComfyUI that sends nothing for a while but answers HTTP is followed
to the end.

The double runs as a process of its own, killed (SIGKILL) or stopped (SIGSTOP) at a chosen
point of the job; the worker runs the job in this process.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.media import probe
from tests.support import PROJECT, ComfyServer, at_stage, small_job, start_double, stop
from wan_worker.handler import handle
from wan_worker.worker import Worker

pytestmark = pytest.mark.integration  # the ComfyUI double as a process, killed and stopped


@pytest.fixture
def double(tmp_path: Path) -> Iterator[ComfyServer]:
    server = start_double(tmp_path)
    yield server
    if server.proc is not None and server.proc.poll() is None:
        server.proc.send_signal(signal.SIGCONT)
    stop(server)


def local_worker(server: ComfyServer, tmp_path: Path, **overrides: Any) -> Worker:
    """A worker as in local mode: no PID file, so only ComfyUI's address tells."""
    return server.worker(comfyui_pid_file=tmp_path / "no-such.pid", **overrides)


def test_comfyui_killed_mid_job_in_local_mode(double: ComfyServer, tmp_path: Path):
    assert double.proc is not None
    worker = local_worker(double, tmp_path, job_timeout_s=120.0)
    fired = at_stage(worker, "sample_high_noise", double.proc.kill)
    result = handle(small_job("killed"), worker)
    assert fired, "the job never reached sampling"
    assert time.monotonic() - fired["at"] < 5, "the death took too long to notice"
    assert result["error_code"] == "comfyui_unavailable", result
    assert f"ComfyUI at {double.url} refused the connection" in result["error"]
    assert "ComfyUI is no longer running" in result["error"]
    assert result["refresh_worker"] is True
    assert double.job_files() == []
    # The next job is told at once too: nothing listens there.
    started = time.monotonic()
    again = handle(small_job("after"), worker)
    assert again["error_code"] == "comfyui_unavailable"
    assert "refused the connection" in again["error"]
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("pid_file", [False, True], ids=["local-mode", "with-pid-file"])
def test_comfyui_stopped_mid_job(
    double: ComfyServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pid_file: bool
):
    monkeypatch.setattr("wan_worker.comfy.follower.STALL_S", 3.0)
    assert double.proc is not None
    proc = double.proc
    worker = (
        double.worker(job_timeout_s=120.0)
        if pid_file
        else local_worker(double, tmp_path, job_timeout_s=120.0)
    )
    fired = at_stage(worker, None, lambda: proc.send_signal(signal.SIGSTOP))
    result = handle(small_job("stopped"), worker)
    noticed = time.monotonic() - fired["at"]
    # STALL_S, then at most one probe's wait (5 s) and one check's interval (2 s) more.
    assert 2.9 <= noticed < 3.0 + 5 + 2 + 2, noticed
    assert result["error_code"] == "comfyui_unavailable", result
    assert f"ComfyUI at {double.url} stopped answering" in result["error"]
    assert "no answer to HTTP for" in result["error"]
    if pid_file:
        assert "its process is stopped (state T), as by SIGSTOP" in result["error"]
    else:
        assert "as a stopped (SIGSTOP) or hung process does" in result["error"]
    assert result["refresh_worker"] is True
    assert double.job_files() == []


def start_quiet_double(tmp_path: Path, fault: dict[str, Any]) -> subprocess.Popen[bytes]:
    """The double with no monitor broadcasts: between its messages, the socket is silent."""
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "tests.comfy_double", "--root", str(tmp_path / "comfyui"),
            "--port", "0", "--monitor-interval", "0", "--fault", json.dumps(fault),
        ],
        cwd=PROJECT,
        stdout=subprocess.PIPE,
    )  # fmt: skip
    return proc


def test_a_busy_comfyui_that_answers_http_is_followed_to_the_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Each sampling step sends nothing for longer than STALL_S, but ComfyUI's HTTP answers
    meanwhile (as ComfyUI's event loop does while a prompt computes on its own thread)."""
    monkeypatch.setattr("wan_worker.comfy.follower.STALL_S", 1.0)
    proc = start_quiet_double(tmp_path, {"step_delay_s": 2.6})
    assert proc.stdout is not None
    try:
        port = next(int(line.split()[1]) for line in proc.stdout if line.startswith(b"READY "))
        server = ComfyServer(
            f"http://127.0.0.1:{port}",
            tmp_path / "comfyui",
            tmp_path / "no-such.pid",
            tmp_path / "comfyui.log",
            proc,
            True,
        )
        silences: list[float] = []
        last = [time.monotonic()]

        def on_progress(_job: dict[str, Any], _payload: dict[str, Any]) -> None:
            now = time.monotonic()
            silences.append(now - last[0])
            last[0] = now

        worker = server.worker()
        worker.send_progress = on_progress
        result = handle(small_job("busy"), worker)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        proc.stdout.close()
    assert "error" not in result, result
    assert probe(base64.b64decode(result["video"])).frames == 161
    assert max(silences) > 2.5  # the socket was silent for over twice STALL_S


def test_the_probes_route_answers_as_comfyuis_does(double: ComfyServer):
    """GET /prompt, what the worker asks while a job's socket is quiet, as recorded from a
    real ComfyUI (tests/data/comfyui_transcripts/misc_http.json)."""
    recorded = json.loads(
        (PROJECT / "tests" / "data" / "comfyui_transcripts" / "misc_http.json").read_text()
    )["get_prompt_idle"]
    reply = requests.get(f"{double.url}/prompt", timeout=5)
    assert (reply.status_code, reply.json()) == (recorded["status"], recorded["body"])


def dead_pid() -> int:
    """The PID of a process that has ended and been reaped: nothing runs under it."""
    proc = subprocess.Popen(["true"])
    proc.wait(timeout=10)
    assert not Path(f"/proc/{proc.pid}").exists()
    return proc.pid


def test_a_pid_file_left_over_from_before_the_worker_is_ignored_with_a_warning(
    double: ComfyServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    """A worker outside the image, beside a PID file an earlier run left behind: the job runs,
    and the log names the file and what to do about it."""
    pid_file = tmp_path / "comfyui.pid"
    pid = dead_pid()
    pid_file.write_text(str(pid), encoding="ascii")
    long_ago = time.time() - 3600  # an hour before this test process started
    os.utime(pid_file, (long_ago, long_ago))
    worker = double.worker(comfyui_pid_file=pid_file)
    with caplog.at_level(logging.WARNING, logger="wan_worker.comfy.process"):
        first = handle(small_job("left-over"), worker)
        second = handle(small_job("left-over-again"), worker)
    for result in (first, second):
        assert "error" not in result, result
        assert probe(base64.b64decode(result["video"])).frames == 161
    warnings = [r.getMessage() for r in caplog.records if r.name == "wan_worker.comfy.process"]
    assert len(warnings) == 1, warnings  # once per file, not at every check
    assert f"COMFYUI_PID_FILE ({pid_file}) names pid {pid}, which is not running" in warnings[0]
    assert "Delete the file, or set COMFYUI_PID_FILE" in warnings[0]
    assert pid_file.read_text(encoding="ascii") == str(pid)  # the user's file is left alone


def test_a_pid_file_written_since_the_worker_started_is_believed(
    double: ComfyServer, tmp_path: Path
):
    """The same dead PID in a file written after the worker's process started, as the boot
    writes it: that ComfyUI died, so the job fails at once and the error names the file."""
    pid_file = tmp_path / "comfyui.pid"
    pid = dead_pid()
    pid_file.write_text(str(pid), encoding="ascii")
    worker = double.worker(comfyui_pid_file=pid_file)
    started = time.monotonic()
    result = handle(small_job("written-since"), worker)
    assert time.monotonic() - started < 5
    assert result["error_code"] == "comfyui_unavailable", result
    assert result["error"].startswith(
        f"comfyui_unavailable: ComfyUI (pid {pid}, from {pid_file}) is gone: "
    )
    assert result["refresh_worker"] is True
    assert double.job_files() == []
