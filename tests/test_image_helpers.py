"""The image build's helpers, run for real: the SHA-only git fetch, the torch lock as a
constraint under the image's uv, and the smoke test's verdicts on ComfyUI logs, package sets and
requirement files."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.wheel_files import write_wheel

REPO = Path(__file__).resolve().parent.parent
FETCH = REPO / "docker" / "git-fetch-commit.sh"
TORCH_LOCK = REPO / "docker" / "torch.lock"
TORCH_STACK = ("torch", "torchvision", "torchaudio")
# The nine custom nodes, in the order the image installs them: the project's one record of pins.
NODES = [
    n["name"] for n in json.loads((REPO / "docker" / "versions.json").read_text())["custom_nodes"]
]


def load_smoke() -> ModuleType:
    spec = importlib.util.spec_from_file_location("smoke_image", REPO / "scripts/smoke_image.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


smoke = load_smoke()


# ------------------------------------------------------------------ git-fetch-commit.sh


def git(*args: str, cwd: Path) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid"}
    env |= {"GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.invalid"}
    return subprocess.run(
        ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=True
    ).stdout.strip()


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    """A repository with two commits; returns (path, first sha, second sha)."""
    repo = tmp_path_factory.mktemp("upstream")
    git("init", "-q", "-b", "main", cwd=repo)
    (repo / "node.py").write_text("VERSION = 1\n")
    git("add", "node.py", cwd=repo)
    git("commit", "-q", "-m", "one", cwd=repo)
    first = git("rev-parse", "HEAD", cwd=repo)
    (repo / "node.py").write_text("VERSION = 2\n")
    git("commit", "-q", "-am", "two", cwd=repo)
    return repo, first, git("rev-parse", "HEAD", cwd=repo)


def fetch(url: str, dest: Path, commit: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(FETCH), url, str(dest), commit], capture_output=True, text=True, check=False
    )


@pytest.mark.integration
def test_fetches_exactly_the_pinned_commit_not_the_branch_tip(
    upstream: tuple[Path, str, str], tmp_path: Path
) -> None:
    repo, first, _ = upstream
    result = fetch(f"file://{repo}", tmp_path / "node", first)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "node" / "node.py").read_text() == "VERSION = 1\n"
    assert git("rev-parse", "HEAD", cwd=tmp_path / "node") == first
    assert git("rev-list", "--count", "HEAD", cwd=tmp_path / "node") == "1"  # shallow


@pytest.mark.integration
@pytest.mark.parametrize("commit", ["main", "v1.0", "abc1234"])
def test_refuses_branches_tags_and_short_shas(
    upstream: tuple[Path, str, str], tmp_path: Path, commit: str
) -> None:
    repo, _, _ = upstream
    result = fetch(f"file://{repo}", tmp_path / "node", commit)
    assert result.returncode == 1
    assert "must be a full 40-character lowercase hex SHA" in result.stderr
    assert not (tmp_path / "node").exists()


@pytest.mark.integration
def test_unknown_commit_fails_naming_it(upstream: tuple[Path, str, str], tmp_path: Path) -> None:
    repo, _, _ = upstream
    missing = "0" * 40
    result = fetch(f"file://{repo}", tmp_path / "node", missing)
    assert result.returncode == 1
    assert f"could not fetch {missing}" in result.stderr


@pytest.mark.integration
def test_refuses_to_fetch_over_existing_files(
    upstream: tuple[Path, str, str], tmp_path: Path
) -> None:
    repo, _, second = upstream
    (tmp_path / "node").mkdir()
    (tmp_path / "node" / "keep.txt").write_text("mine")
    result = fetch(f"file://{repo}", tmp_path / "node", second)
    assert result.returncode == 1
    assert "already exists and is not empty" in result.stderr
    assert (tmp_path / "node" / "keep.txt").read_text() == "mine"


# ------------------------------------------------------------------ constraints under uv


def make_wheel(directory: Path, name: str, version: str, requires: tuple[str, ...] = ()) -> None:
    """A minimal, valid wheel with the given metadata."""
    dist_info = f"{name}-{version}.dist-info"
    files = {
        f"{name}_pkg/__init__.py": b"",
        f"{dist_info}/METADATA": "\n".join(
            ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
            + [f"Requires-Dist: {r}" for r in requires]
        ).encode()
        + b"\n",
        f"{dist_info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
        b"Tag: py3-none-any\n",
    }
    write_wheel(directory / f"{name}-{version}-py3-none-any.whl", dist_info, files)


def uv(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    beside = Path(sys.executable).parent / "uv"
    binary = str(beside) if beside.exists() else shutil.which("uv")
    assert binary, "uv is not installed (requirements-dev.txt pins it)"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("UV_", "PIP_"))}
    env |= {"UV_CACHE_DIR": str(cwd / "cache"), "UV_NO_CONFIG": "1", "UV_OFFLINE": "1"}
    return subprocess.run(
        [binary, *args], cwd=cwd, env=env, capture_output=True, text=True, check=False
    )


@pytest.fixture
def torch_venv(tmp_path: Path) -> Path:
    """A venv holding stand-ins for the locked torch stack, and an index offering newer torch."""
    index = tmp_path / "index"
    index.mkdir()
    locked = smoke.parse_pins(TORCH_LOCK.read_text())
    for name in TORCH_STACK:
        make_wheel(index, name, locked[name])
    make_wheel(index, "torch", "2.11.0")
    make_wheel(index, "polite_node", "1.0", ("torch", "torchvision"))
    make_wheel(index, "greedy_node", "1.0", ("torch>=2.11",))
    assert uv("venv", "-q", "-p", sys.executable, "venv", cwd=tmp_path).returncode == 0
    result = uv(
        "pip", "install", "-p", "venv", "--no-index", "--find-links", str(index),
        "--constraint", str(TORCH_LOCK), *TORCH_STACK, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return tmp_path


def installed(root: Path) -> dict[str, str]:
    freeze = uv("pip", "freeze", "-p", "venv", cwd=root).stdout
    return dict(line.split("==") for line in freeze.splitlines())


@pytest.mark.integration
def test_node_requirements_keep_the_installed_torch(torch_venv: Path) -> None:
    root = torch_venv
    result = uv(
        "pip", "install", "-p", "venv", "--no-index", "--find-links", str(root / "index"),
        "--constraint", str(TORCH_LOCK), "polite_node", cwd=root,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    locked = smoke.parse_pins(TORCH_LOCK.read_text())
    assert installed(root) == {"polite-node": "1.0"} | {n: locked[n] for n in TORCH_STACK}


@pytest.mark.integration
def test_a_node_that_wants_another_torch_fails_instead_of_replacing_it(
    torch_venv: Path,
) -> None:
    root = torch_venv
    result = uv(
        "pip", "install", "-p", "venv", "--no-index", "--find-links", str(root / "index"),
        "--constraint", str(TORCH_LOCK), "greedy_node", cwd=root,
    )  # fmt: skip
    assert result.returncode != 0
    assert "torch" in result.stderr
    assert installed(root)["torch"] == smoke.parse_pins(TORCH_LOCK.read_text())["torch"]
    # Without the constraints the same install would have replaced torch:
    unconstrained = uv(
        "pip", "install", "-p", "venv", "--no-index", "--find-links", str(root / "index"),
        "greedy_node", cwd=root,
    )  # fmt: skip
    assert unconstrained.returncode == 0, unconstrained.stderr
    assert installed(root)["torch"] == "2.11.0"


# ------------------------------------------------------------------ smoke test verdicts

INFO = "\x1b[32m[INFO]\x1b[0m "
WARNING = "\x1b[1m\x1b[33m[WARNING]\x1b[0m "


def comfyui_log(failed: dict[str, str] | None = None, missing: str | None = None) -> str:
    """A console log as ComfyUI 0.33.0 writes it (app/logger.py, nodes.py): level tags in
    colour, the reason for each failed node, then the import report."""
    failed = failed or {}
    lines = [
        f"{WARNING}Traceback (most recent call last):\n  ...\nModuleNotFoundError: {reason}\n"
        f"{WARNING}Cannot import /opt/ComfyUI/custom_nodes/{node} module for custom nodes: "
        f"{reason}"
        for node, reason in failed.items()
    ]
    lines.append(f"{INFO}\nImport times for custom nodes:")
    for node in [*NODES, *(name for name in failed if name not in NODES)]:
        if node != missing:
            mark = " (IMPORT FAILED)" if node in failed else ""
            lines.append(f"{INFO}   0.3 seconds{mark}: /opt/ComfyUI/custom_nodes/{node}")
    lines.append(INFO)
    return "\n".join(lines) + "\n"


def test_clean_log_with_every_node_imported_passes() -> None:
    assert smoke.node_import_problems(comfyui_log(), NODES) == []


def test_a_failed_node_is_reported_with_comfyuis_reason() -> None:
    log = comfyui_log(failed={"RES4LYF": "No module named 'pywt'"})
    assert smoke.node_import_problems(log, NODES) == [
        "custom node RES4LYF: IMPORT FAILED (No module named 'pywt')"
    ]


def test_a_nodes_own_cannot_import_chatter_does_not_fail_a_node_that_imported() -> None:
    """Only ComfyUI's report counts: nodes log optional imports they can live without."""
    chatter = f"{WARNING}Cannot import optional accelerator, falling back\n"
    assert smoke.node_import_problems(chatter + comfyui_log(), NODES) == []


