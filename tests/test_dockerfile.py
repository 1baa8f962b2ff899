"""Static checks of the Dockerfile against the pins the project records in docker/versions.json.

No Docker engine runs in CI, so these read the Dockerfile as text: base images, the CUDA
architecture list, every git source pinned to a full SHA, the nine nodes and their kept
requirement files, no ComfyUI-Manager or QwenVL, the locks in step with the record, and the
layer order that keeps the torch layer cached. tests/test_requirements_resolve.py runs its
Python installs.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest

from tests.dockerfile import DOCKERFILE, commands, parse_dockerfile

REPO = Path(__file__).resolve().parent.parent
VERSIONS = json.loads((REPO / "docker" / "versions.json").read_text())
SHA = re.compile(r"^[0-9a-f]{40}$")
# Named here on purpose, not read from versions.json: the record itself must hold these nine.
NINE_NODES = {
    "rgthree-comfy", "ComfyUI_essentials", "ComfyUI-Easy-Use", "ComfyUI-KJNodes",
    "ComfyUI-VideoHelperSuite", "ComfyUI-Crystools", "RES4LYF", "ComfyUI-Custom-Scripts",
    "ComfyUI-Frame-Interpolation",
}  # fmt: skip
# Written by other parts of the project; checked once they exist.
APP_FILES_FROM_ELSEWHERE = {"start.sh", "rp_handler.py", "extra_model_paths.yaml"}


INSTRUCTIONS = parse_dockerfile(DOCKERFILE.read_text())
RUNS = [i for i in INSTRUCTIONS if i.keyword == "RUN"]


def fetches() -> list[tuple[str, str, str, str]]:
    """(stage, url, dest, sha) of every git-fetch-commit call."""
    found = []
    for run in RUNS:
        for argv in commands(run):
            if argv and argv[0] == "git-fetch-commit":
                assert len(argv) == 4, f"git-fetch-commit takes URL DEST COMMIT: {argv}"
                found.append((run.stage, argv[1], argv[2], argv[3]))
    return found


def test_parser_sees_the_three_stages() -> None:
    froms = [i.args for i in INSTRUCTIONS if i.keyword == "FROM"]
    assert len(froms) == 3
    assert len(RUNS) >= 8


def test_base_images_are_the_recorded_cuda_12_8_ubuntu_24_04_pair() -> None:
    froms = [i.args for i in INSTRUCTIONS if i.keyword == "FROM"]
    assert froms == [
        f"ghcr.io/astral-sh/uv:{VERSIONS['uv']} AS uv",
        f"{VERSIONS['base_images']['builder']} AS sage-builder",
        f"{VERSIONS['base_images']['runtime']} AS runtime",
    ]
    builder, runtime = VERSIONS["base_images"]["builder"], VERSIONS["base_images"]["runtime"]
    # nvcc and the CUDA headers to build SageAttention; at run time torch's wheels bring the
    # CUDA libraries, so the runtime is the CUDA base image of the same release.
    assert re.fullmatch(r"nvidia/cuda:12\.8\.\d+-devel-ubuntu24\.04", builder)
    assert runtime == builder.replace("-devel-", "-base-")


def test_torch_cuda_arch_list_is_exactly_12_0() -> None:
    values = re.findall(r"TORCH_CUDA_ARCH_LIST=\"?([^\"\s]*)\"?", DOCKERFILE.read_text())
    assert values, "TORCH_CUDA_ARCH_LIST is never set"
    assert set(values) == {VERSIONS["torch_cuda_arch_list"]} == {"12.0"}
    env = [i for i in INSTRUCTIONS if i.keyword == "ENV" and "TORCH_CUDA_ARCH_LIST" in i.args]
    assert [i.stage for i in env] == ["sage-builder"]
    build = next(i for i in RUNS if "uv build" in i.args)
    assert INSTRUCTIONS.index(env[0]) < INSTRUCTIONS.index(build)


def test_sageattention_build_parallelism_is_bounded() -> None:
    args = {
        name: int(value)
        for i in INSTRUCTIONS
        if i.keyword == "ARG" and i.stage == "sage-builder"
        for name, value in [i.args.split("=", 1)]
    }
    assert 1 <= args["EXT_PARALLEL"] <= 2
    assert 1 <= args["MAX_JOBS"] <= 4
    assert 1 <= args["NVCC_THREADS"] <= 4
    build = next(i for i in RUNS if "uv build" in i.args)
    for name in ("EXT_PARALLEL", "MAX_JOBS"):
        assert f'{name}="${{{name}}}"' in build.args
    assert 'NVCC_APPEND_FLAGS="--threads ${NVCC_THREADS}"' in build.args


def test_every_git_source_is_fetched_by_a_full_sha() -> None:
    text = " ".join(i.args for i in INSTRUCTIONS)
    assert "git clone" not in text
    assert "git+" not in text, "pip/uv installs from git bypass the SHA pins"
    assert not [i for i in INSTRUCTIONS if i.keyword == "ADD"], "use git-fetch-commit, not ADD"
    found = fetches()
    assert found
    for _, url, _, sha in found:
        assert SHA.match(sha), f"{url} is not pinned to a full SHA: {sha}"
    urls_in_runs = set(re.findall(r"https://github\.com/\S+", " ".join(r.args for r in RUNS)))
    assert urls_in_runs == {url for _, url, _, _ in found}


def test_the_fetch_helper_refuses_anything_but_a_full_sha() -> None:
    helper = (REPO / "docker" / "git-fetch-commit.sh").read_text()
    assert "^[0-9a-f]{40}$" in helper
    assert 'rev-parse HEAD)"' in helper


def test_comfyui_and_sageattention_are_the_recorded_commits() -> None:
    found = {(stage, url, sha) for stage, url, _, sha in fetches()}
    sage, comfy = VERSIONS["sageattention"], VERSIONS["comfyui"]
    assert ("sage-builder", sage["repo"], sage["commit"]) in found
    assert ("runtime", comfy["repo"], comfy["commit"]) in found
    dests = {url: dest for _, url, dest, _ in fetches()}
    assert dests[comfy["repo"]] == "/opt/ComfyUI"
    assert dests[sage["repo"]] == "/build/SageAttention"


def test_all_nine_nodes_at_their_recorded_commits_and_nothing_else() -> None:
    recorded = {(n["repo"], n["name"], n["commit"]) for n in VERSIONS["custom_nodes"]}
    assert {name for _, name, _ in recorded} == NINE_NODES
    nodes = {
        (url, dest, sha)
        for stage, url, dest, sha in fetches()
        if stage == "runtime" and dest != "/opt/ComfyUI"
    }
    assert nodes == recorded
    workdirs = [i for i in INSTRUCTIONS if i.keyword == "WORKDIR"]
    node_run = next(r for r in RUNS if "git-fetch-commit https://github.com/rgthree" in r.args)
    workdir = [w for w in workdirs if INSTRUCTIONS.index(w) < INSTRUCTIONS.index(node_run)][-1]
    assert workdir.args == "/opt/ComfyUI/custom_nodes"


def test_no_comfyui_manager_no_qwenvl_no_model_weights() -> None:
    text = " ".join(i.args for i in INSTRUCTIONS).lower()  # comments excluded
    assert "manager" not in text
    assert "qwen" not in text
    for weights in (".safetensors", ".pth", ".ckpt", ".gguf", "huggingface.co", "hf_hub"):
        assert weights not in text


def test_no_step_hides_a_failure() -> None:
    text = " ".join(r.args for r in RUNS)
    assert "|| true" not in text
    assert "||true" not in text
    assert not re.search(r"\|\|\s*:", text)
    shells = [i.args for i in INSTRUCTIONS if i.keyword == "SHELL"]
    assert shells == ['["/bin/bash", "-o", "pipefail", "-c"]'] * 2


def kept_requirement_files() -> list[str]:
    """Paths under docker/requirements/ of every requirement file versions.json names."""
    files = [f"ComfyUI/{name}" for name in VERSIONS["comfyui"]["requirements"]]
    for node in VERSIONS["custom_nodes"]:
        files += [f"ComfyUI/custom_nodes/{node['name']}/{r}" for r in node["requirements"]]
    return files


def test_requirements_install_covers_comfyui_every_node_and_the_worker() -> None:
    install = next(r for r in RUNS if "-r /app/requirements.txt" in r.args)
    wanted = {f"/app/docker/requirements/{path}" for path in kept_requirement_files()}
    wanted.add("/app/requirements.txt")
    listed = set(re.findall(r"-r (\S+)", install.args))
    assert listed == wanted
    assert "--constraint /app/docker/torch.lock" in install.args
    assert "--constraint /app/docker/requirements.lock" in install.args
    assert "--only-binary :all:" in install.args
    assert "uv pip check" in install.args


def test_kept_requirement_files_are_recorded_at_the_pinned_commits() -> None:
    """A pin bumped without copying the node's requirement file again fails here, not after
    an hour of build (where smoke_image.py requirement-files would stop it)."""
    kept = REPO / "docker" / "requirements"
    record = json.loads((kept / "sources.json").read_text())["files"]
    assert sorted(record) == sorted(kept_requirement_files())
    on_disk = sorted(
        str(p.relative_to(kept))
        for p in kept.rglob("*")
        if p.is_file() and p.name != "sources.json"
    )
    assert on_disk == sorted(record), "docker/requirements/ holds files nothing installs"
    pinned = {VERSIONS["comfyui"]["repo"]: VERSIONS["comfyui"]["commit"]}
    pinned |= {node["repo"]: node["commit"] for node in VERSIONS["custom_nodes"]}
    for path, source in record.items():
        assert source["commit"] == pinned[source["repo"]], (
            f"docker/requirements/{path} was copied at {source['commit']}, the pin is "
            f"{pinned[source['repo']]}: run docker/lock_requirements.py --refresh-from"
        )
        assert hashlib.sha256((kept / path).read_bytes()).hexdigest() == source["sha256"]


def test_the_fetched_requirement_files_are_checked_right_after_the_fetch() -> None:
    check = next(r for r in RUNS if "smoke_image.py requirement-files" in r.args)
    assert check.stage == "runtime"
    assert "--comfyui-dir /opt/ComfyUI --kept /app/docker/requirements" in check.args
    last_fetch = max(INSTRUCTIONS.index(r) for r in RUNS if "git-fetch-commit" in r.args)
    between = INSTRUCTIONS[last_fetch + 1 : INSTRUCTIONS.index(check)]
    assert all(i.keyword == "COPY" for i in between)


def test_torch_stack_comes_from_pypi_under_the_torch_lock() -> None:
    torch_runs = [r for r in RUNS if "torch torchvision torchaudio" in r.args]
    assert len(torch_runs) == 1
    run = torch_runs[0]
    assert run.stage == "runtime"
    assert f"--index-url {VERSIONS['torch']['index_url']}" in run.args
    assert "--constraint /app/docker/torch.lock" in run.args
    builder_torch = next(r for r in RUNS if r.stage == "sage-builder" and " torch" in r.args)
    assert f"--index-url {VERSIONS['torch']['index_url']}" in builder_torch.args
    assert "--constraint /build/docker/torch.lock" in builder_torch.args
    assert VERSIONS["torch"]["index_url"] == "https://pypi.org/simple"
    assert "download.pytorch.org" not in DOCKERFILE.read_text()


def test_the_torch_layer_copies_nothing_but_the_torch_lock() -> None:
    """A change to requirements.lock, versions.json, a node pin or the worker must not
    re-download the torch stack: nothing the torch layer does not read is copied before it."""
    for stage, marker in (("runtime", "torch torchvision torchaudio"), ("sage-builder", " torch")):
        torch_run = next(r for r in RUNS if r.stage == stage and marker in r.args)
        before = [
            i
            for i in INSTRUCTIONS[: INSTRUCTIONS.index(torch_run)]
            if i.stage == stage and i.keyword == "COPY" and "--from=" not in i.args
        ]
        assert [i.args.split()[0] for i in before] == ["docker/torch.lock"], stage
    runtime = [i for i in INSTRUCTIONS if i.stage == "runtime"]
    torch_at = runtime.index(next(r for r in runtime if "torch torchvision torchaudio" in r.args))
    requirements_at = runtime.index(
        next(r for r in runtime if "-r /app/requirements.txt" in r.args)
    )
    fetch_at = runtime.index(next(r for r in runtime if "git-fetch-commit" in r.args))
    worker_at = runtime.index(next(i for i in runtime if i.args.startswith("wan_worker/")))
    assert torch_at < requirements_at < fetch_at < worker_at


def lock_pins(name: str = "requirements.lock") -> dict[str, str]:
    pins = {}
    for line in (REPO / "docker" / name).read_text().splitlines():
        if line and not line.startswith((" ", "#")):
            name, _, version = line.partition("==")
            assert version, f"lock line is not name==version: {line}"
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    return pins


def test_torch_lock_pins_the_recorded_torch_stack_and_its_cuda_12_8_wheels() -> None:
    torch = lock_pins("torch.lock")
    recorded = VERSIONS["torch"]["packages"]
    assert {name: torch[name] for name in recorded} == recorded
    assert torch["nvidia-cuda-runtime-cu12"].startswith(VERSIONS["torch"]["cuda"] + ".")
    assert "triton" in torch


def test_the_two_locks_split_the_packages_between_them() -> None:
    torch, rest = lock_pins("torch.lock"), lock_pins()
    assert len(rest) > 100
    assert not set(torch) & set(rest)
    assert not [
        n for n in rest if re.fullmatch(r"nvidia-.*-cu12|torch|torchvision|torchaudio|triton", n)
    ]


def test_lock_agrees_with_the_workers_own_pins() -> None:
    """requirements.txt changed without regenerating the lock would fail the image build."""
    pins = lock_pins("torch.lock") | lock_pins()
    for raw in (REPO / "requirements.txt").read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        name, _, version = line.partition("==")
        name = re.sub(r"[-_.]+", "-", name.split("[", 1)[0]).lower()
        assert pins.get(name) == version, (
            f"requirements.txt pins {line}, docker/requirements.lock has {pins.get(name)}: "
            "run docker/lock_requirements.py"
        )


def test_rife_folder_is_left_to_provisioning_and_checked_at_build_time() -> None:
    """Provisioning links rife47.pth into the node's ckpts/rife (models.json link_into); a
    link of the whole folder to one volume would break boots without that volume."""
    text = " ".join(r.args for r in RUNS)
    assert "ckpts" not in text
    assert "ln -s" not in text
    manifest = json.loads((REPO / "workflows" / "models.json").read_text())
    (rife,) = [m for m in manifest["models"] if m["folder"] == "rife"]
    assert rife["filename"] == "rife47.pth"
    assert rife["link_into"] == [
        "{comfyui_dir}/custom_nodes/ComfyUI-Frame-Interpolation/ckpts/rife"
    ]


def test_smoke_test_runs_in_both_stages_and_is_the_last_runtime_step() -> None:
    wheel = [r for r in RUNS if "smoke_image.py" in r.args and " wheel " in r.args]
    assert [r.stage for r in wheel] == ["sage-builder"]
    runtime_runs = [r for r in RUNS if r.stage == "runtime"]
    last = runtime_runs[-1]
    assert "smoke_image.py image" in last.args
    for option in (
        "--workflow /app/workflows/wan_flf_i2v_api.json",
        "--lock /app/docker/torch.lock --lock /app/docker/requirements.lock",
        "--models-manifest /app/workflows/models.json",
        "--comfyui-dir /opt/ComfyUI",
    ):
        assert option in last.args
    assert "--skip-gpu-build-checks" not in last.args
    assert "--without-sageattention" not in last.args


def test_entrypoint_is_start_sh() -> None:
    entry = [i for i in INSTRUCTIONS if i.keyword == "ENTRYPOINT"]
    assert [i.args for i in entry] == ['["/app/start.sh"]']
    assert entry[0].stage == "runtime"


def copy_sources() -> list[str]:
    sources = []
    for copy in (i for i in INSTRUCTIONS if i.keyword == "COPY"):
        if "--from=" in copy.args:
            continue
        parts = [p for p in copy.args.split() if not p.startswith("--")]
        sources += parts[:-1]
    return sources


@pytest.mark.parametrize("source", copy_sources())
def test_copy_source_exists_and_is_in_the_build_context(source: str) -> None:
    path = REPO / source.rstrip("/")
    if not path.exists() and source in APP_FILES_FROM_ELSEWHERE:
        pytest.skip(f"{source} is written by another part of the project")
    assert path.exists(), f"COPY {source}: no such file in the repository"
    allowed = [
        line[1:].rstrip("/")
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    ]
    name = source.rstrip("/")
    assert any(name == a or name.startswith(a + "/") for a in allowed), (
        f"{source} is excluded by .dockerignore"
    )


def test_uv_pin_matches_the_dev_requirements() -> None:
    dev = (REPO / "requirements-dev.txt").read_text()
    assert f"uv=={VERSIONS['uv']}" in dev.split()
