"""README's local mode, run as written: the double and the worker in the background of one
shell, a job through the client, one from test_input.json through curl with the answer printed
without its video, both stopped.

Only what a test must change is changed: free ports instead of 8188 and 8000, a temporary
folder instead of /tmp, and this virtualenv instead of making one (the two setup lines).
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.media import probe
from tests.support import free_port

pytestmark = pytest.mark.integration  # README's local-mode block in a shell

ROOT = Path(__file__).resolve().parent.parent


def local_mode_block() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("### Local mode", 1)[1]
    match = re.search(r"```bash\n(.*?)```", section, flags=re.DOTALL)
    assert match is not None, "README's local mode has a bash block"
    return match.group(1)


def test_the_block_makes_the_venv_and_uses_no_jq():
    block = local_mode_block()
    lines = block.splitlines()
    assert lines[0].startswith("python3 -m venv .venv && . .venv/bin/activate")
    assert lines[1] == "pip install -r requirements-dev.txt"
    assert "jq" not in block.split()
    assert ".venv/bin/" not in "\n".join(lines[1:])  # every later command runs in the venv


def test_readme_local_mode_runs_as_written(tmp_path: Path):
    comfy_port, api_port = free_port(), free_port()
    script = "\n".join(local_mode_block().splitlines()[2:])  # the venv exists already
    script = (
        script.replace("--port 8188", f"--port {comfy_port}")
        .replace("--rp_api_host 127.0.0.1", f"--rp_api_host 127.0.0.1 --rp_api_port {api_port}")
        .replace("127.0.0.1:8000", f"127.0.0.1:{api_port}")
        .replace("/tmp/", f"{tmp_path}/")
    )
    assert "8188" not in script and "8000" not in script
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNPOD_", "COMFYUI_"))}
    env.update(
        PATH=f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin",
        COMFYUI_URL=f"http://127.0.0.1:{comfy_port}",  # README's double is on the default port
        COMFYUI_PID_FILE=str(tmp_path / "no-such.pid"),
    )
    done = subprocess.run(
        ["bash", "-e", "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    logs = "".join(p.read_text() for p in tmp_path.glob("*.log"))
    assert done.returncode == 0, done.stderr + logs[-3000:]
    # The client's lines come first; the curl's answer is the JSON object printed last.
    answer = json.loads(done.stdout[done.stdout.index("\n{") + 1 :])
    assert answer["status"] == "COMPLETED", answer
    assert "video" not in answer["output"]
    sample = json.loads((ROOT / "test_input.json").read_text())["input"]
    assert answer["output"]["frames"] == 161
    assert (answer["output"]["width"], answer["output"]["seed"]) == (
        sample["width"],
        sample["seed"],
    )
    saved = probe((tmp_path / "local.mp4").read_bytes())  # the client's video
    assert (saved.codec, saved.width, saved.height, saved.frames) == ("h264", 480, 832, 161)
    left = [p for p in (tmp_path / "comfyui").rglob("*") if p.is_file() and "wan-i2v" in str(p)]
    assert left == []  # found and removed without COMFYUI_DIR
    for port in (comfy_port, api_port):  # `kill %1 %2` stopped both
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", port)) != 0
