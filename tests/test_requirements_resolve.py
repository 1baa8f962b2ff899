"""The image's Python requirements resolve together with torch 2.10.0, proven by pip against PyPI.

docker/requirements.lock holds every package of the image except the CUDA torch stack. pip
resolves the lock plus torch, torchvision and torchaudio at the pinned versions for Python
3.12 on linux x86_64 (PyPI's torch 2.10.0 is the cu128 build, the same release the image takes
from the cu128 index), metadata only: `--dry-run --ignore-installed --report`, with fast-deps
reading each wheel's metadata through HTTP range requests instead of downloading gigabytes.

The report must then install exactly the lock's versions, the torch stack, and the packages
torch itself pins exactly: anything else means the lock is incomplete or inconsistent.

Needs PyPI (CI has it); it takes about a minute.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VERSIONS = json.loads((REPO / "docker" / "versions.json").read_text())
LOCK = REPO / "docker" / "requirements.lock"
PYPI = "https://pypi.org/simple"
MIN_PIP = 26
# pip does not widen a manylinux tag to older ones: list every glibc up to Ubuntu 24.04's 2.39.
PLATFORMS = [f"manylinux_2_{minor}_x86_64" for minor in range(39, 16, -1)] + [
    "manylinux2014_x86_64",
    "manylinux2010_x86_64",
    "manylinux1_x86_64",
    "linux_x86_64",
]


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def lock_pins() -> dict[str, str]:
    pins = {}
    for line in LOCK.read_text().splitlines():
        if line and not line.startswith((" ", "#")):
            name, _, version = line.partition("==")
            pins[canonical(name)] = version
    return pins


def torch_pins() -> dict[str, str]:
    """The torch stack at its public versions: 2.10.0+cu128 -> 2.10.0."""
    return {
        name: version.split("+", 1)[0] for name, version in VERSIONS["torch"]["packages"].items()
    }


def pip_environment() -> dict[str, str]:
    """This process's environment without pip settings that would add other indexes."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    if os.environ.get("PIP_CERT"):
        env["PIP_CERT"] = os.environ["PIP_CERT"]
    return env


def exact_requirements(requires_dist: list[str]) -> dict[str, str]:
    pins = {}
    for requirement in requires_dist:
        match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*([^\s;,]+)\s*(;|$)", requirement)
        if match:
            pins[canonical(match.group(1))] = match.group(2)
    return pins


def test_exact_requirements_reads_only_exact_pins() -> None:
    assert exact_requirements(
        [
            'nvidia-cudnn-cu12==9.10.2.21; platform_system == "Linux"',
            "triton==3.6.0",
            "sympy>=1.13.3",
            "fsspec>=0.8.5",
        ]
    ) == {"nvidia-cudnn-cu12": "9.10.2.21", "triton": "3.6.0"}


def pip_major() -> int:
    result = subprocess.run(
        [sys.executable, "-m", "pip", "--version"], capture_output=True, text=True, check=True
    )
    return int(result.stdout.split()[1].split(".")[0])


def test_lock_and_torch_2_10_resolve_together_on_pypi(tmp_path: Path) -> None:
    # Older pips check Requires-Python against this interpreter, not --python-version, when
    # fast-deps is on (av 19 needs 3.12). .ci/run upgrades pip.
    assert pip_major() >= MIN_PIP, f"this check needs pip >= {MIN_PIP}: pip install -U pip"
    report_path = tmp_path / "report.json"
    platform_args = [arg for platform in PLATFORMS for arg in ("--platform", platform)]
    command = [
        sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
        "--report", str(report_path), "--target", str(tmp_path / "target"),
        "--index-url", PYPI, "--use-feature=fast-deps",
        "--python-version", VERSIONS["python"], *platform_args, "--only-binary=:all:",
        "-r", str(LOCK), *(f"{name}=={version}" for name, version in torch_pins().items()),
    ]  # fmt: skip
    result = subprocess.run(
        command, capture_output=True, text=True, env=pip_environment(), timeout=900, check=False
    )
    assert result.returncode == 0, (
        f"pip could not resolve docker/requirements.lock with torch {torch_pins()['torch']} "
        f"on PyPI:\n{result.stderr[-4000:]}"
    )

    report = json.loads(report_path.read_text())
    resolved = {
        canonical(item["metadata"]["name"]): item["metadata"]["version"]
        for item in report["install"]
    }
    lock = lock_pins()
    assert {name: resolved.get(name) for name in lock} == lock
    for name, version in torch_pins().items():
        assert resolved[name] == version
    torch_metadata = next(
        item["metadata"] for item in report["install"] if item["metadata"]["name"] == "torch"
    )
    pinned_by_torch = exact_requirements(torch_metadata.get("requires_dist", []))
    extra = {
        name: version
        for name, version in resolved.items()
        if name not in lock and name not in torch_pins()
    }
    assert extra, "torch 2.10.0 brings its CUDA libraries; none resolved"
    not_pinned = {n: v for n, v in extra.items() if pinned_by_torch.get(n) != v}
    assert not not_pinned, (
        f"resolved outside the lock and torch's own pins: {not_pinned}; "
        "regenerate docker/requirements.lock with docker/lock_requirements.py"
    )
