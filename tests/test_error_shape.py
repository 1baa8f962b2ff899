"""What a caller receives for a failed job, through the runpod SDK's own job runner.

`rp_job.run_job` is the function the SDK runs every job through, on RunPod and in its local
API alike: it pops `error` and `refresh_worker` from the handler's dict and keeps the rest as
`output`. The local API's side (`/runsync`) is in tests/test_local_api.py.
"""

from __future__ import annotations

import asyncio
import base64
import signal
from functools import partial
from typing import Any

import pytest
from runpod.serverless.modules.rp_job import run_job

from tests.support import ComfyServer, make_png
from wan_worker.handler import handle
from wan_worker.worker import Worker

pytestmark = pytest.mark.integration  # the ComfyUI double in a subprocess


def sdk_run(worker: Worker, job_input: Any) -> dict[str, Any]:
    """The job as the SDK runs it: what it sends to RunPod (or the local API) afterwards."""
    job = {"id": "sdk-job", "input": job_input}
    result: dict[str, Any] = asyncio.run(run_job(partial(handle, worker=worker), job))
    return result


def good_input(**changes: Any) -> dict[str, Any]:
    payload = {
        "start_image": base64.b64encode(make_png(160, 128)).decode(),
        "prompt": "leaves drift in the wind",
        "width": 128,
        "height": 128,
    }
    payload.update(changes)
    return payload


def test_an_input_error_starts_with_its_code_and_keeps_its_fields_in_output(
    comfy_double: ComfyServer,
):
    result = sdk_run(comfy_double.worker(), good_input(seed="12", width=100))
    assert set(result) == {"error", "output"}
    assert result["error"] == (
        "invalid_input: seed: must be an integer, got a string ('12'). Send a whole number, "
        "or omit seed for a random one. width: must be from 128 to 2048, got 100. Send a whole "
        "number of pixels from 128 to 2048; it is rounded to a multiple of 16. start_image: was "
        "not checked, because the other fields must be fixed first. It is fetched or decoded "
        "only for a job whose other fields are valid."
    )
    assert result["output"] == {
        "error_code": "invalid_input",
        "field": "seed",
        "fields": ["seed", "width"],
    }
    assert comfy_double.prompts_received() == 0


def test_an_execution_error_keeps_node_id_and_type_in_output(comfy_double: ComfyServer):
    comfy_double.set_fault(error_at="323", type="RuntimeError", message="shape mismatch")
    result = sdk_run(comfy_double.worker(), good_input())
    assert result["error"] == (
        "execution_error: ComfyUI node 323 (VAEDecode) failed: RuntimeError: shape mismatch"
    )
    assert result["output"] == {
        "error_code": "execution_error",
        "node_id": "323",
        "node_type": "VAEDecode",
        "exception_type": "RuntimeError",
    }
    assert "stopPod" not in result


def test_a_dead_comfyui_asks_the_sdk_to_stop_the_worker(comfy_double: ComfyServer):
    comfy_double.signal(signal.SIGKILL)
    assert comfy_double.proc is not None
    comfy_double.proc.wait(timeout=10)
    result = sdk_run(comfy_double.worker(), good_input())
    assert result["error"].startswith("comfyui_unavailable: ComfyUI (pid ")
    assert result["output"] == {"error_code": "comfyui_unavailable"}
    assert result["stopPod"] is True  # the SDK's form of refresh_worker


def test_an_unexpected_exception_is_an_internal_error_with_its_code(comfy_double: ComfyServer):
    worker = comfy_double.worker()

    def broken_upload(*_args: Any, **_kwargs: Any) -> str:
        raise KeyError("name")

    worker.client.upload_image = broken_upload  # type: ignore[method-assign]
    result = sdk_run(worker, good_input())
    assert result["error"].startswith("internal_error: Internal error (KeyError: 'name').")
    assert result["output"] == {"error_code": "internal_error"}