def test_a_node_missing_from_the_report_is_reported() -> None:
    assert smoke.node_import_problems(comfyui_log(missing="ComfyUI-KJNodes"), NODES) == [
        "custom node ComfyUI-KJNodes is not in ComfyUI's import report"
    ]


def test_a_node_listed_only_among_prestartup_scripts_is_not_imported() -> None:
    log = (
        f"{INFO}\nPrestartup times for custom nodes:\n"
        f"{INFO}   0.0 seconds: /opt/ComfyUI/custom_nodes/ComfyUI-Easy-Use\n{INFO}\n"
        + comfyui_log(missing="ComfyUI-Easy-Use")
    )
    assert smoke.node_import_problems(log, NODES) == [
        "custom node ComfyUI-Easy-Use is not in ComfyUI's import report"
    ]


def test_a_failed_builtin_node_file_is_reported() -> None:
    log = (
        f"{WARNING}WARNING: some comfy_extras/ nodes did not import correctly.\n"
        f"{WARNING}IMPORT FAILED: nodes_canny.py\n" + comfyui_log()
    )
    assert smoke.node_import_problems(log, NODES) == [
        "built-in node file nodes_canny.py: IMPORT FAILED"
    ]


def test_any_failed_custom_node_is_reported_not_only_the_nine() -> None:
    log = comfyui_log(failed={"stray_node": "boom"})
    assert smoke.node_import_problems(log, NODES) == [
        "custom node stray_node: IMPORT FAILED (boom)"
    ]


