"""The image's Python installs, run here exactly as the Dockerfile writes them.

Every `uv pip install` and `uv pip check` of each build stage is read from the Dockerfile itself,
with the files its COPY instructions bring (docker/torch.lock, docker/requirements.lock, the
requirement files kept under docker/requirements/, requirements.txt), and run with the image's
uv version for the image's target, Python 3.12 on x86-64 manylinux_2_39 (Ubuntu 24.04), in the
stage's order, into one environment:

1. each install first as a dry run against the index the Dockerfile names (PyPI), in the
   environment the earlier steps left: it resolves there, with a wheel for every package;
2. then for real, against stand-in wheels that carry each real wheel's file name and METADATA
   (read from PyPI with HTTP range requests, no gigabytes downloaded), so the next step sees
   what the build's next step sees; `uv pip check` then checks the environment as the build
   does.

A step that would fail in the build fails here, naming the step. The runtime environment must
then hold exactly the two locks and SageAttention: a lock that misses a package, or pins one
nothing installs, fails.

Needs PyPI (CI has it); docs/image.md records its run time.
"""

from __future__ import annotations

import glob
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest

from tests.dockerfile import DOCKERFILE, Instruction, commands, env, parse_dockerfile, run_flags
from tests.wheel_files import write_wheel

pytestmark = pytest.mark.integration  # pip and uv resolving in subprocesses

REPO = Path(__file__).resolve().parent.parent
VERSIONS = json.loads((REPO / "docker" / "versions.json").read_text())
LOCKS = [REPO / "docker" / "torch.lock", REPO / "docker" / "requirements.lock"]
STAGES = ("sage-builder", "runtime")
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)$")


