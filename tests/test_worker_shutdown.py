"""The local API's worker (`python rp_handler.py --rp_serve_api`, README's local mode) exits
within seconds of SIGTERM or SIGINT even with a job in hand: the job is stopped (its prompt
interrupted in ComfyUI, its files removed), its request answered, and the process ends.

Without this, uvicorn, which the runpod SDK serves the local API with, waits for every open
request before it exits, and a job's request stays open until the job ends: README's
`kill %1 %2; wait` waited for the job, up to its deadline.
"""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.support import PROJECT, ComfyServer, free_port, make_png, start_double, stop

pytestmark = pytest.mark.integration  # the worker as a process, signalled


def wait_for(condition: Any, timeout_s: float, what: str) -> None:
    """Poll `condition` until it holds; fail naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout_s} s"
        time.sleep(0.05)


def answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).status_code == 200
    except requests.RequestException:
        return False


@pytest.fixture
def hanging_double(tmp_path: Path) -> Iterator[ComfyServer]:
    """The double, with a job's sampling node that runs until it is interrupted."""
    server = start_double(tmp_path, fault={"hang_at": "420:12"})
    yield server
    stop(server)


JOB = {
    "input": {
        "start_image": base64.b64encode(make_png(144, 128)).decode(),
        "prompt": "a boat drifts across a calm lake",
        "width": 128,
        "height": 128,
    }
}


def signalled_with_a_job_in_hand(
    comfyui_url: str, tmp_path: Path, signum: int, in_hand: Callable[[Path], bool]
) -> tuple[float, dict[str, Any], str]:
    """Start the local API's worker on `comfyui_url`, send it a /runsync job, send `signum`
    once `in_hand(log)` holds. Returns the seconds it took to exit, the job's answer, its log.
    """
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNPOD_", "COMFYUI_"))}
    env.update(
        COMFYUI_URL=comfyui_url,
        COMFYUI_PID_FILE=str(tmp_path / "no-such.pid"),
        JOB_TIMEOUT_S="300",
    )
    log_path = tmp_path / "worker.log"
    log = log_path.open("wb")
    worker = subprocess.Popen(
        [
            sys.executable, "rp_handler.py", "--rp_serve_api", "--rp_api_host", "127.0.0.1",
            "--rp_api_port", str(port),
        ],
        cwd=PROJECT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    answer: dict[str, Any] = {}

    def run_sync() -> None:
        reply = requests.post(f"http://127.0.0.1:{port}/runsync", json=JOB, timeout=400)
        answer.update(reply.json())

    client = threading.Thread(target=run_sync, daemon=True)
    try:
        wait_for(lambda: answers(f"http://127.0.0.1:{port}/"), 60, "the worker's API answering")
        client.start()
        wait_for(lambda: in_hand(log_path), 60, "the job reaching the worker")
        signalled = time.monotonic()
        worker.send_signal(signum)
        worker.wait(timeout=400)
        exited_in = time.monotonic() - signalled
        client.join(timeout=10)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
        log.close()
    return exited_in, answer, log_path.read_text()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_the_local_api_exits_within_seconds_with_a_job_in_comfyui(
    hanging_double: ComfyServer, tmp_path: Path, signum: int
):
    def at_the_hanging_sampler(log: Path) -> bool:
        """The worker has heard the hanging node (420:12) start, so the error names its stage.
        Signalled earlier, between stages (the sampler's set-up nodes have none), the stop
        can only say that ComfyUI was interrupted."""
        return "'stage': 'sample_high_noise'" in log.read_text()

    exited_in, answer, log = signalled_with_a_job_in_hand(
        hanging_double.url, tmp_path, signum, at_the_hanging_sampler
    )
    assert exited_in < 5, log[-3000:]
    assert answer["status"] == "FAILED", answer
    assert answer["error"].startswith("cancelled: The job was stopped during"), answer
    stats = requests.get(f"{hanging_double.url}/__double__/stats", timeout=5).json()
    assert len(stats["interrupted"]) == 1  # its prompt was interrupted in ComfyUI
    assert hanging_double.job_files() == []


def test_the_local_api_exits_within_seconds_with_a_job_waiting_for_comfyui(tmp_path: Path):
    """Nothing at COMFYUI_URL yet: the job waits for ComfyUI to start (up to 180 s)."""
    exited_in, answer, log = signalled_with_a_job_in_hand(
        f"http://127.0.0.1:{free_port()}",
        tmp_path,
        signal.SIGTERM,
        lambda log: "| Started." in log.read_text(),
    )
    assert exited_in < 5, log[-3000:]
    assert answer == {
        "id": answer["id"],
        "status": "FAILED",
        "error": "cancelled: The job was stopped while it waited for ComfyUI to answer; "
        "nothing was left running.",
    }