def test_another_threads_line_inside_the_report_does_not_cut_it_short() -> None:
    log = comfyui_log().replace(
        "seconds: /opt/ComfyUI/custom_nodes/RES4LYF\n",
        ("seconds: /opt/ComfyUI/custom_nodes/RES4LYF\nsome thread says hello\n"),
    )
    assert smoke.node_import_problems(log, NODES) == []


def test_no_report_at_all_is_a_failure() -> None:
    assert smoke.node_import_problems(f"{INFO}Starting server\n", NODES) == [
        'ComfyUI printed no "Import times for custom nodes:" report: it did not load the '
        "custom nodes"
    ]


QUICK_TEST_LOG = (REPO / "tests" / "data" / "comfyui_quick_test.log").read_text(encoding="utf-8")


def test_the_recorded_quick_test_with_the_images_torch_passes() -> None:
    """Recorded: `main.py --cpu --quick-test-for-ci` of ComfyUI 0.33.0 with the nine nodes at
    their pins and the image's package set, torch 2.10.0 from PyPI (the CUDA 12.8 build), on a
    machine without a GPU (docs/image.md). Its warnings and errors (NVML not found, torch not
    cu130) are not import failures."""
    report, builtin_failed = smoke.import_report(QUICK_TEST_LOG)
    assert report == dict.fromkeys([*NODES, "websocket_image_save.py"], True)
    assert builtin_failed == []
    assert "Could not init pynvml" in QUICK_TEST_LOG
    assert smoke.node_import_problems(QUICK_TEST_LOG, NODES) == []