def load_wheels() -> ModuleType:
    spec = importlib.util.spec_from_file_location("image_wheels", REPO / "docker" / "wheels.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


wheels = load_wheels()


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def uv_binary() -> str:
    beside = Path(sys.executable).parent / "uv"
    binary = str(beside) if beside.exists() else shutil.which("uv")
    assert binary, "uv is not installed (requirements-dev.txt pins it)"
    return binary


# ------------------------------------------------------------------ the Dockerfile's installs


@dataclass(frozen=True)
class Step:
    stage: str
    argv: list[str]  # as the Dockerfile writes it
    mounts: dict[str, str]  # bind-mount target -> the stage it comes from

    @property
    def kind(self) -> str:
        return " ".join(self.argv[:3]) if self.argv[1] == "pip" else "uv venv"

    def __str__(self) -> str:
        return " ".join(self.argv)


def python_steps(instructions: list[Instruction], stage: str) -> list[Step]:
    """Every `uv venv`, `uv pip install` and `uv pip check` of the stage, in order."""
    steps = []
    for run in (i for i in instructions if i.stage == stage and i.keyword == "RUN"):
        mounts = {}
        for flag in run_flags(run):
            fields = dict(f.split("=", 1) for f in flag.removeprefix("--mount=").split(","))
            if fields.get("type") == "bind":
                mounts[fields["target"]] = fields["from"]
        for argv in commands(run):
            if argv[:2] == ["uv", "venv"] or argv[:3] in (
                ["uv", "pip", "install"],
                ["uv", "pip", "check"],
            ):
                steps.append(Step(stage, argv, mounts))
    return steps


def copied_paths(instructions: list[Instruction], stage: str) -> dict[str, Path]:
    """Image path -> repository path, from the stage's COPY instructions of the build context."""
    paths: dict[str, Path] = {}
    for copy in (i for i in instructions if i.stage == stage and i.keyword == "COPY"):
        if "--from=" in copy.args:
            continue
        *sources, dest = [p for p in copy.args.split() if not p.startswith("--")]
        if not dest.startswith("/"):
            continue
        for source in sources:
            if dest.endswith("/") and not source.endswith("/"):
                paths[dest + Path(source).name] = REPO / source
            else:
                paths[dest.rstrip("/")] = REPO / source.rstrip("/")
    return paths


class Translate:
    """Maps the image paths of a step to files here; globs as the shell would."""

    def __init__(self, paths: dict[str, Path]) -> None:
        self.paths = sorted(paths.items(), key=lambda item: -len(item[0]))

    def __call__(self, token: str) -> list[str]:
        for image_path, local in self.paths:
            if token == image_path or token.startswith(image_path + "/"):
                mapped = str(local) + token[len(image_path) :]
                if "*" in mapped:
                    return sorted(glob.glob(mapped)) or [mapped]
                return [mapped]
        return [token]


def with_index(argv: list[str], index: list[str]) -> list[str]:
    """The command with its --index-url replaced by `index`."""
    out, skip = [], False
    for token in argv:
        if skip:
            skip = False
        elif token == "--index-url":
            out += index
            skip = True
        else:
            out.append(token)
    return out


# ------------------------------------------------------------------ stand-in wheels


def stub_wheel(directory: Path, filename: str, metadata: bytes) -> None:
    """A wheel named `filename` that installs nothing but its real METADATA."""
    name, version = filename.split("-")[:2]
    dist_info = f"{name}-{version}.dist-info"
    tags = filename[: -len(".whl")].split("-")[-3:]
    files = {
        f"{dist_info}/METADATA": metadata,
        f"{dist_info}/WHEEL": (
            f"Wheel-Version: 1.0\nGenerator: stand-in\nRoot-Is-Purelib: false\n"
            f"Tag: {'-'.join(tags)}\n"
        ).encode(),
    }
    write_wheel(directory / filename, dist_info, files)


def positional_pins(instructions: list[Instruction]) -> list[str]:
    """`name==version` arguments the Dockerfile's installs name directly (build tools)."""
    return sorted(
        {
            token
            for stage in STAGES
            for step in python_steps(instructions, stage)
            for token in step.argv
            if PIN.match(token)
        }
    )


@pytest.fixture(scope="session")
def stand_ins(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A find-links folder: a stand-in for every wheel of every pin the Dockerfile installs."""
    folder = tmp_path_factory.mktemp("stand-ins")
    instructions = parse_dockerfile(DOCKERFILE.read_text())
    # Resolved apart: a build tool may pin another version of a locked package (setuptools).
    found = wheels.resolve(uv_binary(), wheels.pinned_requirements(LOCKS))
    found += wheels.resolve(uv_binary(), positional_pins(instructions))
    for facts in wheels.read_all(set(found)):
        stub_wheel(folder, facts.wheel.filename, facts.metadata)
    return folder


@pytest.fixture(scope="session")
def sage_wheels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What the builder stage leaves in /wheels: SageAttention, as its setup.py declares it
    (no dependencies, Python >= 3.9), with the tag `uv build` gives it."""
    folder = tmp_path_factory.mktemp("sage-wheels")
    version = VERSIONS["sageattention"]["version"]
    metadata = (
        f"Metadata-Version: 2.1\nName: sageattention\nVersion: {version}\nRequires-Python: >=3.9\n"
    ).encode()
    stub_wheel(folder, f"sageattention-{version}-cp312-cp312-linux_x86_64.whl", metadata)
    return folder


# ------------------------------------------------------------------ running a stage


class StepFailed(AssertionError):
    pass


def uv_environment(stage_env: dict[str, str], venv: Path) -> dict[str, str]:
    """This process's environment without uv or pip settings (the cache's place aside), plus
    the stage's UV_* values."""
    environment = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("UV_", "PIP_", "VIRTUAL_ENV")) or k == "UV_CACHE_DIR"
    }
    environment |= {k: v for k, v in stage_env.items() if k.startswith("UV_")}
    environment |= {"UV_NO_CONFIG": "1", "VIRTUAL_ENV": str(venv), "UV_NO_PROGRESS": "1"}
    return environment


def run_stage(
    dockerfile_text: str, stage: str, work: Path, stand_ins: Path, sage_wheels: Path
) -> Path:
    """Run the stage's Python steps as described in the module docstring; returns the venv."""
    instructions = parse_dockerfile(dockerfile_text)
    steps = python_steps(instructions, stage)
    assert steps, f"the {stage} stage installs nothing"
    stage_env = env(instructions, stage)
    paths = copied_paths(instructions, stage)
    for step in steps:
        for target, source_stage in step.mounts.items():
            assert source_stage == "sage-builder", f"{step}: mount from {source_stage}"
            paths[target] = sage_wheels
    translate = Translate(paths)
    venv = work / "venv"
    environment = uv_environment(stage_env, venv)
    uv = uv_binary()
    target = wheels.TARGET

    def run(label: str, argv: list[str]) -> None:
        result = subprocess.run(
            argv, capture_output=True, text=True, env=environment, timeout=900, check=False
        )
        if result.returncode != 0:
            raise StepFailed(f"[{stage}] {label} fails:\n{result.stdout}{result.stderr[-6000:]}")

    for step in steps:
        argv = [uv] + [part for token in step.argv[1:] for part in translate(token)]
        if step.kind == "uv venv":
            assert step.argv[-1] == stage_env["VIRTUAL_ENV"], f"{step}: not the stage's venv"
            run(str(step), [uv, "venv", "--quiet", "--python", sys.executable, str(venv)])
        elif step.kind == "uv pip install":
            run(f"{step} (dry run against the index)", [*argv, *target, "--dry-run"])
            local = ["--no-index", "--find-links", str(stand_ins)]
            run(f"{step} (stand-in wheels)", [*with_index(argv, local), *target])
        else:
            run(str(step), [*argv, *target])
    return venv


