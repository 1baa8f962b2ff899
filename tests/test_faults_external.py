"""Faults injected from outside ComfyUI, so the same tests run against the double in CI and
against a real ComfyUI (COMFYUI_URL; COMFYUI_RESTART brings it back after the crash test).

The fault fires from the handler's own progress callback at a chosen stage: the process is
killed (SIGKILL) or frozen (SIGSTOP), or a TCP proxy between the worker and ComfyUI cuts every
connection. Each test then checks the error text, the files left, and that the next job runs.
"""

from __future__ import annotations

import base64
import signal
import time
from dataclasses import replace

import pytest

from tests.media import probe
from tests.support import ComfyServer, at_stage, small_job
from tests.tcp_proxy import proxy_to
from wan_worker.handler import handle

pytestmark = pytest.mark.integration  # the ComfyUI double behind a loopback proxy


def test_comfyui_killed_mid_job(comfy: ComfyServer):
    worker = comfy.worker()
    fired = at_stage(worker, "sample_high_noise", lambda: comfy.signal(signal.SIGKILL))
    result = handle(small_job("killed"), worker)
    reported = time.monotonic()
    assert fired, "the job never reached sampling"
    assert reported - fired["at"] < 10, "the crash took too long to notice"
    assert result["error_code"] == "comfyui_unavailable"
    assert "ComfyUI (pid " in result["error"]
    assert "The job was not completed; the worker will be replaced." in result["error"]
    assert result["refresh_worker"] is True
    assert comfy.job_files() == []
    comfy.restart()
    worker = comfy.worker()
    follow_up = handle(small_job("after-kill"), worker)
    assert "error" not in follow_up, follow_up


def test_comfyui_frozen_mid_job(comfy: ComfyServer, monkeypatch):
    monkeypatch.setattr("wan_worker.comfy.follower.INTERRUPT_GRACE_S", 3.0)
    # Ask /history during the freeze too: a server that does not answer is not yet a failure.
    monkeypatch.setattr("wan_worker.comfy.follower.HISTORY_CHECK_S", 1.0)
    timeout = 4.0 if comfy.is_double else 30.0
    # The job's deadline is what this test follows: a silence as long as STALL_S (30 s, as
    # long as the real ComfyUI's timeout here) would end the job first, as stopped (that path:
    # tests/test_comfyui_gone.py).
    monkeypatch.setattr("wan_worker.comfy.follower.STALL_S", timeout + 60.0)
    worker = comfy.worker(job_timeout_s=timeout)
    http_timeout_s = worker.client.http_timeout_s
    worker.client.http_timeout_s = 3.0
    # The first progress event: on a warm ComfyUI the loaders are cached and skipped.
    fired = at_stage(worker, None, lambda: comfy.signal(signal.SIGSTOP))
    try:
        result = handle(small_job("frozen"), worker)
    finally:
        comfy.signal(signal.SIGCONT)
    assert fired
    assert result["error_code"] == "timeout"
    assert "did not finish before its deadline" in result["error"]
    assert "did not stop when interrupted; the worker will be replaced" in result["error"]
    assert result["refresh_worker"] is True
    assert comfy.job_files() == []
    # The next job on the same worker, its usual deadline back: it runs, and afterwards no
    # file of either job is left, whatever the resumed ComfyUI made of the frozen prompt.
    worker.client.http_timeout_s = http_timeout_s
    follow_up = handle(small_job("after-freeze"), replace(worker, settings=comfy.settings()))
    assert "error" not in follow_up, follow_up
    assert probe(base64.b64decode(follow_up["video"])).frames == 161
    assert comfy.job_files() == []


def test_connections_cut_mid_job(comfy: ComfyServer):
    with proxy_to(comfy.url) as proxy:
        worker = comfy.worker(comfyui_url=proxy.url)
        fired = at_stage(worker, "sample_low_noise", proxy.drop_all)
        result = handle(small_job("cut"), worker)
        assert fired and proxy.drops >= 1
    assert "error" not in result, result
    assert probe(base64.b64decode(result["video"])).frames == 161
    assert comfy.job_files() == []