def test_the_recorded_quick_test_with_a_node_marked_failed_is_caught() -> None:
    log = QUICK_TEST_LOG.replace(
        "seconds: /opt/ComfyUI/custom_nodes/RES4LYF",
        "seconds (IMPORT FAILED): /opt/ComfyUI/custom_nodes/RES4LYF",
    )
    assert log != QUICK_TEST_LOG
    assert smoke.node_import_problems(log, NODES) == [
        "custom node RES4LYF: IMPORT FAILED (see the log above)"
    ]


def fake_comfyui(root: Path, log: str, exit_code: int = 0) -> Path:
    comfyui = root / "ComfyUI"
    comfyui.mkdir()
    (comfyui / "main.py").write_text(
        "import sys\n"
        "assert '--cpu' in sys.argv and '--quick-test-for-ci' in sys.argv, sys.argv\n"
        f"sys.stderr.write({log!r})\n"
        f"sys.exit({exit_code})\n"
    )
    return comfyui


@pytest.mark.integration
def test_quick_test_passes_when_comfyui_loads_every_node(tmp_path: Path) -> None:
    comfyui = fake_comfyui(tmp_path, comfyui_log())
    assert "all 9 custom nodes imported" in smoke.check_quick_test(comfyui, NODES)


@pytest.mark.integration
def test_quick_test_fails_on_a_failed_node_even_though_comfyui_exits_0(tmp_path: Path) -> None:
    comfyui = fake_comfyui(tmp_path, comfyui_log(failed={"ComfyUI-Frame-Interpolation": "boom"}))
    with pytest.raises(smoke.SmokeError, match="ComfyUI-Frame-Interpolation"):
        smoke.check_quick_test(comfyui, NODES)


@pytest.mark.integration
def test_quick_test_fails_when_comfyui_crashes(tmp_path: Path) -> None:
    comfyui = fake_comfyui(tmp_path, comfyui_log(), exit_code=3)
    with pytest.raises(smoke.SmokeError, match="exited 3"):
        smoke.check_quick_test(comfyui, NODES)


def test_node_dirs_reject_manager_and_qwenvl(tmp_path: Path) -> None:
    nodes_dir = tmp_path / "custom_nodes"
    for node in [*NODES, "ComfyUI-Manager", "ComfyUI-QwenVL"]:
        (nodes_dir / node).mkdir(parents=True)
    with pytest.raises(smoke.SmokeError, match=r"'ComfyUI-Manager', 'ComfyUI-QwenVL'"):
        smoke.check_node_dirs(tmp_path, NODES)
    shutil.rmtree(nodes_dir / "ComfyUI-Manager")
    shutil.rmtree(nodes_dir / "ComfyUI-QwenVL")
    assert "9 custom nodes present" in smoke.check_node_dirs(tmp_path, NODES)


def frame_interpolation(root: Path, ckpts_path: str) -> Path:
    node = root / "ComfyUI" / "custom_nodes" / "ComfyUI-Frame-Interpolation"
    node.mkdir(parents=True)
    (node / "config.yaml").write_text(
        f'#Plz don\'t delete this file\nckpts_path: "{ckpts_path}"\nops_backend: "cupy"\n'
    )
    return root / "ComfyUI"


def test_rife_folder_check_accepts_the_folder_provisioning_links_into(tmp_path: Path) -> None:
    comfyui = frame_interpolation(tmp_path, "./ckpts")
    verdict = smoke.check_rife_folder(comfyui, REPO / "workflows" / "models.json")
    assert "ComfyUI-Frame-Interpolation/ckpts/rife" in verdict


def test_rife_folder_check_fails_when_the_node_reads_elsewhere(tmp_path: Path) -> None:
    comfyui = frame_interpolation(tmp_path, "/somewhere/else")
    with pytest.raises(smoke.SmokeError, match="RIFE would download at job time"):
        smoke.check_rife_folder(comfyui, REPO / "workflows" / "models.json")


