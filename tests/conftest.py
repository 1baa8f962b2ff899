"""Shared fixtures: a ComfyUI to talk to (the double, or a real one from COMFYUI_URL), images,
and a record of the files the provisioner hashes. The helpers they use, and tests import, are
in tests/support.py.

A test not marked `integration` is a unit test, and this file holds it to that: while its
fixtures are set up and while it runs, starting a subprocess or listening on a socket fails it,
with a message that says to mark it (pyproject.toml, [tool.pytest]). So `scripts/test.sh
--fast`, which runs the unit tests alone, leaves out every test that starts something.

Integration tests take the `comfy` fixture. Without COMFYUI_URL it is the protocol-faithful
double in a subprocess; with COMFYUI_URL (and COMFYUI_DIR, the folder that holds that
ComfyUI's input/ and output/) the same tests run against the real server.
"""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest

from tests.support import ComfyServer, make_png, start_double, stop
from wan_worker.provision import verify

REAL_COMFYUI_URL = os.environ.get("COMFYUI_URL", "").rstrip("/")


class StartedInAUnitTest(RuntimeError):
    """A test without the `integration` marker started a process or a server."""


def _refused(what: str) -> Callable[..., NoReturn]:
    def refuse(*_args: Any, **_kwargs: Any) -> NoReturn:
        raise StartedInAUnitTest(
            f"this unit test {what}: mark it @pytest.mark.integration (or the whole file with "
            "pytestmark = pytest.mark.integration), or test the code without it"
        )

    return refuse


#: Every way a test could start a process, and the one way it could start a server.
_STARTERS: tuple[tuple[Any, str, str], ...] = (
    (subprocess.Popen, "_execute_child", "started a subprocess"),
    (os, "fork", "forked"),
    (os, "forkpty", "forked"),
    (os, "posix_spawn", "started a process"),
    (os, "posix_spawnp", "started a process"),
    (os, "system", "started a shell"),
    (socket.socket, "listen", "listened on a socket (started a server)"),
)


def _unit_only(item: pytest.Item) -> Iterator[None]:
    if item.get_closest_marker("integration") is not None:
        yield
        return
    with pytest.MonkeyPatch.context() as patch:
        for owner, name, what in _STARTERS:
            patch.setattr(owner, name, _refused(what))
        yield


# Setup (fixtures, a module-scoped server among them) and the test itself; not teardown, where
# a unit test may be the one that ends a module's server (nginx stops through its own binary).
@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    yield from _unit_only(item)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    yield from _unit_only(item)


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
