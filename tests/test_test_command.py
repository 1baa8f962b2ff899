"""scripts/test.sh finds its tools in the project's virtualenv, activated or not (README).

The script runs in a copy of the project whose `.venv/bin` holds stand-ins for every tool; each
writes its name to a log. The shell's PATH has only the system's folders, as in a new shell.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

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


def run(project: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PATH")}
    return subprocess.run(
        ["/bin/bash", "scripts/test.sh", "-q"],
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
