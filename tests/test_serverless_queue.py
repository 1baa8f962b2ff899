"""The worker as RunPod runs it: a real `rp_handler.py` process, its runpod SDK taking jobs from
RunPod's worker API (tests/runpod_queue.py) and posting results back, on the ComfyUI double.

What a caller gets for a good job and a failed one, and what happens when RunPod gives up on
a job first (it was cancelled, or ran past the endpoint's execution timeout, 600 s by default):
the SDK hears it on its stop channel and cancels the job's task. The handler is a coroutine
that runs the job in a thread, so the SDK's loop is free to hear it; the job's thread then
interrupts ComfyUI and removes its files, and the worker takes the next job.
"""

from __future__ import annotations

import base64
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.media import probe
from tests.runpod_queue import RunPodQueue
from tests.support import ComfyServer, make_png
from tests.test_local_api import worker_env

# The worker in a subprocess against RunPod's queue on loopback.
pytestmark = pytest.mark.integration

PROJECT = Path(__file__).resolve().parent.parent


def job_input(**extra: object) -> dict:
    image = "data:image/png;base64," + base64.b64encode(make_png(200, 120)).decode()
    return {"start_image": image, "prompt": "waves roll in", "width": 176, "height": 128, **extra}


@contextmanager
def serverless_worker(comfy: ComfyServer, queue: RunPodQueue, log: Path) -> Iterator[None]:
    """`python rp_handler.py` as a deployed worker: RunPod's variables, no local test input."""
    env = {**worker_env(comfy), **queue.env()}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "rp_handler.py"], cwd=PROJECT, env=env, stdout=out, stderr=out
        )
        try:
            yield
        finally:
            proc.terminate()
            proc.wait(timeout=30)


@pytest.fixture
def queue() -> Iterator[RunPodQueue]:
    with RunPodQueue() as server:
        yield server


def test_a_job_from_the_queue_comes_back_completed_with_progress(
    comfy: ComfyServer, queue: RunPodQueue, tmp_path: Path
):
    with serverless_worker(comfy, queue, tmp_path / "worker.log"):
        job = queue.wait(queue.submit(job_input()), timeout_s=600)
    assert job.state == "COMPLETED", (tmp_path / "worker.log").read_text()[-3000:]
    assert job.result is not None and "error" not in job.result
    output = job.result["output"]
    info = probe(base64.b64decode(output["video"]))
    assert (info.codec, info.width, info.height, info.frames) == ("h264", 176, 128, 161)
    stages = [update["stage"] for update in job.progress]
    assert "sample_high_noise" in stages and "encode_mp4" in stages
    assert queue.pings  # the heartbeat reached RunPod
    assert comfy.job_files() == []


def test_a_job_runpod_stops_midway_is_interrupted_cleaned_and_the_next_one_runs(
    comfy_double: ComfyServer, queue: RunPodQueue, tmp_path: Path
):
    comfy = comfy_double
    comfy.set_fault(step_delay_s=2.0)  # 6 sampling steps: 12 s, past the 3 s timeout
    log = tmp_path / "worker.log"
    with serverless_worker(comfy, queue, log):
        stopped = queue.wait(queue.submit(job_input(), execution_timeout_s=3.0), timeout_s=120)
        assert stopped.state == "TIMED_OUT"
        comfy.set_fault()
        # The worker takes one job at a time: the next one runs only once the stopped one
        # has let go of ComfyUI.
        after = queue.wait(queue.submit(job_input(seed=7)), timeout_s=120)
    text = log.read_text()
    assert after.state == "COMPLETED", text[-3000:]
    assert "RunPod stopped it" in text
    assert "The job was stopped during sample_high_noise; ComfyUI was interrupted" in text
    stats = comfy_double_stats(comfy)
    assert stats["prompts_received"] == 2
    assert len(stats["interrupted"]) == 1  # the stopped job's prompt, mid-sampling
    assert stopped.result is None and stopped.late == []  # nothing posted for it afterwards
    assert comfy.job_files() == []


def comfy_double_stats(comfy: ComfyServer) -> dict:
    import requests

    return requests.get(f"{comfy.url}/__double__/stats", timeout=5).json()


def test_what_runpod_receives_for_failed_jobs(
    comfy_double: ComfyServer, queue: RunPodQueue, tmp_path: Path
):
    comfy = comfy_double
    with serverless_worker(comfy, queue, tmp_path / "worker.log"):
        bad = queue.wait(queue.submit({"prompt": "x", "colour": "red"}), timeout_s=120)
        comfy.set_fault(crash_at="420:12")
        crashed = queue.wait(queue.submit(job_input()), timeout_s=120)
    assert bad.state == "FAILED" and bad.result is not None
    assert "colour: is not a known input" in bad.result["error"]
    assert bad.result["output"]["error_code"] == "invalid_input"
    assert set(bad.result["output"]["fields"]) == {"colour", "start_image"}
    assert "stopPod" not in bad.result
    # A failure the worker cannot recover from: the SDK turns refresh_worker into stopPod.
    assert crashed.state == "FAILED" and crashed.result is not None
    assert crashed.result["output"]["error_code"] == "comfyui_unavailable"
    assert "ComfyUI (pid" in crashed.result["error"]
    assert crashed.result["stopPod"] is True
