"""scripts/test.sh finds its tools in the project's virtualenv, activated or not (README).

The script runs in a copy of the project whose `.venv/bin` holds stand-ins for every tool; each
writes its name to a log. The shell's PATH has only the system's folders, as in a new shell.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration  # scripts/test.sh in a subprocess

ROOT = Path(__file__).resolve().parent.parent
TOOLS = ("ruff", "mypy", "hadolint", "shellcheck", "actionlint", "check-jsonschema", "python")
SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"


def fake_virtualenv(folder: Path, log: Path) -> None:
    bin_dir = folder / "bin"
    bin_dir.mkdir(parents=True)
    for tool in TOOLS:
        stub = bin_dir / tool
        stub.write_text(f'#!/bin/sh\necho "{folder.name}:{tool} $*" >> "{log}"\n')
        stub.chmod(0o755)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    copy = tmp_path / "project"
    (copy / "scripts").mkdir(parents=True)
    shutil.copy(ROOT / "scripts" / "test.sh", copy / "scripts" / "test.sh")
    (copy / "start.sh").write_text("#!/bin/sh\n")
    return copy


def run(project: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PATH")}
    return subprocess.run(
        ["/bin/bash", "scripts/test.sh", *(args or ("-q",))],
        cwd=project,
        env={**clean, "PATH": SYSTEM_PATH, **env},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_the_projects_venv_is_used_without_activation(project: Path, tmp_path: Path):
    log = tmp_path / "calls.log"
    fake_virtualenv(project / ".venv", log)
    done = run(project)
    assert done.returncode == 0, done.stderr
    calls = log.read_text().splitlines()
    assert [c.split()[0] for c in calls] == [
        ".venv:ruff", ".venv:ruff", ".venv:mypy", ".venv:hadolint", ".venv:shellcheck",
        ".venv:actionlint", ".venv:check-jsonschema", ".venv:python",
    ]  # fmt: skip
    assert calls[-1] == ".venv:python -m pytest -q"


def test_an_active_virtualenv_wins(project: Path, tmp_path: Path):
    log = tmp_path / "calls.log"
    fake_virtualenv(project / ".venv", log)
    other = tmp_path / "other"
    fake_virtualenv(other, log)
    done = run(project, VIRTUAL_ENV=str(other))
    assert done.returncode == 0, done.stderr
    assert {c.split(":")[0] for c in log.read_text().splitlines()} == {"other"}


def test_fast_runs_the_unit_tests_alone_without_the_linters(project: Path, tmp_path: Path):
    log = tmp_path / "calls.log"
    fake_virtualenv(project / ".venv", log)
    done = run(project, "--fast", "-x")
    assert done.returncode == 0, done.stderr
    assert log.read_text().splitlines() == [".venv:python -m pytest -m not integration -x"]


UNIT_AND_INTEGRATION = """
import socket
import subprocess
import sys

import pytest


@pytest.fixture(scope="module")
def listening():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock


def test_unit_runs_a_process():
    subprocess.run(["true"], check=True)


def test_unit_starts_a_server():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()


def test_unit_uses_a_fixture_that_starts_a_server(listening):
    pass


def test_unit_computes():
    assert sum(range(4)) == 6


@pytest.mark.integration
def test_integration_runs_a_process_and_a_server():
    subprocess.run(["true"], check=True)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
"""


def test_a_unit_test_that_starts_a_process_or_a_server_fails_and_says_to_mark_it(tmp_path):
    (tmp_path / "test_kinds.py").write_text(UNIT_AND_INTEGRATION)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-c", str(ROOT / "pyproject.toml"), "-p",
         "tests.conftest", "-p", "no:cacheprovider", "-rA", str(tmp_path / "test_kinds.py")],
        cwd=ROOT, capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    lines = done.stdout.splitlines()
    outcome = {
        line.split("::")[1].split()[0]: line.split()[0]
        for line in lines
        if line.startswith(("PASSED", "FAILED", "ERROR"))
    }
    assert outcome == {
        "test_unit_runs_a_process": "FAILED",
        "test_unit_starts_a_server": "FAILED",
        "test_unit_uses_a_fixture_that_starts_a_server": "ERROR",
        "test_unit_computes": "PASSED",
        "test_integration_runs_a_process_and_a_server": "PASSED",
    }, done.stdout
    assert "this unit test started a subprocess: mark it @pytest.mark.integration" in done.stdout
    assert "this unit test listened on a socket (started a server)" in done.stdout
