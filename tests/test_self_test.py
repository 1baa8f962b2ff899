"""SELF_TEST=1: start.sh writes synthetic weights, starts a real ComfyUI and runs one job.

This needs a real ComfyUI checkout with the nine custom nodes and a Python environment with
torch for it, so it runs only when both are given:

    REAL_COMFYUI_DIR=/path/to/ComfyUI REAL_COMFYUI_PYTHON=/path/to/venv/bin/python \
    [REAL_MODELS_ROOT=/path/to/cache] scripts/test.sh tests/test_self_test.py

On a CPU it takes a few minutes, most of it the text encoder on the first prompt. In the image
the same switch is what the RunPod Hub test and a post-deploy check use.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import free_port

ROOT = Path(__file__).resolve().parent.parent
COMFYUI_DIR = os.environ.get("REAL_COMFYUI_DIR", "")
COMFYUI_PYTHON = os.environ.get("REAL_COMFYUI_PYTHON", "")
MODELS_ROOT = os.environ.get("REAL_MODELS_ROOT", "")

pytestmark = [
    pytest.mark.integration,  # start.sh and a real ComfyUI
    pytest.mark.skipif(
        not (COMFYUI_DIR and COMFYUI_PYTHON),
        reason="needs REAL_COMFYUI_DIR and REAL_COMFYUI_PYTHON (a real ComfyUI with the nodes)",
    ),
]


def test_self_test_boots_on_synthetic_weights_and_runs_a_job(tmp_path: Path):
    port = free_port()
    pid_file = tmp_path / "comfyui.pid"
    job = {
        "input": {
            "start_image": json.loads((ROOT / "test_input.json").read_text())["input"][
                "start_image"
            ],
            "prompt": "self-test",
            "width": 128,
            "height": 128,
            "seed": 7,
        }
    }
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("RUNPOD_")},
        "APP_DIR": str(ROOT),
        "COMFYUI_DIR": COMFYUI_DIR,
        "PYTHON": sys.executable,
        "COMFYUI_PYTHON": COMFYUI_PYTHON,
        "COMFYUI_URL": f"http://127.0.0.1:{port}",
        "COMFYUI_EXTRA_ARGS": "--cpu",
        "COMFYUI_PID_FILE": str(pid_file),
        "COMFYUI_LOG": str(tmp_path / "comfyui.log"),
        "SKIP_GPU_CHECK": "1",
        "SELF_TEST": "1",
        "SELF_TEST_MODELS_ROOT": MODELS_ROOT or str(tmp_path / "models"),
        "ATTENTION": "sdpa",
        "JOB_TIMEOUT_S": "1500",
    }
    # Output goes to a file: ComfyUI, started by start.sh, outlives the handler and would hold
    # a pipe open.
    log_path = tmp_path / "boot.log"
    with log_path.open("wb") as log_file:
        boot = subprocess.Popen(
            ["bash", str(ROOT / "start.sh"), "--test_input", json.dumps(job)],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        try:
            returncode = boot.wait(timeout=2400)
        finally:
            boot.kill()
            if pid_file.exists():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid_file.read_text()), signal.SIGTERM)
    log = log_path.read_text(errors="replace")
    assert returncode == 0, log[-4000:]
    assert "SELF_TEST is set: writing tiny synthetic weights" in log
    assert "completed successfully" in log
    assert "'frames': 161" in log and "'format': 'mp4'" in log
