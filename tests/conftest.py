"""Shared fixtures: a ComfyUI to talk to (the double, or a real one from COMFYUI_URL), images,
and a record of the files the provisioner hashes. The helpers they use, and tests import, are
in tests/support.py.

Integration tests take the `comfy` fixture. Without COMFYUI_URL it is the protocol-faithful
double in a subprocess; with COMFYUI_URL (and COMFYUI_DIR, the folder that holds that
ComfyUI's input/ and output/) the same tests run against the real server.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import ComfyServer, make_png, start_double, stop
from wan_worker.provision import verify

REAL_COMFYUI_URL = os.environ.get("COMFYUI_URL", "").rstrip("/")


@pytest.fixture(scope="session")
def png_bytes() -> bytes:
    return make_png()


@pytest.fixture
def comfy(tmp_path: Path) -> Iterator[ComfyServer]:
    """The ComfyUI double, or the real ComfyUI at COMFYUI_URL when that is set."""
    if REAL_COMFYUI_URL:
        root = Path(os.environ.get("COMFYUI_DIR", "/opt/ComfyUI"))
        yield ComfyServer(
            REAL_COMFYUI_URL,
            root,
            Path(os.environ.get("COMFYUI_PID_FILE", str(tmp_path / "none.pid"))),
            Path(os.environ.get("COMFYUI_LOG", str(tmp_path / "none.log"))),
            None,
            False,
        )
        return
    server = start_double(tmp_path)
    yield server
    stop(server)


@pytest.fixture
def comfy_double(tmp_path: Path) -> Iterator[ComfyServer]:
    """Always the double: for tests that break ComfyUI on purpose."""
    server = start_double(tmp_path)
    yield server
    stop(server)


@pytest.fixture
def hashes(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Every file the provisioner hashes (sha256), in order."""
    seen: list[Path] = []
    real = verify.sha256_file

    def counting(path: Path) -> str:
        seen.append(path)
        return real(path)

    monkeypatch.setattr(verify, "sha256_file", counting)
    return seen