def test_unpinned_and_mismatched_packages_are_named() -> None:
    lock = smoke.parse_pins("numpy==2.5.5\n    # via x\nrequests==2.34.2\n")
    torch_pins = smoke.parse_pins("nvidia-cudnn-cu12==9.10.2.21\n")
    installed_now = {
        "numpy": "2.5.5",
        "requests": "2.33.0",
        "nvidia-cudnn-cu12": "9.10.2.21",
        "left-pad": "1.0",
    }
    assert smoke.unpinned(installed_now, [lock, torch_pins]) == [
        "left-pad==1.0 is installed but pinned nowhere",
        "requests==2.33.0 is installed, pinned 2.34.2",
    ]


def test_cuobjdump_listing_is_read_per_architecture() -> None:
    listing = (
        "ELF file    1: _qattn_sm89.1.sm_120a.cubin\n"
        "ELF file    2: _qattn_sm89.2.sm_120a.cubin\n"
        "ELF file    3: _fused.1.sm_90a.cubin\n"
    )
    assert smoke.cuobjdump_archs(listing) == {"sm_120a", "sm_90a"}


def test_the_workflows_video_format_must_be_offered_by_comfyui() -> None:
    workflow = json.loads((REPO / "workflows/wan_flf_i2v_api.json").read_text())
    object_info = json.loads((REPO / "tests/data/object_info.json").read_text())
    # the recorded /object_info of a ComfyUI started with the worker's extra_model_paths.yaml
    assert smoke.unlisted_choices(workflow, object_info) == []
    formats = object_info["VHS_VideoCombine"]["input"]["required"]["format"][0]
    formats.remove(workflow["906"]["inputs"]["format"])
    assert smoke.unlisted_choices(workflow, object_info) == [
        "node 906 (VHS_VideoCombine) format 'video/h264-mp4-fast.json' is not offered"
    ]
    del object_info["VHS_VideoCombine"]
    assert len(smoke.unlisted_choices(workflow, object_info)) == 1


def test_workflow_class_types_are_collected() -> None:
    workflow = {
        "1": {"class_type": "LoadImage", "inputs": {}},
        "2": {"class_type": "RIFE VFI", "inputs": {}},
        "3": {"class_type": "LoadImage", "inputs": {}},
    }
    assert smoke.workflow_class_types(workflow) == {"LoadImage", "RIFE VFI"}


# ------------------------------------------------------------------ kept requirement files

KEPT = REPO / "docker" / "requirements"


@pytest.fixture
def fetched_comfyui(tmp_path: Path) -> Path:
    """A ComfyUI tree whose requirement files are what the pinned commits hold."""
    comfyui = tmp_path / "ComfyUI"
    shutil.copytree(KEPT / "ComfyUI", comfyui)
    return comfyui


def test_requirement_files_identical_to_the_fetched_ones_pass(fetched_comfyui: Path) -> None:
    assert smoke.requirement_file_problems(fetched_comfyui, KEPT) == []
    verdict = smoke.check_requirement_files(fetched_comfyui, KEPT)
    assert verdict == "9 requirement files identical to the fetched ones"


def test_a_fetched_requirement_file_that_changed_or_vanished_fails(fetched_comfyui: Path) -> None:
    kj = fetched_comfyui / "custom_nodes" / "ComfyUI-KJNodes" / "requirements.txt"
    kj.write_text(kj.read_text() + "sageattention\n")
    (fetched_comfyui / "custom_nodes" / "RES4LYF" / "requirements.txt").unlink()
    problems = smoke.requirement_file_problems(fetched_comfyui, KEPT)
    assert problems == [
        f"{kj} differs from docker/requirements/ComfyUI/custom_nodes/ComfyUI-KJNodes/"
        "requirements.txt",
        f"{fetched_comfyui}/custom_nodes/RES4LYF/requirements.txt does not exist at "
        "022c873c6d198c67b3312a1804336533a050df18",
    ]
    with pytest.raises(smoke.SmokeError, match="--refresh-from"):
        smoke.check_requirement_files(fetched_comfyui, KEPT)


