"""RunPod Hub files and the local compose file say what the image needs: an RTX 5090 with a
CUDA 12.8-capable driver, the worker's settings as inputs, the self-test, the models volume."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import yaml
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
HUB = json.loads((REPO / ".runpod" / "hub.json").read_text())
HUB_TESTS = json.loads((REPO / ".runpod" / "tests.json").read_text())
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
VERSIONS = json.loads((REPO / "docker" / "versions.json").read_text())
INPUTS = {
    "HF_TOKEN",
    "R2_ENDPOINT",
    "R2_BUCKET",
    "R2_ACCESS_KEY",
    "R2_SECRET_KEY",
    "BUCKET_ENDPOINT_URL",
    "BUCKET_NAME",
    "BUCKET_ACCESS_KEY_ID",
    "BUCKET_SECRET_ACCESS_KEY",
}
SECRETS = {"HF_TOKEN", "R2_ACCESS_KEY", "R2_SECRET_KEY", "BUCKET_SECRET_ACCESS_KEY"}


def test_hub_listing_is_a_serverless_video_worker_on_one_rtx_5090() -> None:
    for field in ("title", "description", "type", "category", "config"):
        assert HUB[field]
    assert HUB["type"] == "serverless"
    assert HUB["category"] == "video"
    config = HUB["config"]
    assert config["runsOn"] == "GPU"
    assert config["gpuCount"] == 1
    assert config["gpuIds"] == "ADA_32_PRO"  # RunPod's RTX 5090 pool
    assert config["containerDiskInGb"] >= 60  # models land here when no volume is attached


def test_hub_allows_only_drivers_that_run_cuda_12_8() -> None:
    for allowed in (
        HUB["config"]["allowedCudaVersions"],
        HUB_TESTS["config"]["allowedCudaVersions"],
    ):
        assert VERSIONS["torch"]["cuda"] in allowed
        for version in allowed:
            major, minor = (int(part) for part in version.split("."))
            assert (major, minor) >= (12, 8), f"a CUDA {version} driver cannot run CUDA 12.8"


def test_hub_env_offers_every_setting_as_an_input_with_empty_secret_defaults() -> None:
    env = {item["key"]: item for item in HUB["config"]["env"]}
    assert set(env) == INPUTS
    for key, item in env.items():
        spec = item["input"]
        assert spec["type"] == "string"
        assert spec["name"]
        assert spec["description"]
        if key in SECRETS:
            assert spec["default"] == ""


def test_hub_test_runs_the_self_test_on_an_rtx_5090() -> None:
    config = HUB_TESTS["config"]
    assert config["gpuTypeId"] == "NVIDIA GeForce RTX 5090"
    assert config["gpuCount"] == 1
    assert {"key": "SELF_TEST", "value": "1"} in config["env"]
    (case,) = HUB_TESTS["tests"]
    assert case["name"]
    assert 60_000 <= case["timeout"] <= 1_800_000  # milliseconds
    assert case["input"]["prompt"].strip()
    image = Image.open(io.BytesIO(base64.b64decode(case["input"]["start_image"], validate=True)))
    image.verify()
    assert image.format == "PNG"
    assert image.size == (256, 256)


def test_compose_serves_the_local_api_on_8000_with_a_gpu_and_the_models_volume() -> None:
    worker = COMPOSE["services"]["worker"]
    assert worker["build"] == "."
    command = worker["command"]
    assert "--rp_serve_api" in command
    assert command[command.index("--rp_api_host") + 1] == "0.0.0.0"  # noqa: S104 - in the container
    assert command[command.index("--rp_api_port") + 1] == "8000"
    assert worker["ports"] == ["127.0.0.1:8000:8000"]
    assert worker["volumes"] == ["models:/runpod-volume"]
    assert "models" in COMPOSE["volumes"]
    (device,) = worker["deploy"]["resources"]["reservations"]["devices"]
    assert device == {"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}


def test_compose_passes_secrets_from_the_environment_never_literally() -> None:
    env = COMPOSE["services"]["worker"]["environment"]
    assert set(env) >= INPUTS
    for key, value in env.items():
        assert value == f"${{{key}:-}}", f"{key} must come from the environment"


# ------------------------------------------------------------------ the image workflow

IMAGE_WORKFLOW = yaml.safe_load((REPO / ".github" / "workflows" / "image.yml").read_text())
BUILD_JOB = IMAGE_WORKFLOW["jobs"]["build"]


def build_step(name: str) -> dict:
    (step,) = [s for s in BUILD_JOB["steps"] if s["name"] == name]
    return step


def step_index(name: str) -> int:
    return [s["name"] for s in BUILD_JOB["steps"]].index(name)


def test_a_main_or_tag_build_is_never_cancelled_only_pull_requests_are() -> None:
    concurrency = IMAGE_WORKFLOW["concurrency"]
    assert concurrency["group"] == "image-${{ github.ref }}"
    assert concurrency["cancel-in-progress"] == "${{ github.event_name == 'pull_request' }}"


def test_the_layer_cache_is_in_ghcr_and_a_failed_export_is_harmless() -> None:
    build = build_step("Build, smoke-test and push")["with"]
    assert "gha" not in build["cache-from"] + build["cache-to"]
    assert build["cache-from"] == "type=registry,ref=${{ steps.name.outputs.image }}:buildcache"
    cache_to = build["cache-to"]
    assert "type=registry,ref={0}:buildcache" in cache_to
    assert "mode=max" in cache_to  # the builder stage (SageAttention's compile) is cached too
    assert "ignore-error=true" in cache_to
    assert cache_to.startswith("${{ env.PUSH == 'true' && ")  # only a build that may push


def test_the_disk_is_freed_and_docker_moved_before_buildkit_starts() -> None:
    buildx = step_index("Set up Buildx")
    assert step_index("Free disk space") < step_index("Move Docker's data root to the larger disk")
    assert step_index("Move Docker's data root to the larger disk") < buildx
    assert step_index("Check the free disk") < step_index("Check out") < buildx
    moving = build_step("Move Docker's data root to the larger disk")["run"]
    assert "data_root=/mnt/docker" in moving
    assert '"data-root": $root' in moving
    assert BUILD_JOB["defaults"]["run"]["shell"] == "bash"  # -eo pipefail


def run_disk_check(tmp_path: Path, needed_gb: int) -> subprocess.CompletedProcess[str]:
    script = build_step("Check the free disk")["run"]
    env = {**os.environ, "DATA_ROOT": str(tmp_path), "BUILD_DISK_NEEDED_GB": str(needed_gb)}
    return subprocess.run(
        ["bash", "-eo", "pipefail", "-c", script],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def test_the_disk_check_stops_the_job_with_a_clear_message_below_the_need(
    tmp_path: Path,
) -> None:
    needed = shutil.disk_usage(tmp_path).free // 1024**3 + 1000
    short = run_disk_check(tmp_path, needed)
    assert short.returncode == 1
    assert re.fullmatch(
        rf"::error title=Not enough disk for the image build::\d+ GB free at {tmp_path}, the "
        rf"build needs {needed} GB \(docs/image.md\)\. Use a larger runner \(runs-on\) or free "
        r"more space in the step above\.",
        short.stdout.splitlines()[-1],
    )
    enough = run_disk_check(tmp_path, 0)
    assert enough.returncode == 0, enough.stdout
    assert re.fullmatch(rf"\d+ GB free at {tmp_path}; the build needs 0 GB\n", enough.stdout)


def test_the_recorded_disk_need_is_the_one_docs_image_md_gives() -> None:
    needed = IMAGE_WORKFLOW["env"]["BUILD_DISK_NEEDED_GB"]
    assert f"`BUILD_DISK_NEEDED_GB` is {needed}" in (REPO / "docs" / "image.md").read_text()
