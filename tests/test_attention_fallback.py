"""SageAttention failures fall back to PyTorch attention; a failure to load ends its use.

The double fails the way ComfyUI reports it (tests/comfy_double.py, `sage_fails`): the missing
module exactly as recorded from a real ComfyUI, the CUDA failures with SageAttention's frames
in the traceback. The recorded transcript itself is classified here too.
"""

from __future__ import annotations

import base64
import json
import logging
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.media import probe
from tests.support import ComfyServer, make_png
from wan_worker.comfy import failures
from wan_worker.errors import ComfyExecutionError, SageAttentionFailed, error_result
from wan_worker.handler import handle

pytestmark = pytest.mark.integration  # the ComfyUI double in a subprocess

TRANSCRIPTS = Path(__file__).resolve().parent / "data" / "comfyui_transcripts"


def job(name: str = "sage") -> dict[str, Any]:
    return {
        "id": name,
        "input": {
            "start_image": base64.b64encode(make_png()).decode(),
            "prompt": "p",
            "width": 128,
            "height": 128,
        },
    }


def sent_prompts(comfy: ComfyServer) -> list[dict[str, Any]]:
    """Every prompt the double ran, in the order it ran them."""
    history = requests.get(f"{comfy.url}/history", timeout=10).json()
    entries = sorted(history.values(), key=lambda entry: entry["prompt"][0])
    return [entry["prompt"][2] for entry in entries]


def attention_of(prompt: dict[str, Any]) -> tuple[list[str], list[bool]]:
    return (
        [prompt[n]["inputs"]["sage_attention"] for n in ("290", "288")],
        [prompt[n]["inputs"]["enable_fp16_accumulation"] for n in ("912", "911")],
    )


def recorded_missing_module() -> dict[str, Any]:
    record = json.loads((TRANSCRIPTS / "execution_error_sageattention_missing.json").read_text())
    return next(
        entry["message"]["data"]
        for entry in record["ws_messages"]
        if entry["kind"] == "text" and entry["message"]["type"] == "execution_error"
    )


def test_the_recorded_missing_module_is_a_load_failure():
    error = failures.execution_error(recorded_missing_module())
    assert isinstance(error, SageAttentionFailed)
    assert error.load_failure and not error.refresh_worker
    assert error.reason == (
        "SageAttention could not load (node 290 PathchSageAttentionKJ: ModuleNotFoundError: "
        "No module named 'sageattention')"
    )


def test_an_ordinary_node_failure_is_no_sageattention_failure():
    record = json.loads((TRANSCRIPTS / "execution_error.json").read_text())
    data = next(
        e["message"]["data"]
        for e in record["ws_messages"]
        if e["kind"] == "text" and e["message"]["type"] == "execution_error"
    )
    error = failures.execution_error(data)
    assert type(error) is ComfyExecutionError


@pytest.mark.parametrize("kind", ["missing_module", "no_kernel"])
def test_a_load_failure_falls_back_and_the_worker_stops_trying(
    comfy_double: ComfyServer, kind: str, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.INFO, logger="wan_worker.handler")
    comfy_double.set_fault(sage_fails=kind)
    worker = comfy_double.worker(attention="sage")
    first = handle(job("first"), worker)
    assert "error" not in first, first
    assert (first["attention"], first["attention_fallback"]) == ("sdpa", True)
    assert first["fp16_accumulation"] is True  # only attention was the problem
    assert first["attention_fallback_reason"].startswith("SageAttention could not load (node ")
    assert first["attention_fallback_reason"].endswith(
        "so the job ran with PyTorch attention; this worker uses it from now on"
    )
    assert probe(base64.b64decode(first["video"])).frames == 161

    second = handle(job("second"), worker)
    assert "error" not in second, second
    assert (second["attention"], second["attention_fallback"]) == ("sdpa", True)
    assert second["attention_fallback_reason"].endswith(
        "earlier on this worker, so it uses PyTorch attention"
    )
    logged = [r.getMessage() for r in caplog.records if r.name == "wan_worker.handler"]
    assert any(
        m.startswith("job first: SageAttention could not load")
        and m.endswith("this worker uses PyTorch attention from now on")
        for m in logged
    )
    assert any(m.startswith("job second: SageAttention could not load") for m in logged)
    ran = [attention_of(p) for p in sent_prompts(comfy_double)]
    assert ran == [
        (["auto", "auto"], [True, True]),  # first job: SageAttention, failed
        (["disabled", "disabled"], [True, True]),  # first job again: PyTorch attention
        (["disabled", "disabled"], [True, True]),  # second job: not tried again
    ]
    assert comfy_double.job_files() == []


