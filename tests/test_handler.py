"""The handler end to end against ComfyUI: the double by default, a real one with COMFYUI_URL."""

from __future__ import annotations

import base64
import copy
import json
import os
import time
from pathlib import Path

import pytest

from tests.media import probe
from tests.support import ComfyServer, make_png, start_double, stop
from wan_worker.handler import handle
from wan_worker.workflow import load_template

pytestmark = pytest.mark.integration  # the ComfyUI double in a subprocess, ffmpeg


def job(**overrides) -> dict:
    payload = {
        "start_image": base64.b64encode(make_png(192, 160)).decode(),
        "prompt": "the camera slowly pushes in",
        "width": 128,
        "height": 160,
        "seed": 1234,
    }
    payload.update(overrides)
    return {"id": "test-job", "input": {k: v for k, v in payload.items() if v is not None}}


def test_a_job_returns_an_h264_mp4_and_leaves_no_files(comfy: ComfyServer):
    worker = comfy.worker()
    result = handle(job(), worker)
    assert "error" not in result, result
    video = base64.b64decode(result["video"])
    info = probe(video)
    assert (info.codec, info.width, info.height) == ("h264", 128, 160)
    assert info.frames == result["frames"] == 161
    assert info.fps == result["fps"] == 24.0
    assert result["format"] == "mp4"
    assert (result["seed"], result["width"], result["height"]) == (1234, 128, 160)
    assert result["bytes"] == len(video)
    assert result["attention"] == "sdpa"
    timings = result["timings"]
    assert timings["total_s"] >= timings["inference_s"] > 0
    assert set(timings["stages"]) >= {"sample_high_noise", "sample_low_noise", "encode_mp4"}
    assert comfy.job_files() == []


def test_progress_is_reported_in_order(comfy: ComfyServer):
    worker = comfy.worker()
    sent: list[dict] = []
    worker.send_progress = lambda _job, payload: sent.append(payload)
    result = handle(job(), worker)
    assert "error" not in result, result
    stages = [p["stage"] for p in sent]
    assert (
        stages.index("sample_high_noise")
        < stages.index("sample_low_noise")
        < stages.index("encode_mp4")
    )
    percents = [p["percent"] for p in sent]
    assert percents == sorted(percents)
    steps = [
        (p["step"], p["total"]) for p in sent if p["stage"] == "sample_low_noise" and p["total"]
    ]
    assert steps[-1][0] == steps[-1][1] > 0


def test_two_identical_jobs_without_seed_both_run(comfy: ComfyServer):
    worker = comfy.worker()
    first = handle(job(seed=None), worker)
    second = handle(job(seed=None), worker)
    assert "error" not in first and "error" not in second
    assert first["seed"] != second["seed"]
    assert base64.b64decode(first["video"])[:8] == base64.b64decode(second["video"])[:8]


def test_bad_input_never_reaches_comfyui(comfy_double: ComfyServer):
    worker = comfy_double.worker()
    for bad, text in (
        ({"prompt": ""}, "prompt: is empty"),
        ({"start_image": "%%%"}, "start_image: is not valid base64"),
        ({"width": 64}, "width: must be from 128 to 2048, got 64"),
    ):
        result = handle(job(**bad), worker)
        assert result["error_code"] == "invalid_input"
        assert text in result["error"]
    assert comfy_double.prompts_received() == 0
    assert "error" not in handle(job(), worker)


def test_a_rejected_workflow_names_node_class_and_input(comfy: ComfyServer, tmp_path):
    graph = copy.deepcopy(load_template(comfy.settings().workflow_path).graph)
    graph["907"]["inputs"]["unet_name"] = "not-provisioned.safetensors"
    path = tmp_path / "wf.json"
    path.write_text(json.dumps(graph))
    worker = comfy.worker(workflow_path=path)
    result = handle(job(), worker)
    assert result["error_code"] == "workflow_rejected"
    assert (
        "node 907 (UNETLoader) input unet_name: Value not in list: unet_name: 'not-provisioned.safetensors' not in"
        in result["error"]
    )
    assert "A model file is missing" in result["error"]
    assert comfy.job_files() == []
    assert "error" not in handle(job(), comfy.worker())


def test_a_comfyui_without_the_workers_mp4_format_is_told_where_it_comes_from(
    comfy: ComfyServer, tmp_path
):
    graph = copy.deepcopy(load_template(comfy.settings().workflow_path).graph)
    graph["906"]["inputs"]["format"] = "video/h264-mp4-gone.json"
    path = tmp_path / "wf.json"
    path.write_text(json.dumps(graph))
    result = handle(job(), comfy.worker(workflow_path=path))
    assert result["error_code"] == "workflow_rejected"
    assert "node 906 (VHS_VideoCombine) input format: Value not in list" in result["error"]
    assert "start it with the worker's extra_model_paths.yaml" in result["error"]
    assert "A model file is missing" not in result["error"]
    assert comfy.job_files() == []


def test_an_execution_error_names_the_node(comfy_double: ComfyServer):
    comfy_double.set_fault(
        error_at="420:12", type="RuntimeError", message="mat1 and mat2 shapes cannot be multiplied"
    )
    worker = comfy_double.worker()
    result = handle(job(), worker)
    assert result["error_code"] == "execution_error"
    assert result["error"] == (
        "execution_error: ComfyUI node 420:12 (SamplerCustomAdvanced) failed: RuntimeError: mat1 and mat2 shapes cannot be multiplied"
    )
    assert result["node_id"] == "420:12"
    assert comfy_double.job_files() == []
    comfy_double.set_fault()
    assert "error" not in handle(job(), worker)


