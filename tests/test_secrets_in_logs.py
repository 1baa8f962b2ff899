"""A secret carried by an exception raised deep inside the worker reaches no log line and no
result: the real processes (the handler's entry, the provisioning CLI) run with secrets in
their environment, a deep function fails with a message quoting them (as a library's error
might quote a header or a URL), and everything the process writes is searched for them.

The failures are planted by a few lines run before the entry point (`PLANT`), the only thing
that differs from how start.sh runs these processes.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.provision_servers import FlakyFileServer, make_blob, running, url_model, write_manifest
from tests.support import ComfyServer, make_png

pytestmark = pytest.mark.integration  # the worker and a loopback file server

PROJECT = Path(__file__).resolve().parent.parent
SECRETS = {
    "HF_TOKEN": "hf_plantedTOKEN0123456789abcdef",
    "BUCKET_SECRET_ACCESS_KEY": "bucket-planted-secret-6789",
    "R2_SECRET_KEY": "r2-planted-secret-abcdef",
}

# A failure two exceptions deep: the outer one quotes HF_TOKEN, its cause the other secret.
PLANT = """
import os, runpy, sys

def fail(*_args, **_kwargs):
    try:
        raise ValueError("signature mismatch for key " + os.environ[{other!r}])
    except ValueError as exc:
        raise RuntimeError("request with Authorization: Bearer " + os.environ["HF_TOKEN"]) from exc

import {module} as target
target.{name} = fail
{run}
"""


def planted(module: str, name: str, other: str, run: str) -> str:
    return PLANT.format(module=module, name=name, other=other, run=run)


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        for name, value in SECRETS.items():
            assert value not in text, f"{name} leaked"


def test_a_secret_in_a_failure_deep_in_a_job_is_in_no_log_line_and_no_result(
    comfy_double: ComfyServer,
):
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNPOD_")}
    env.update(comfy_double.env())
    env.update(SECRETS, PYTHONPATH=str(PROJECT), PYTHONUNBUFFERED="1")
    # Output storage configured but off: the bucket secret is in the environment only.
    env.update(BUCKET_NAME="b", BUCKET_ACCESS_KEY_ID="AKIAPLANTED", UPLOAD_OUTPUTS="0")
    job = {
        "input": {
            "start_image": base64.b64encode(make_png()).decode(),
            "prompt": "waves roll in",
            "width": 128,
            "height": 128,
        }
    }
    code = planted(
        "wan_worker.video_check",  # the frame check, after ComfyUI made the video
        "_frame_stats",
        "BUCKET_SECRET_ACCESS_KEY",
        'runpy.run_path("rp_handler.py", run_name="__main__")',
    )
    done = subprocess.run(
        [sys.executable, "-c", code, "--test_input", json.dumps(job)],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    # The runpod SDK prints the job's result, and exits 1 because it is an error.
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Internal error (RuntimeError: request with Authorization: Bearer [redacted])" in (
        done.stdout
    )
    # The handler logged the whole traceback, both exceptions, with the secrets taken out.
    assert "job local_test failed unexpectedly" in done.stderr
    assert "ValueError: signature mismatch for key [redacted]" in done.stderr
    assert "RuntimeError: request with Authorization: Bearer [redacted]" in done.stderr
    assert_no_secret(done.stdout, done.stderr)


def test_a_secret_in_a_failure_deep_in_a_download_is_in_no_log_line(tmp_path: Path):
    (tmp_path / "cdn").mkdir()
    data = make_blob(tmp_path / "cdn" / "m.bin", 300_000)
    with running(FlakyFileServer(tmp_path / "cdn")) as server:
        manifest = write_manifest(
            tmp_path / "m.json",
            [url_model("loras", "m.safetensors", data, f"{server.url}/m.bin")],
        )
        env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")}
        env.update(SECRETS, PYTHONPATH=str(PROJECT), HF_ENDPOINT="http://127.0.0.1:9")
        env.update(MODELS_MANIFEST=str(manifest), MODELS_ROOT=str(tmp_path / "models"))
        code = planted(
            "wan_worker.provision.transfer",  # bytes arriving, in a download thread
            "OffsetWriter.write_at",
            "R2_SECRET_KEY",
            'runpy.run_module("wan_worker.provision", run_name="__main__", alter_sys=True)',
        )
        done = subprocess.run(
            [sys.executable, "-c", code],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    # Nothing caught it: the process ends as Python ends it, after logging the traceback.
    assert done.returncode == 1, done.stderr[-3000:]
    assert "[provision] loras/m.safetensors: downloading" in done.stderr
    assert "uncaught exception" in done.stderr
    assert "ValueError: signature mismatch for key [redacted]" in done.stderr
    assert "RuntimeError: request with Authorization: Bearer [redacted]" in done.stderr
    assert_no_secret(done.stdout, done.stderr)
    assert not (tmp_path / "models" / "loras" / "m.safetensors").exists()
