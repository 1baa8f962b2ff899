"""The worker through the runpod SDK's own local modes: the HTTP API and test_input.json."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests

from tests.media import graph_tags, probe
from tests.support import ComfyServer, free_port, make_png

pytestmark = pytest.mark.integration  # the SDK's local API and the ComfyUI double in subprocesses

PROJECT = Path(__file__).resolve().parent.parent


def worker_env(comfy: ComfyServer) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNPOD_")}
    env.update(comfy.env())
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.fixture
def api(comfy: ComfyServer) -> Iterator[str]:
    """rp_handler.py --rp_serve_api in a subprocess; ready once uvicorn says it is listening."""
    with serve_api(worker_env(comfy)) as url:
        yield url


@contextmanager
def serve_api(env: dict[str, str]) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable, "rp_handler.py", "--rp_serve_api",
            "--rp_api_host", "127.0.0.1", "--rp_api_port", str(port),
        ],
        cwd=PROJECT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    seen: list[str] = []
    for line in proc.stdout:  # blocks until the server logs each line; ends if it exits
        seen.append(line)
        if "Uvicorn running on" in line:
            break
    else:
        raise RuntimeError("the local API did not start:\n" + "".join(seen[-40:]))
    drain = threading.Thread(target=proc.stdout.read, daemon=True)
    drain.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_runsync_returns_a_playable_mp4(api: str, comfy: ComfyServer):
    body = {
        "input": {
            "start_image": "data:image/png;base64," + base64.b64encode(make_png(200, 120)).decode(),
            "prompt": "waves roll onto the beach",
            "width": 176,
            "height": 128,
        }
    }
    reply = requests.post(f"{api}/runsync", json=body, timeout=900).json()
    assert reply["status"] == "COMPLETED", reply
    output = reply["output"]
    info = probe(base64.b64decode(output["video"]))
    assert (info.codec, info.width, info.height, info.frames) == ("h264", 176, 128, 161)
    assert output["frames"] == 161 and output["fps"] == 24.0
    assert comfy.job_files() == []


def test_without_comfyui_dir_a_local_job_still_leaves_no_files(comfy: ComfyServer):
    """README's local mode: the double's root is not /opt/ComfyUI, and nobody said so."""
    env = {k: v for k, v in worker_env(comfy).items() if k != "COMFYUI_DIR"}
    body = {
        "input": {
            "start_image": "data:image/png;base64," + base64.b64encode(make_png(64, 64)).decode(),
            "prompt": "p",
            "width": 128,
            "height": 128,
        }
    }
    with serve_api(env) as url:
        reply = requests.post(f"{url}/runsync", json=body, timeout=900).json()
        assert reply["status"] == "COMPLETED", reply
        assert comfy.job_files() == []


def test_a_default_size_request_without_storage_returns_a_video_within_runpods_limit(
    api: str, comfy: ComfyServer
):
    """The README's request: no width or height, so 720x1280, and no output storage.

    The double's 720x1280 MP4 is about 11.9 MB (15.9 MB as base64): over the inline budget,
    so the worker re-encodes it to fit. RunPod refuses /run results over 10 MB.
    """
    body = {
        "input": {
            "start_image": "data:image/png;base64," + base64.b64encode(make_png(200, 120)).decode(),
            "prompt": "she turns to the camera and smiles, hair moving in the wind",
        }
    }
    response = requests.post(f"{api}/runsync", json=body, timeout=900)
    assert len(response.content) < 10_000_000
    reply = response.json()
    around = len(response.content) - len(reply.get("output", {}).get("video", ""))
    assert around < 4000  # all but the base64: what MAX_BASE64_BYTES leaves room for
    assert reply["status"] == "COMPLETED", {k: v for k, v in reply.items() if k != "output"}
    output = reply["output"]
    video = base64.b64decode(output["video"])
    info = probe(video)
    assert (info.codec, info.width, info.height, info.frames, info.fps) == (
        "h264",
        720,
        1280,
        161,
        24.0,
    )
    assert (output["width"], output["height"], output["frames"]) == (720, 1280, 161)
    assert output["bytes"] == len(video) <= 9_500_000 * 3 // 4
    if comfy.is_double or "reencoded" in output:  # a real ComfyUI's video may fit as it is
        assert output["reencoded"] is True
        assert output["original_bytes"] > 9_500_000 * 3 // 4
        assert "configure output storage" in output["reencode_note"]
    assert graph_tags(video) == {}
    assert comfy.job_files() == []


def test_runsync_reports_input_errors(api: str):
    reply = requests.post(
        f"{api}/runsync", json={"input": {"prompt": "x", "colour": "red"}}, timeout=60
    ).json()
    assert reply["status"] == "FAILED"
    assert reply["error"].startswith("invalid_input: colour: is not a known input")
    assert "start_image: is required" in reply["error"]


def readme_failed_answer() -> dict:
    """The failed /runsync answer README.md shows."""
    readme = (PROJECT / "README.md").read_text()
    blocks = re.findall(r"```json\n(.*?)```", readme, flags=re.DOTALL)
    failed = [json.loads(b) for b in blocks if '"status": "FAILED"' in b]
    assert len(failed) == 1, "README.md shows one failed /runsync answer"
    return failed[0]


def test_a_failed_runsync_answer_is_exactly_what_readme_shows(api: str):
    shown = readme_failed_answer()
    image = "data:image/png;base64," + base64.b64encode(make_png(64, 64)).decode()
    body = {"input": {"start_image": image, "prompt": "she smiles", "seed": "12"}}
    reply = requests.post(f"{api}/runsync", json=body, timeout=60).json()
    assert set(reply) == set(shown) == {"id", "status", "error"}
    assert reply["status"] == shown["status"] == "FAILED"
    assert reply["error"] == shown["error"]
    assert reply["error"].startswith("invalid_input: seed: ")


def test_a_failed_run_at_comfyui_keeps_its_code_through_the_local_api(api: str, comfy: ComfyServer):
    comfy.set_fault(
        error_at="420:13", type="RuntimeError", message="mat1 and mat2 shapes cannot be multiplied"
    )
    image = "data:image/png;base64," + base64.b64encode(make_png(64, 64)).decode()
    body = {"input": {"start_image": image, "prompt": "x", "width": 128, "height": 128}}
    reply = requests.post(f"{api}/runsync", json=body, timeout=120).json()
    assert reply == {
        "id": reply["id"],
        "status": "FAILED",
        "error": "execution_error: ComfyUI node 420:13 (SamplerCustomAdvanced) failed: "
        "RuntimeError: mat1 and mat2 shapes cannot be multiplied",
    }


def test_test_input_json_runs_one_job_and_exits_zero(comfy_double: ComfyServer, tmp_path: Path):
    comfy = comfy_double
    shutil_copy = tmp_path / "project"
    shutil_copy.mkdir()
    sample = json.loads((PROJECT / "test_input.json").read_text())
    assert set(sample["input"]) <= {
        "start_image",
        "prompt",
        "negative_prompt",
        "seed",
        "width",
        "height",
    }
    (shutil_copy / "test_input.json").write_text(json.dumps(sample))
    done = subprocess.run(
        [sys.executable, str(PROJECT / "rp_handler.py")],
        cwd=shutil_copy,
        env={**worker_env(comfy), "PYTHONPATH": str(PROJECT)},
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "completed successfully" in done.stdout + done.stderr
    assert comfy.job_files() == []
