"""The benchmark's ComfyUI process and the ports and signals around it, with real processes.

A bench run cancelled with SIGTERM (a queue runner's cancel, `timeout`) must stop the ComfyUI it
started: that ComfyUI runs in its own session, so a signal to the bench's process group does not
reach it, and a survivor would hold the port and GPU memory for the next run. A run that finds
its port taken must say so rather than time whatever answers there.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from scripts.gpu_bench import BenchError, comfyui
from tests.support import free_port

pytestmark = pytest.mark.integration  # real sockets and processes

ROOT = Path(__file__).resolve().parent.parent

# A ComfyUI that starts and never listens: it records its PID and waits to be signalled.
SILENT_MAIN = """
import os, pathlib, signal
pathlib.Path(os.environ["SILENT_COMFYUI_PID"]).write_text(str(os.getpid()))
while True:
    signal.pause()
"""


@pytest.fixture
def listener() -> Iterator[int]:
    """A real socket listening on a loopback port: the port is in use."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def silent_comfyui(tmp_path: Path) -> tuple[Path, Path]:
    """A ComfyUI folder whose main.py is SILENT_MAIN, and the file it writes its PID to."""
    comfy = tmp_path / "ComfyUI"
    comfy.mkdir()
    (comfy / "main.py").write_text(SILENT_MAIN, encoding="utf-8")
    return comfy, tmp_path / "silent.pid"


def bench_args(comfy: Path, tmp_path: Path) -> list[str]:
    """bench_gpu's arguments for one quick job on `comfy`, with no GPU and no weights."""
    return [
        "--comfyui-dir", str(comfy), "--models-root", str(tmp_path / "models"),
        "--out", str(tmp_path / "out"), "--weights", "none", "--vram-budget-mib", "0",
        "--stack", "host", "--attention", "sdpa", "--sizes", "128x128", "--jobs", "1",
        "--port", str(free_port()),
    ]  # fmt: skip


def wait_for_file(path: Path, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.is_file() and path.read_text():
            return path.read_text()
        assert proc.poll() is None, f"the bench ended early: {proc.returncode}"
        time.sleep(0.05)
    raise AssertionError(f"{path} never appeared")


def exit_status(proc: subprocess.Popen[bytes], stderr: Path, timeout: float = 60.0) -> int:
    """`proc`'s exit status; if it is still running after `timeout`, the test fails with where
    it is stuck: its signal masks, and the traceback faulthandler prints on SIGABRT."""
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        masks = [
            line
            for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines()
            if line.startswith(("SigBlk", "SigIgn", "SigCgt"))
        ]
        proc.send_signal(signal.SIGABRT)  # PYTHONFAULTHANDLER=1: a traceback of every thread
        proc.wait(timeout=30)
        raise AssertionError(
            f"still running {timeout:.0f} s after SIGTERM; {masks}\n"
            + stderr.read_text(errors="replace")[-6000:]
        ) from None


def test_a_port_in_use_stops_the_server_before_it_starts(listener, tmp_path):
    server = comfyui.ComfyServer(
        sys.executable,
        tmp_path,
        listener,
        [],
        tmp_path / "models",
        tmp_path / "comfyui.log",
        tmp_path / "comfyui.pid",
    )

    with pytest.raises(BenchError, match=f"port {listener} is in use.*pass --port"):
        server.start()
    assert server.proc is None
    assert not (tmp_path / "comfyui.pid").exists()
    assert not (tmp_path / "comfyui.log").exists()


def test_a_free_port_is_not_in_use():
    assert comfyui.port_in_use(free_port()) is False


def test_sigterm_to_the_bench_stops_the_comfyui_it_started(tmp_path):
    comfy, comfy_pid_file = silent_comfyui(tmp_path)
    out = tmp_path / "out"
    command = [sys.executable, "scripts/bench_gpu.py", *bench_args(comfy, tmp_path)]
    stderr = tmp_path / "bench.stderr"
    with stderr.open("wb") as stderr_file:
        bench = subprocess.Popen(
            command,
            cwd=ROOT,
            env={
                **os.environ,
                "SILENT_COMFYUI_PID": str(comfy_pid_file),
                "PYTHONFAULTHANDLER": "1",
            },
            stdout=subprocess.DEVNULL,
            stderr=stderr_file,
            start_new_session=True,
        )
    try:
        comfy_pid = int(wait_for_file(comfy_pid_file, bench))
        assert os.getsid(comfy_pid) != os.getsid(bench.pid)  # out of the bench's session

        os.killpg(bench.pid, signal.SIGTERM)  # as a queue runner cancels an item
        assert exit_status(bench, stderr) == 128 + signal.SIGTERM, stderr.read_text()

        with pytest.raises(ProcessLookupError):
            os.kill(comfy_pid, 0)
        assert not (out / "comfyui.pid").exists()
    finally:
        if bench.poll() is None:
            bench.kill()
            bench.wait()
        if comfy_pid_file.is_file() and comfy_pid_file.read_text():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(comfy_pid_file.read_text()), signal.SIGKILL)


def test_a_stop_as_the_server_starts_still_stops_the_comfyui_it_launched(tmp_path, monkeypatch):
    """SIGTERM's SystemExit can land as `start()` returns, before the run's cleanup is set up:
    the ComfyUI it launched must stop all the same."""
    from scripts import bench_gpu
    from scripts.gpu_bench import jobs

    comfy, comfy_pid_file = silent_comfyui(tmp_path)
    monkeypatch.setenv("SILENT_COMFYUI_PID", str(comfy_pid_file))
    args = bench_gpu.parse_args(bench_args(comfy, tmp_path))
    args.out.mkdir()
    launched: list[subprocess.Popen[bytes]] = []
    start = comfyui.ComfyServer.start

    def start_then_stopped(server: comfyui.ComfyServer) -> None:
        start(server)
        assert server.proc is not None
        launched.append(server.proc)
        wait_for_file(comfy_pid_file, server.proc)  # running, as the signal finds it
        raise SystemExit(128 + signal.SIGTERM)  # what bench_gpu's SIGTERM handler raises

    monkeypatch.setattr(comfyui.ComfyServer, "start", start_then_stopped)
    try:
        with pytest.raises(SystemExit):
            jobs.run_server(args, [(128, 128)], "sdpa", tmp_path / "workflow.json", None)
        [proc] = launched
        assert proc.poll() == -signal.SIGTERM  # stopped by the run's cleanup, and reaped
        assert not (args.out / "comfyui.pid").exists()
    finally:
        for proc in launched:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
