"""Faults outside the job: a full disk, and secrets that must never leak into errors or logs."""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import requests

from tests.conftest import ComfyServer, make_png
from tests.test_local_api import free_port
from wan_worker.errors import error_result
from wan_worker.handler import handle

PROJECT = Path(__file__).resolve().parent.parent


def can_mount_tmpfs(where: Path) -> bool:
    if shutil.which("unshare") is None:
        return False
    where.mkdir(parents=True, exist_ok=True)
    probe = subprocess.run(
        ["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=64k tmpfs {where}"],
        capture_output=True,
        check=False,
    )
    return probe.returncode == 0


def test_a_full_disk_is_a_clear_error_and_the_next_job_runs(tmp_path: Path):
    """The double and the worker share a mount namespace whose output/ is a 700 kB tmpfs."""
    if not can_mount_tmpfs(tmp_path / "probe"):
        pytest.skip("this machine cannot mount a tmpfs in a user namespace (unshare -rm)")
    root = tmp_path / "comfyui"
    (root / "output").mkdir(parents=True)
    api_port, comfy_port = free_port(), free_port()
    pid_file = tmp_path / "comfyui.pid"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("RUNPOD_")},
        "ROOT": str(root),
        "PY": sys.executable,
        "COMFYUI_URL": f"http://127.0.0.1:{comfy_port}",
        "COMFYUI_DIR": str(root),
        "COMFYUI_PID_FILE": str(pid_file),
        "COMFYUI_LOG": str(tmp_path / "comfyui.log"),
        "ATTENTION": "sdpa",
        "PYTHONUNBUFFERED": "1",
    }
    script = (
        'mount -t tmpfs -o size=700k tmpfs "$ROOT/output" && '
        f'"$PY" -m tests.comfy_double --root "$ROOT" --port {comfy_port} '
        '--pid-file "$COMFYUI_PID_FILE" 2>"$COMFYUI_LOG" >/dev/null & '
        f'exec "$PY" rp_handler.py --rp_serve_api --rp_api_host 127.0.0.1 --rp_api_port {api_port}'
    )
    proc = subprocess.Popen(
        ["unshare", "-rm", "bash", "-c", script],
        cwd=PROJECT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    for line in proc.stdout:  # the worker logs this once its HTTP API listens
        if "Uvicorn running on" in line:
            break
    threading.Thread(target=proc.stdout.read, daemon=True).start()
    api = f"http://127.0.0.1:{api_port}/runsync"
    image = base64.b64encode(make_png()).decode()
    try:
        big = requests.post(
            api,
            json={"input": {"start_image": image, "prompt": "p", "width": 720, "height": 1280}},
            timeout=300,
        ).json()
        assert big["status"] == "FAILED"
        assert "ComfyUI's disk is full" in big["error"]
        assert "No space left on device" in big["error"]
        small = requests.post(
            api,
            json={"input": {"start_image": image, "prompt": "p", "width": 128, "height": 128}},
            timeout=300,
        ).json()
        assert small["status"] == "COMPLETED", small
        assert len(base64.b64decode(small["output"]["video"])) == small["output"]["bytes"]
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        if pid_file.exists():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid_file.read_text()), signal.SIGTERM)


SECRETS = {
    "HF_TOKEN": "hf_SECRETTOKEN1234567890",
    "R2_SECRET_KEY": "r2-secret-0987654321abcdef",
    "BUCKET_SECRET_ACCESS_KEY": "bucket-secret-55555",
}


def test_secrets_never_appear_in_errors_outputs_or_logs(
    comfy_double: ComfyServer, monkeypatch, caplog
):
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    caplog.set_level(logging.DEBUG)
    worker = comfy_double.worker()
    url = f"https://user:{SECRETS['HF_TOKEN']}@127.0.0.1/x.png?token={SECRETS['R2_SECRET_KEY']}"
    results = [handle({"id": "s1", "input": {"start_image": url, "prompt": "p"}}, worker)]
    # A failure whose own text carries a secret (as a library's exception might) is redacted.
    results.append(
        error_result(RuntimeError(f"auth failed for {SECRETS['BUCKET_SECRET_ACCESS_KEY']}"))
    )
    comfy_double.set_fault(error_at="420:12", message=f"loading failed: {SECRETS['HF_TOKEN']}")
    results.append(
        handle(
            {
                "id": "s2",
                "input": {
                    "start_image": base64.b64encode(make_png()).decode(),
                    "prompt": "p",
                    "width": 128,
                    "height": 128,
                },
            },
            worker,
        )
    )
    text = json.dumps(results) + caplog.text
    for value in SECRETS.values():
        assert value not in text
    assert "[redacted]" in json.dumps(results[1:])
    assert [r["error_code"] for r in results] == [
        "invalid_input",
        "internal_error",
        "execution_error",
    ]
