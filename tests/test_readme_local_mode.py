"""README's local mode, run as written: the double and the worker in the background of one
shell, a job through the client, one from test_input.json through curl with the answer printed
without its video, both stopped. Once as a script, and once pasted into an interactive shell
on a terminal (a pty, job control on), as a user runs it.

Only what a test must change is changed: free ports instead of 8188 and 8000, a temporary
folder instead of /tmp, and this virtualenv instead of making one (the two setup lines).
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import socket
import subprocess
import sys
import time
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


def block_for_test(tmp_path: Path) -> tuple[str, dict[str, str], tuple[int, int]]:
    """README's block without its two setup lines, on free ports and under `tmp_path`; the
    environment to run it in (this virtualenv first on PATH, as `activate` puts it); the
    double's and the API's ports."""
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
    return script + "\n", env, (comfy_port, api_port)


def test_readme_local_mode_runs_as_written(tmp_path: Path):
    script, env, ports = block_for_test(tmp_path)
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
    for port in ports:  # `kill %1 %2` stopped both
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", port)) != 0


def session_members(sid: int) -> list[int]:
    """The processes of session `sid` (the shell's, with every job it started)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[3]) == sid:  # after the state: ppid, pgrp, session
            members.append(int(stat.parent.name))
    return members


def paste_into_terminal(text: str, env: dict[str, str], timeout_s: float) -> tuple[str, bool]:
    """Paste `text` into an interactive bash on a new pty, its controlling terminal (job
    control on, as in a terminal window), then type `exit`. Returns everything the terminal
    showed, and whether the shell exited within `timeout_s`; if not, its session is killed."""
    pid, master = pty.fork()
    if pid == 0:  # the child: bash on the pty's slave side, its session leader
        os.chdir(ROOT)
        os.execvpe("bash", ["bash", "--norc", "--noprofile", "-i"], env)  # noqa: S606
    shown = bytearray()
    os.write(master, (text + "exit\n").encode())
    deadline = time.monotonic() + timeout_s
    exited = False
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the shell and every job holding the pty have gone
                chunk = b""
            if not chunk:
                exited = True
                break
            shown += chunk
    finally:
        for member in session_members(pid):
            os.kill(member, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(master)
    return shown.decode(errors="replace"), exited


def test_readme_local_mode_pasted_into_a_terminal(tmp_path: Path):
    """Job control on: a background job that touches the terminal (an ffmpeg reading it, say)
    is stopped by the shell (SIGTTIN/SIGTTOU), and the job it serves hangs."""
    script, env, ports = block_for_test(tmp_path)
    env["TERM"] = "xterm"
    started = time.monotonic()
    shown, exited = paste_into_terminal(script, env, timeout_s=60)
    elapsed = time.monotonic() - started
    logs = "".join(p.read_text() for p in tmp_path.glob("*.log"))
    assert "Stopped" not in shown, shown[-3000:]
    assert exited, f"the block did not end within 60 s:\n{shown[-3000:]}{logs[-3000:]}"
    assert elapsed < 60
    saved = probe((tmp_path / "local.mp4").read_bytes())  # the client's video
    assert (saved.codec, saved.width, saved.height, saved.frames) == ("h264", 480, 832, 161)
    assert '"status": "COMPLETED"' in shown  # the curl's answer, printed
    for port in ports:  # `kill %1 %2; wait` stopped both
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", port)) != 0