def installed(venv: Path) -> dict[str, str]:
    result = subprocess.run(
        [uv_binary(), "pip", "list", "--format", "json", "--python", str(venv)],
        capture_output=True,
        text=True,
        check=True,
        env=uv_environment({}, venv),
    )
    return {canonical(item["name"]): item["version"] for item in json.loads(result.stdout)}


def lock_pins() -> dict[str, str]:
    pins: dict[str, str] = {}
    for lock in LOCKS:
        for line in lock.read_text().splitlines():
            match = PIN.match(line)
            if match:
                pins[canonical(match.group(1))] = match.group(2)
    return pins


# ------------------------------------------------------------------ the tests


def test_the_image_uses_the_uv_version_the_tests_run() -> None:
    froms = [i.args for i in parse_dockerfile(DOCKERFILE.read_text()) if i.keyword == "FROM"]
    assert f"ghcr.io/astral-sh/uv:{VERSIONS['uv']} AS uv" in froms
    version = subprocess.run(
        [uv_binary(), "--version"], capture_output=True, text=True, check=True
    ).stdout.split()[1]
    assert version == VERSIONS["uv"]


def test_every_install_names_pypi_and_the_steps_are_the_expected_ones() -> None:
    instructions = parse_dockerfile(DOCKERFILE.read_text())
    for stage in STAGES:
        steps = python_steps(instructions, stage)
        assert steps[0].kind == "uv venv"
        assert steps[-1].kind == "uv pip check", f"{stage} must end with uv pip check"
        for step in steps:
            if step.kind == "uv pip install" and not step.mounts:
                command = str(step)
                assert f"--index-url {VERSIONS['torch']['index_url']} " in command
                assert "--only-binary :all: " in command


@pytest.mark.parametrize("stage", STAGES)
def test_the_stage_installs_as_written_and_passes_uv_pip_check(
    stage: str, tmp_path: Path, stand_ins: Path, sage_wheels: Path
) -> None:
    venv = run_stage(DOCKERFILE.read_text(), stage, tmp_path, stand_ins, sage_wheels)
    packages = installed(venv)
    assert packages["torch"] == VERSIONS["torch"]["packages"]["torch"]
    if stage == "runtime":
        expected = lock_pins() | {"sageattention": VERSIONS["sageattention"]["version"]}
        assert packages == expected, (
            "the runtime does not install exactly the locks: regenerate them with "
            "docker/lock_requirements.py"
        )


BROKEN_CHECK = """\
FROM nvidia/cuda:12.8.1-base-ubuntu24.04 AS runtime
ENV VIRTUAL_ENV=/opt/venv
COPY docker/torch.lock /app/docker/torch.lock
RUN uv venv --python /usr/bin/python3.12 /opt/venv \\
 && uv pip install --index-url https://pypi.org/simple --only-binary :all: --no-deps \\
      --constraint /app/docker/torch.lock torchvision \\
 && uv pip check
"""

BROKEN_RESOLUTION = """\
FROM nvidia/cuda:12.8.1-base-ubuntu24.04 AS runtime
ENV VIRTUAL_ENV=/opt/venv
COPY docker/torch.lock /app/docker/torch.lock
RUN uv venv --python /usr/bin/python3.12 /opt/venv \\
 && uv pip install --index-url https://pypi.org/simple --only-binary :all: \\
      --constraint /app/docker/torch.lock torch torchvision==0.24.0
"""


def test_an_environment_uv_pip_check_rejects_fails_here(
    tmp_path: Path, stand_ins: Path, sage_wheels: Path
) -> None:
    with pytest.raises(StepFailed, match=r"(?s)uv pip check fails.*torchvision.*torch"):
        run_stage(BROKEN_CHECK, "runtime", tmp_path, stand_ins, sage_wheels)


def test_an_install_that_cannot_resolve_on_the_index_fails_here(
    tmp_path: Path, stand_ins: Path, sage_wheels: Path
) -> None:
    with pytest.raises(StepFailed, match=r"(?s)dry run against the index\) fails.*torchvision"):
        run_stage(BROKEN_RESOLUTION, "runtime", tmp_path, stand_ins, sage_wheels)
