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

from tests.support import ComfyServer, free_port, make_png
from wan_worker.errors import error_result
from wan_worker.handler import handle

pytestmark = pytest.mark.integration  # the ComfyUI double and the worker in subprocesses

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


REAL_COMFYUI_DIR = os.environ.get("REAL_COMFYUI_DIR", "")
REAL_COMFYUI_PYTHON = os.environ.get("REAL_COMFYUI_PYTHON", "")
REAL_MODELS_ROOT = os.environ.get("REAL_MODELS_ROOT", "")
REAL = bool(REAL_COMFYUI_DIR and REAL_COMFYUI_PYTHON and REAL_MODELS_ROOT)


def comfyui_command(root: Path, port: int) -> tuple[str, Path]:
    """The shell command that runs ComfyUI in the namespace (exec'd), and its folder."""
    if REAL:
        return (
            f'cd "{REAL_COMFYUI_DIR}" && export MODELS_ROOT="{REAL_MODELS_ROOT}" && '
            f'exec "{REAL_COMFYUI_PYTHON}" main.py --cpu --listen 127.0.0.1 --port {port} '
            "--disable-auto-launch --preview-method none "
            f'--extra-model-paths-config "{PROJECT}/extra_model_paths.yaml"',
            Path(REAL_COMFYUI_DIR),
        )
    return (f'exec "$PY" -m tests.comfy_double --root "{root}" --port {port}', root)


@pytest.mark.parametrize("server", ["real" if REAL else "double"])
def test_a_full_disk_is_a_clear_error_and_the_next_job_runs(tmp_path: Path, server: str):
    """ComfyUI and the worker share a mount namespace in which ComfyUI's output/ is a small
    tmpfs; the test fills it (through /proc/<pid>/root, which shows that namespace's files)."""
    if not can_mount_tmpfs(tmp_path / "probe"):
        pytest.skip("this machine cannot mount a tmpfs in a user namespace (unshare -rm)")
    api_port, comfy_port = free_port(), free_port()
    command, comfy_dir = comfyui_command(tmp_path / "comfyui", comfy_port)
    (comfy_dir / "output").mkdir(parents=True, exist_ok=True)
    pid_file = tmp_path / "comfyui.pid"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("RUNPOD_")},
        "PY": sys.executable,
        "COMFYUI_URL": f"http://127.0.0.1:{comfy_port}",
        "COMFYUI_DIR": str(comfy_dir),
        "COMFYUI_PID_FILE": str(pid_file),
        "COMFYUI_LOG": str(tmp_path / "comfyui.log"),
        "ATTENTION": "sdpa",
        "JOB_TIMEOUT_S": "1800",
        "PYTHONUNBUFFERED": "1",
    }
    script = (
        f'mount -t tmpfs -o size=8m tmpfs "{comfy_dir}/output" && '
        f'(echo $BASHPID > "$COMFYUI_PID_FILE"; {command}) >"$COMFYUI_LOG" 2>&1 & '
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
    # ComfyUI's view of its output folder: the tmpfs, seen through its own mount namespace.
    output = Path(f"/proc/{int(pid_file.read_text())}/root{comfy_dir}/output")
    api = f"http://127.0.0.1:{api_port}/runsync"
    payload = {
        "input": {
            "start_image": base64.b64encode(make_png()).decode(),
            "prompt": "a lighthouse at dusk",
            "width": 128,
            "height": 128,
        }
    }
    try:
        filler = output / "filler.bin"
        with contextlib.suppress(OSError), filler.open("wb") as handle:
            while True:  # fill the tmpfs to the last block
                handle.write(b"\0" * 65536)
        full = requests.post(api, json=payload, timeout=1800).json()
        assert full["status"] == "FAILED", full
        assert "disk is full" in full["error"] and "No space left on device" in full["error"]
        filler.unlink()
        assert [p.name for p in output.rglob("*") if p.is_file()] == []
        done = requests.post(api, json=payload, timeout=1800).json()
        assert done["status"] == "COMPLETED", done
        assert len(base64.b64decode(done["output"]["video"])) == done["output"]["bytes"]
        assert [p.name for p in output.rglob("*") if p.is_file()] == []
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
