"""The client's progress where its stderr goes: a bar on a terminal, plain lines in a pipe.

The client runs as a user runs it, in its own process (`python -m wan_worker.client`), against
the RunPod API double over real HTTP, with its stderr on a real pipe or on a real pty.
"""

from __future__ import annotations

import base64
import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path
from typing import Any

import pytest

from tests.runpod_double import RunPodDouble, progress
from tests.test_client import FACTS, completed, image, mp4, runpod  # noqa: F401
from wan_worker.client import ExitCode

pytestmark = pytest.mark.integration  # the client as a subprocess on a pipe and a pty

PROJECT = Path(__file__).resolve().parent.parent
ELAPSED = re.compile(r"^(\d+:)?\d\d:\d\d ")


def script(double: RunPodDouble, video: bytes) -> None:
    """A job with several polls per stage, as RunPod shows one."""
    double.add_script(
        {"status": "IN_QUEUE"},
        {"status": "IN_QUEUE"},
        {"status": "IN_PROGRESS"},
        progress("load_models", 0, 0, 0),
        progress("sample_high_noise", 1, 3, 27),
        progress("sample_high_noise", 2, 3, 40),
        progress("sample_high_noise", 3, 3, 53),
        progress("sample_low_noise", 1, 3, 66),
        progress("sample_low_noise", 2, 3, 79),
        progress("sample_low_noise", 3, 3, 91),
        progress("encode_mp4", 0, 0, 99),
        completed({**FACTS, "video": base64.b64encode(video).decode()}),
    )


def client_command(start: Path, out: Path) -> list[str]:
    return [
        sys.executable, "-m", "wan_worker.client", str(start), "p", "--out", str(out),
        "--poll-interval", "0",
    ]  # fmt: skip


def client_env(**extra: str) -> dict[str, Any]:
    return {**os.environ, "PYTHONPATH": str(PROJECT), **extra}


def test_off_a_terminal_each_stage_is_one_plain_line(
    runpod: tuple[RunPodDouble, str],  # noqa: F811
    image: Path,  # noqa: F811
    mp4: bytes,  # noqa: F811
    tmp_path: Path,
) -> None:
    double, _ = runpod
    script(double, mp4)
    out = tmp_path / "v.mp4"
    done = subprocess.run(
        client_command(image, out),
        env=client_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,  # pipes, not a terminal
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == ExitCode.OK, done.stderr
    assert out.read_bytes() == mp4
    lines = done.stderr.splitlines()
    assert lines[0] == f"job {next(iter(double.jobs))} submitted to RunPod endpoint wan-ep-1"
    assert all(ELAPSED.match(line) for line in lines[1:]), lines
    assert [ELAPSED.sub("", line) for line in lines[1:]] == [
        "waiting for a worker",
        "running",
        "load_models 0%",
        "sample_high_noise 27%",
        "sample_low_noise 66%",
        "encode_mp4 99%",
        "done",
    ]
    assert "\r" not in done.stderr and "\x1b" not in done.stderr and "|" not in done.stderr


def read_all(fd: int, proc: subprocess.Popen[bytes], timeout_s: float) -> bytes:
    """Everything written to a pty's other end until the client closes it."""
    chunks = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        try:
            data = os.read(fd, 65536)
        except OSError:  # EIO: every copy of the other end is closed
            break
        if not data:
            break
        chunks.append(data)
    else:
        proc.kill()
    return b"".join(chunks)


def test_on_a_terminal_the_bar_is_drawn(
    runpod: tuple[RunPodDouble, str],  # noqa: F811
    image: Path,  # noqa: F811
    mp4: bytes,  # noqa: F811
    tmp_path: Path,
) -> None:
    double, _ = runpod
    script(double, mp4)
    out = tmp_path / "v.mp4"
    master, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    try:
        proc = subprocess.Popen(
            client_command(image, out),
            env=client_env(TERM="xterm"),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=terminal,
        )
        os.close(terminal)
        terminal = -1
        shown = read_all(master, proc, timeout_s=120).decode()
        stdout, _ = proc.communicate(timeout=30)
    finally:
        os.close(master)
        if terminal >= 0:
            os.close(terminal)

    assert proc.returncode == ExitCode.OK, shown
    assert out.read_bytes() == mp4
    assert stdout.decode().startswith(f"saved {out} ")
    frames = re.split(r"[\r\n]+", shown)
    for label in (
        "waiting for a worker", "sample_high_noise 1/3", "sample_high_noise 2/3",
        "sample_low_noise 3/3", "encode_mp4", "done 100%|",
    ):  # fmt: skip
        assert any(frame.startswith(label) and "%|" in frame for frame in frames), label
    assert not any(ELAPSED.match(frame) for frame in frames), frames  # no plain lines