@pytest.mark.integration
def test_requirement_files_command_exits_non_zero_on_a_difference(fetched_comfyui: Path) -> None:
    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(REPO / "scripts" / "smoke_image.py"), "requirement-files",
             "--comfyui-dir", str(fetched_comfyui), "--kept", str(KEPT)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip

    assert run().returncode == 0
    (fetched_comfyui / "requirements.txt").write_text("torch\n")
    bad = run()
    assert bad.returncode == 1
    assert (
        "requirements.txt differs from docker/requirements/ComfyUI/requirements.txt" in bad.stdout
    )


# ------------------------------------------------------------------ refreshing the kept files


def load_locker() -> ModuleType:
    path = REPO / "docker" / "lock_requirements.py"
    spec = importlib.util.spec_from_file_location("lock_requirements", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


locker = load_locker()


def committed_repo(path: Path, files: dict[str, str]) -> str:
    path.mkdir(parents=True)
    git("init", "-q", "-b", "main", cwd=path)
    for name, text in files.items():
        (path / name).write_text(text)
    git("add", ".", cwd=path)
    git("commit", "-q", "-m", "pin", cwd=path)
    return git("rev-parse", "HEAD", cwd=path)


@pytest.fixture
def checkout(tmp_path: Path) -> tuple[Path, dict]:
    """A ComfyUI checkout with one node, each its own repository, and the pins it is at."""
    comfyui = tmp_path / "ComfyUI"
    comfy_sha = committed_repo(comfyui, {"requirements.txt": "torch\nnumpy>=1.25.0\n"})
    node_sha = committed_repo(
        comfyui / "custom_nodes" / "node-a", {"requirements-no-cupy.txt": "einops\n"}
    )
    versions = {
        "comfyui": {"repo": "https://example.invalid/ComfyUI.git", "commit": comfy_sha,
                    "requirements": ["requirements.txt"]},
        "custom_nodes": [{"name": "node-a", "repo": "https://example.invalid/node-a.git",
                          "commit": node_sha, "requirements": ["requirements-no-cupy.txt"]}],
    }  # fmt: skip
    return comfyui, versions


@pytest.mark.integration
def test_refresh_copies_each_file_and_records_its_commit(
    checkout: tuple[Path, dict], tmp_path: Path
) -> None:
    comfyui, versions = checkout
    kept = tmp_path / "kept"
    locker.refresh(comfyui, versions, kept)
    node_file = kept / "ComfyUI" / "custom_nodes" / "node-a" / "requirements-no-cupy.txt"
    assert node_file.read_text() == "einops\n"
    record = json.loads((kept / "sources.json").read_text())["files"]
    assert record["ComfyUI/custom_nodes/node-a/requirements-no-cupy.txt"] == {
        "repo": "https://example.invalid/node-a.git",
        "commit": versions["custom_nodes"][0]["commit"],
        "sha256": hashlib.sha256(b"einops\n").hexdigest(),
    }
    # What the build then checks: the fetched files are the kept ones.
    assert smoke.requirement_file_problems(comfyui, kept) == []


@pytest.mark.integration
def test_refresh_from_a_checkout_off_its_pins_changes_nothing(
    checkout: tuple[Path, dict], tmp_path: Path
) -> None:
    comfyui, versions = checkout
    versions["custom_nodes"][0]["commit"] = "0" * 40
    kept = tmp_path / "kept"
    with pytest.raises(SystemExit, match=rf"node-a is at [0-9a-f]{{40}}, pinned {'0' * 40}"):
        locker.refresh(comfyui, versions, kept)
    assert not kept.exists()  # not even the files whose checkout was right


def test_a_compiled_resolution_splits_into_blocks_with_their_annotations() -> None:
    compiled = "numpy==2.5.5\n    # via\n    #   torch\ntorch==2.10.0\n    # via -r torch.txt\n"
    assert locker.blocks(compiled) == [
        ("numpy", "numpy==2.5.5\n    # via\n    #   torch\n"),
        ("torch", "torch==2.10.0\n    # via -r torch.txt\n"),
    ]
