"""A wheel built from pyproject.toml holds every module of the wan_worker package tree.

pip builds it as any installer would (an isolated build with the setuptools pyproject.toml
asks for, from PyPI), from a copy of what the build reads, so the build's own folders never
land in the checkout. The wheel's file list must match the .py files under wan_worker/.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration  # a wheel built in a subprocess

REPO = Path(__file__).resolve().parent.parent


def test_a_built_wheel_holds_every_module_of_every_package(tmp_path: Path) -> None:
    source, out = tmp_path / "source", tmp_path / "out"
    shutil.copytree(
        REPO / "wan_worker", source / "wan_worker", ignore=shutil.ignore_patterns("__pycache__")
    )
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "-q", "-w", str(out)],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    (wheel,) = out.glob("wan_i2v_worker-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        packed = {name for name in archive.namelist() if name.endswith(".py")}
    modules = {
        path.relative_to(REPO).as_posix()
        for path in (REPO / "wan_worker").rglob("*.py")
        if "__pycache__" not in path.parts
    }
    assert packed == modules
    assert {"wan_worker/comfy/follower.py", "wan_worker/provision/transfer.py"} <= packed