def test_a_comfyui_without_ffmpeg_names_it_instead_of_waiting_out_the_deadline(tmp_path: Path):
    """VideoHelperSuite fails its node when it found no ffmpeg; the job says so at once."""
    no_ffmpeg = tmp_path / "bin"
    no_ffmpeg.mkdir()
    server = start_double(tmp_path, env={**os.environ, "PATH": str(no_ffmpeg)})
    try:
        result = handle(job(), server.worker(job_timeout_s=120))
        files = server.job_files()
    finally:
        stop(server)
    assert result["error_code"] == "execution_error", result
    assert result["node_id"] == "906"
    assert result["error"].startswith(
        "execution_error: ComfyUI node 906 (VHS_VideoCombine) failed: ProcessLookupError: "
        "ffmpeg is required for video outputs and could not be found."
    )
    assert files == []


def test_out_of_memory_during_execution_says_what_to_lower(comfy_double: ComfyServer):
    comfy_double.set_fault(
        error_at="420:13",
        type="torch.OutOfMemoryError",
        message="CUDA out of memory. Tried to allocate 1.2 GiB",
    )
    result = handle(job(), comfy_double.worker())
    assert result["error_code"] == "out_of_memory"
    assert "Lower width and height" in result["error"] and "node 420:13" in result["error"]


def test_a_dropped_websocket_does_not_lose_the_job(comfy_double: ComfyServer):
    worker = comfy_double.worker()
    for node in ("420:12", "906"):  # mid-sampling; and just before the output is reported
        comfy_double.set_fault(drop_ws_at=node)
        result = handle(job(), worker)
        assert "error" not in result, result
        assert probe(base64.b64decode(result["video"])).frames == 161
    assert comfy_double.job_files() == []


def test_a_hung_job_is_interrupted_at_the_deadline_and_the_next_job_runs(comfy_double: ComfyServer):
    comfy_double.set_fault(hang_at="420:13")
    worker = comfy_double.worker(job_timeout_s=3.0)
    started = time.monotonic()
    result = handle(job(), worker)
    elapsed = time.monotonic() - started
    assert result["error_code"] == "timeout"
    assert (
        "did not finish before its deadline during sample_low_noise; ComfyUI was interrupted"
        in result["error"]
    )
    assert "refresh_worker" not in result
    assert elapsed < 3.0 + 10
    assert comfy_double.job_files() == []
    comfy_double.set_fault()
    assert "error" not in handle(job(), worker)


def test_a_job_comfyui_cannot_stop_asks_for_a_new_worker(comfy_double: ComfyServer, monkeypatch):
    monkeypatch.setattr("wan_worker.comfy.follower.INTERRUPT_GRACE_S", 1.5)
    comfy_double.set_fault(hang_at="420:12", ignore_interrupt=True)
    result = handle(job(), comfy_double.worker(job_timeout_s=2.0))
    assert result["error_code"] == "timeout"
    assert "did not stop when interrupted; the worker will be replaced" in result["error"]
    assert result["refresh_worker"] is True


def test_comfyui_dying_mid_job_is_reported_within_seconds(comfy_double: ComfyServer):
    comfy_double.set_fault(crash_at="420:12", oom=True)
    worker = comfy_double.worker()
    started = time.monotonic()
    result = handle(job(), worker)
    assert time.monotonic() - started < 10
    assert result["error_code"] == "comfyui_unavailable"
    assert "the GPU ran out of memory" in result["error"]
    assert result["refresh_worker"] is True
    assert not comfy_double.alive()
    again = handle(job(), worker)
    assert again["error_code"] == "comfyui_unavailable" and again["refresh_worker"] is True
    assert comfy_double.job_files() == []


def test_a_comfyui_that_never_starts_fails_the_job_clearly(tmp_path):
    from tests.support import ComfyServer as Server

    server = Server(
        "http://127.0.0.1:9", tmp_path, tmp_path / "none.pid", tmp_path / "none.log", None, True
    )
    result = handle(job(), server.worker(ready_timeout_s=0.5))
    assert result["error_code"] == "comfyui_unavailable"
    assert "did not become ready within 0.5 s" in result["error"]


def test_a_job_removes_its_files_where_comfyui_keeps_them_whatever_comfyui_dir_says(
    comfy: ComfyServer, tmp_path
):
    """COMFYUI_DIR left at its default (or wrong): ComfyUI's own report of its folders leads
    the cleanup, for a finished job and for one that failed before any video existed."""
    worker = comfy.worker(comfyui_dir=tmp_path / "not-comfyui")
    result = handle(job(), worker)
    assert "error" not in result, result
    assert comfy.job_files() == []
    assert comfy.root.resolve() / "output" in worker.client.known_folders().output


def test_a_first_job_that_fails_early_leaves_no_files_either(comfy_double: ComfyServer, tmp_path):
    comfy_double.set_fault(error_at="420:12", message="boom")
    worker = comfy_double.worker(comfyui_dir=tmp_path / "not-comfyui")
    result = handle(job(), worker)
    assert result["error_code"] == "execution_error"
    uploads = list((comfy_double.root / "input").glob("wan-i2v-*"))
    assert uploads == []
    assert comfy_double.job_files() == []
