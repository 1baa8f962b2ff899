"""The client against the runpod SDK's own local API (rp_handler.py --rp_serve_api) on ComfyUI.

The local API takes the job with POST /run and runs it inside POST /status/<id> (GET answers
405); it shows no progress and cannot cancel. The client is run as a user runs it: its own
process, `python -m wan_worker.client --url ...`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tests.media import probe
from tests.support import ComfyServer, free_port, make_png
from tests.test_local_api import api  # noqa: F401 - the fixture: the SDK's local API
from wan_worker.client import ExitCode

pytestmark = pytest.mark.integration  # the client against the SDK's local API and the double

PROJECT = Path(__file__).resolve().parent.parent


def client(workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wan_worker.client", *args],
        cwd=workdir,
        env={**os.environ, "PYTHONPATH": str(PROJECT)},
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """The client's folder (tmp_path also holds the ComfyUI double's files)."""
    path = tmp_path / "work"
    path.mkdir()
    return path


@pytest.fixture
def image(workdir: Path) -> Path:
    path = workdir / "start.png"
    path.write_bytes(make_png(200, 120))
    return path


def test_the_status_route_is_post(api: str):  # noqa: F811
    job = requests.post(f"{api}/run", json={"input": {"prompt": "x"}}, timeout=30).json()
    assert job["status"] == "IN_PROGRESS"
    assert requests.get(f"{api}/status/{job['id']}", timeout=30).status_code == 405


def test_client_saves_a_playable_mp4_from_the_local_api(
    api: str,  # noqa: F811
    comfy: ComfyServer,
    image: Path,
    workdir: Path,
):
    out = workdir / "out" / "waves.mp4"
    done = client(
        workdir, "--url", api, str(image), "waves roll onto the beach",
        "--width", "176", "--height", "128", "--seed", "7", "--out", str(out),
        "--timeout", "0",  # no limit: the blocking POST /status waits as long as it takes
    )  # fmt: skip

    assert done.returncode == ExitCode.OK, done.stderr[-3000:]
    info = probe(out.read_bytes())
    assert (info.codec, info.width, info.height, info.frames) == ("h264", 176, 128, 161)
    # The worker's whole result reads as facts: no field printed as one the client lacks.
    saved, facts, times = done.stdout.splitlines()
    assert saved == f"saved {out} ({out.stat().st_size:,} bytes, from inline base64)"
    assert facts == "seed 7, 176x128, 161 frames at 24 fps, attention sdpa with fp16 accumulation"
    assert times.startswith("time: worker ")
    assert f"submitted to local API {api}" in done.stderr
    assert "running (the local API shows no progress)" in done.stderr
    assert comfy.job_files() == []


def test_client_prints_the_error_of_a_failed_local_job(api: str, image: Path, workdir: Path):  # noqa: F811
    done = client(workdir, "--url", api, str(image), "p", "--seed", "-1", "--width", "5")
    assert done.returncode == ExitCode.FAILED, done.stderr[-3000:]
    failed = [line for line in done.stderr.splitlines() if " FAILED: " in line]
    assert len(failed) == 1
    assert "seed: " in failed[0] and "width: " in failed[0]
    assert done.stdout == ""
    assert sorted(p.name for p in workdir.iterdir()) == ["start.png"]


def test_client_timeout_on_the_local_api_says_the_job_runs_on(
    api: str,  # noqa: F811
    comfy: ComfyServer,
    image: Path,
    workdir: Path,
):
    comfy.set_fault(step_delay_s=0.5)  # six sampling steps: the job takes at least 3 s
    done = client(
        workdir, "--url", api, str(image), "p", "--width", "176", "--height", "128",
        "--timeout", "0.5",
    )  # fmt: skip
    assert done.returncode == ExitCode.GAVE_UP, done.stderr[-3000:]
    assert "no result after" in done.stderr
    assert "runs on in the worker until it ends (the local API cannot cancel)" in done.stderr
    assert sorted(p.name for p in workdir.iterdir()) == ["start.png"]


def test_client_reports_a_local_api_that_is_not_there(workdir: Path, image: Path):
    done = client(workdir, "--url", f"http://127.0.0.1:{free_port()}", str(image), "p")
    assert done.returncode == ExitCode.UNREACHABLE
    assert "POST /run to local API" in done.stderr and "Connection refused" in done.stderr