def test_the_missing_module_fails_in_the_patch_node_as_recorded(comfy_double: ComfyServer):
    """The double's failure is the real one: same node class, type, message and frames."""
    comfy_double.set_fault(sage_fails="missing_module")
    worker = comfy_double.worker(attention="sage", attention_fallback=False)
    result = handle(job(), worker)
    recorded = recorded_missing_module()
    history = requests.get(f"{comfy_double.url}/history", timeout=10).json()
    (entry,) = history.values()
    ours = dict(entry["status"]["messages"])["execution_error"]
    # Not `executed` nor `node_id`: the real run had every other node cached from the job
    # before it (it ran 290 alone), the double caches nothing.
    for key in ("node_type", "exception_type", "exception_message"):
        assert ours[key] == recorded[key], key

    def heads(trace: list[str]) -> list[str]:
        return [frame.splitlines()[0] for frame in trace]

    assert heads(ours["traceback"]) == heads(recorded["traceback"])
    assert result["error"] == (
        "execution_error: SageAttention could not load (node "
        f"{ours['node_id']} PathchSageAttentionKJ: ModuleNotFoundError: No module named "
        "'sageattention'). Set ATTENTION=sdpa, or ATTENTION_FALLBACK=1 to run such jobs again "
        "with PyTorch attention."
    )
    assert result["node_type"] == "PathchSageAttentionKJ"


def test_a_kernel_error_falls_back_for_that_job_only(comfy_double: ComfyServer):
    comfy_double.set_fault(sage_fails="kernel_error")
    worker = comfy_double.worker(attention="sage")
    for name in ("first", "second"):
        result = handle(job(name), worker)
        assert "error" not in result, result
        assert result["attention"] == "sdpa"
        reason = result["attention_fallback_reason"]
        assert reason.startswith(
            "SageAttention failed in its kernel (node 420:12 SamplerCustomAdvanced: "
            "AcceleratorError: CUDA error: too many resources requested for launch)"
        )
        assert "from now on" not in reason
    assert worker.sage_unusable is None
    ran = [attention_of(p)[0] for p in sent_prompts(comfy_double)]
    assert ran == [["auto", "auto"], ["disabled", "disabled"]] * 2  # tried again each job


def test_a_sticky_cuda_error_replaces_the_worker_instead_of_a_doomed_retry(
    comfy_double: ComfyServer,
):
    comfy_double.set_fault(sage_fails="illegal_memory_access")
    worker = comfy_double.worker(attention="sage")
    result = handle(job(), worker)
    assert result["error_code"] == "execution_error"
    assert result["refresh_worker"] is True
    assert result["error"].startswith(
        "execution_error: SageAttention failed in its kernel (node 420:12 "
        "SamplerCustomAdvanced: AcceleratorError: CUDA error: an illegal memory access was "
        "encountered). The CUDA error leaves this worker's GPU unusable"
    )
    assert len(sent_prompts(comfy_double)) == 1
    # The process is broken now, as a real one is: PyTorch attention fails too.
    again = handle(job("again"), comfy_double.worker(attention="sdpa"))
    assert again["refresh_worker"] is True
    assert "CUDA error: an illegal memory access was encountered" in again["error"]
    assert "This CUDA error leaves the worker's GPU unusable" in again["error"]
    assert comfy_double.job_files() == []


def test_without_fallback_a_sageattention_failure_says_how_to_avoid_it(
    comfy_double: ComfyServer,
):
    comfy_double.set_fault(sage_fails="no_kernel")
    worker = comfy_double.worker(attention="sage", attention_fallback=False)
    result = handle(job(), worker)
    assert result["error"].startswith(
        "execution_error: SageAttention could not load (node 420:12 SamplerCustomAdvanced: "
        "AcceleratorError: CUDA error: no kernel image is available for execution on the "
        "device). Set ATTENTION=sdpa, or ATTENTION_FALLBACK=1"
    )
    assert worker.sage_unusable is None
    assert len(sent_prompts(comfy_double)) == 1


def test_fp16_accumulation_is_set_per_model_and_can_be_turned_off(comfy_double: ComfyServer):
    on = handle(job("on"), comfy_double.worker(attention="sage"))
    off = handle(job("off"), comfy_double.worker(attention="sage", fp16_accumulation=False))
    assert (on["fp16_accumulation"], off["fp16_accumulation"]) == (True, False)
    assert [attention_of(p) for p in sent_prompts(comfy_double)] == [
        (["auto", "auto"], [True, True]),
        (["auto", "auto"], [False, False]),
    ]


def test_the_failure_result_keeps_its_fields(comfy_double: ComfyServer):
    comfy_double.set_fault(sage_fails="missing_module")
    error = failures.execution_error(recorded_missing_module())
    result = error_result(error)
    assert result["error_code"] == "execution_error"
    assert (result["node_id"], result["node_type"]) == ("290", "PathchSageAttentionKJ")
    assert result["exception_type"] == "ModuleNotFoundError"
