"""Shared fixtures: a ComfyUI to talk to (the double, or a real one from COMFYUI_URL), images,
and a record of the files the provisioner hashes.

Integration tests take the `comfy` fixture. Without COMFYUI_URL it is the protocol-faithful
double in a subprocess; with COMFYUI_URL (and COMFYUI_DIR, the folder that holds that
ComfyUI's input/ and output/) the same tests run against the real server.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from PIL import Image

from wan_worker.comfy.client import ComfyClient
from wan_worker.comfy.process import ComfyProcess
from wan_worker.provision import verify
from wan_worker.settings.worker import WorkerSettings
from wan_worker.worker import Worker
from wan_worker.workflow import load_template

PROJECT = Path(__file__).resolve().parent.parent
REAL_COMFYUI_URL = os.environ.get("COMFYUI_URL", "").rstrip("/")


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


@pytest.fixture(scope="session")
def png_bytes() -> bytes:
    return make_png()


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
    root = tmp / "comfyui"
    root.mkdir(parents=True, exist_ok=True)
    pid_file, log_file = tmp / "comfyui.pid", tmp / "comfyui.log"
    log_handle = log_file.open("ab")
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "tests.comfy_double", "--root", str(root), "--port", str(port),
            "--pid-file", str(pid_file), "--fault", json.dumps(fault or {}),
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


@pytest.fixture
def comfy(tmp_path: Path) -> Iterator[ComfyServer]:
    """The ComfyUI double, or the real ComfyUI at COMFYUI_URL when that is set."""
    if REAL_COMFYUI_URL:
        root = Path(os.environ.get("COMFYUI_DIR", "/opt/ComfyUI"))
        yield ComfyServer(
            REAL_COMFYUI_URL,
            root,
            Path(os.environ.get("COMFYUI_PID_FILE", str(tmp_path / "none.pid"))),
            Path(os.environ.get("COMFYUI_LOG", str(tmp_path / "none.log"))),
            None,
            False,
        )
        return
    server = start_double(tmp_path)
    yield server
    stop(server)


@pytest.fixture
def comfy_double(tmp_path: Path) -> Iterator[ComfyServer]:
    """Always the double: for tests that break ComfyUI on purpose."""
    server = start_double(tmp_path)
    yield server
    stop(server)


@pytest.fixture
def hashes(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Every file the provisioner hashes (sha256), in order."""
    seen: list[Path] = []
    real = verify.sha256_file

    def counting(path: Path) -> str:
        seen.append(path)
        return real(path)

    monkeypatch.setattr(verify, "sha256_file", counting)
    return seen
