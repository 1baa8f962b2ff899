"""RunPod Hub files, the local compose file and the image workflow say what the image needs: an
RTX 5090 with a CUDA 12.8-capable driver, the worker's settings as inputs (parsed by the worker's
own settings), a quick self-test whose video fits inline, the models volume, and a build that
survives a hosted runner."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from PIL import Image

from wan_worker.job_input import parse_job_input
from wan_worker.settings.boot import BootSettings
from wan_worker.settings.env import EnvVars
from wan_worker.settings.provisioning import ProvisionSettings
from wan_worker.settings.worker import WorkerSettings
from wan_worker.workflow import load_template

REPO = Path(__file__).resolve().parent.parent
HUB = json.loads((REPO / ".runpod" / "hub.json").read_text())
HUB_TESTS = json.loads((REPO / ".runpod" / "tests.json").read_text())
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
VERSIONS = json.loads((REPO / "docker" / "versions.json").read_text())
# What a user sets on the Hub's form: the model sources, the output storage (its region
# included: AWS S3 needs the bucket's), the attention choice, the job deadline, the self-test.
INPUTS = {
    "WARMUP",
    "HF_TOKEN",
    "R2_ENDPOINT",
    "R2_BUCKET",
    "R2_ACCESS_KEY",
    "R2_SECRET_KEY",
    "MODELS_BUNDLE_REPO",
    "MODELS_BUNDLE_REVISION",
    "HF_HUB_OFFLINE",
    "BUCKET_ENDPOINT_URL",
    "BUCKET_NAME",
    "BUCKET_ACCESS_KEY_ID",
    "BUCKET_SECRET_ACCESS_KEY",
    "BUCKET_REGION",
    "BUCKET_KEY_PREFIX",
    "BUCKET_URL_EXPIRY_S",
    "ATTENTION",
    "ATTENTION_FALLBACK",
    "JOB_TIMEOUT_S",
    "SELF_TEST",
}
SECRETS = {"HF_TOKEN", "R2_ACCESS_KEY", "R2_SECRET_KEY", "BUCKET_SECRET_ACCESS_KEY"}
HUB_ENV = {item["key"]: item for item in HUB["config"]["env"]}


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


def hub_form_values(choose: str = "default") -> dict[str, str]:
    """The environment the Hub's form sets: each input at its default (or, for a boolean, the
    value it sends when switched `on`/`off`)."""
    values = {}
    for key, item in HUB_ENV.items():
        spec = item["input"]
        if spec["type"] == "boolean":
            state = spec["default"] if choose == "default" else choose == "on"
            values[key] = spec["trueValue"] if state else spec["falseValue"]
        else:
            values[key] = str(spec["default"])
    return values


def test_hub_env_offers_every_setting_a_user_needs_with_empty_secret_defaults() -> None:
    assert set(HUB_ENV) == INPUTS
    for key, item in HUB_ENV.items():
        spec = item["input"]
        assert spec["type"] in ("string", "number", "boolean")
        assert spec["name"]
        assert spec["description"]
        if key in SECRETS:
            assert spec["default"] == ""
    assert (
        HUB_ENV["BUCKET_REGION"]["input"]["advanced"] is False
    )  # the bucket's own region on AWS is found by asking S3


def test_every_hub_setting_is_documented() -> None:
    documented = (REPO / "docs" / "configuration.md").read_text()
    for key in HUB_ENV:
        assert f"`{key}`" in documented, f"{key} is on the Hub form but in no documentation"


def test_the_hub_forms_defaults_are_the_workers_own_defaults() -> None:
    """A deploy that leaves the form alone behaves as one that sets nothing."""
    form = hub_form_values()
    assert WorkerSettings.from_env(form) == WorkerSettings.from_env({})
    assert ProvisionSettings.from_env(form) == ProvisionSettings.from_env({})
    serverless = {"RUNPOD_ENDPOINT_ID": "ep"}  # the Hub deploys serverless endpoints only
    settings = WorkerSettings.from_env({})
    assert BootSettings.from_env(settings, {**form, **serverless}) == BootSettings.from_env(
        settings, serverless
    )
    assert form["SELF_TEST"] == "0"


def test_every_value_the_hub_form_can_send_is_accepted() -> None:
    for state in ("on", "off"):
        form = hub_form_values(state)
        WorkerSettings.from_env(form)
        ProvisionSettings.from_env(form)
        for key, item in HUB_ENV.items():
            if item["input"]["type"] == "boolean":
                assert EnvVars(form).flag(key, state == "off") is (state == "on")
    for option in HUB_ENV["ATTENTION"]["input"]["options"]:
        assert WorkerSettings.from_env({"ATTENTION": option["value"]}).attention == option["value"]
    for key in ("BUCKET_URL_EXPIRY_S", "JOB_TIMEOUT_S"):
        spec = HUB_ENV[key]["input"]
        for value in (spec["min"], spec["max"]):
            WorkerSettings.from_env({key: str(value)})
    # start.sh reads SELF_TEST itself: is_true accepts 1/true/yes/on.
    assert "1 | true | yes | on) return 0" in (REPO / "start.sh").read_text()


def test_hub_test_runs_the_self_test_on_an_rtx_5090() -> None:
    config = HUB_TESTS["config"]
    assert config["gpuTypeId"] == "NVIDIA GeForce RTX 5090"
    assert config["gpuCount"] == 1
    assert {"key": "SELF_TEST", "value": "1"} in config["env"]
    assert {"key": "SELF_TEST_SIZE", "value": "tiny"} in config["env"]
    (case,) = HUB_TESTS["tests"]
    assert case["name"]
    assert 60_000 <= case["timeout"] <= 1_800_000  # milliseconds
    image = Image.open(io.BytesIO(base64.b64decode(case["input"]["start_image"], validate=True)))
    image.verify()
    assert image.format == "PNG"


def test_the_hub_tests_input_is_valid_and_small() -> None:
    (case,) = HUB_TESTS["tests"]
    settings = WorkerSettings.from_env({})
    request = parse_job_input(case["input"], load_template(REPO / settings.workflow_path), settings)
    params = request.params
    assert (params.width, params.height) == (case["input"]["width"], case["input"]["height"])
    assert params.width * params.height <= 128 * 128


def test_the_workflows_mp4_format_reaches_comfyui_through_extra_model_paths() -> None:
    """Node 906 names a VideoHelperSuite format the project ships (h264-mp4 with x264's `fast`
    preset); ComfyUI finds it through extra_model_paths.yaml, a path relative to that file, as
    in the image (/app) and in a checkout alike."""
    combine = json.loads((REPO / "workflows/wan_flf_i2v_api.json").read_text())["906"]["inputs"]
    config = yaml.safe_load((REPO / "extra_model_paths.yaml").read_text())
    folder = REPO / config["worker"]["VHS_video_formats"]
    fmt = json.loads((folder / combine["format"].removeprefix("video/")).read_text())
    assert fmt["main_pass"][:6] == ["-n", "-c:v", "libx264", "-preset", "fast", "-pix_fmt"]
    widgets = json.loads((REPO / "tests/data/object_info.json").read_text())["VHS_VideoCombine"]
    formats = widgets["input"]["required"]["format"]
    assert combine["format"] in formats[0]
    # the same widgets as VideoHelperSuite's own h264-mp4, so node 906's inputs are unchanged
    assert formats[1]["formats"][combine["format"]] == formats[1]["formats"]["video/h264-mp4"]


@pytest.mark.integration
def test_the_hub_tests_video_fits_inline_even_if_it_is_pure_noise(tmp_path: Path) -> None:
    """The self-test's video is noise; the test has no output storage, so the MP4 must come
    back as base64 within MAX_BASE64_BYTES. Pure random noise is the least compressible video:
    encode it at the test's size, frame count, rate and the workflow's own encoder settings."""
    (case,) = HUB_TESTS["tests"]
    settings = WorkerSettings.from_env({})
    template = load_template(REPO / settings.workflow_path)
    combine = json.loads((REPO / settings.workflow_path).read_text())["906"]["inputs"]
    assert combine["format"] == "video/h264-mp4-fast.json"
    main_pass = json.loads((REPO / "workflows/video_formats/h264-mp4-fast.json").read_text())
    preset = main_pass["main_pass"][main_pass["main_pass"].index("-preset") + 1]
    width, height = case["input"]["width"], case["input"]["height"]
    noise = "geq=lum='random(1)*255':cb='random(2)*255':cr='random(3)*255'"
    video = tmp_path / "noise.mp4"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-nostdin", "-f", "lavfi",
         "-i", f"nullsrc=s={width}x{height}:r={template.fps},{noise}",
         "-frames:v", str(template.output_frames), "-c:v", "libx264", "-preset", preset,
         "-crf", str(combine["crf"]), "-pix_fmt", combine["pix_fmt"], str(video)],
        check=True,
    )  # fmt: skip
    encoded = len(base64.b64encode(video.read_bytes()))
    assert encoded <= settings.max_base64_bytes, (
        f"a {width}x{height} noise video is {encoded} base64 bytes, over MAX_BASE64_BYTES"
    )


@pytest.mark.integration
def test_the_hubs_handler_py_runs_the_workers_entry_point(tmp_path: Path) -> None:
    """The Hub asks for a handler.py; .runpod/handler.py runs rp_handler.py, arguments and all."""
    result = subprocess.run(
        [sys.executable, str(REPO / ".runpod" / "handler.py"),
         "--test_input", json.dumps({"input": {"prompt": "a cat"}})],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert "start_image: is required" in result.stdout + result.stderr
    assert (REPO / "Dockerfile").is_file() and (REPO / "README.md").is_file()


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
    assert set(env) >= SECRETS | {"R2_ENDPOINT", "R2_BUCKET", "BUCKET_ENDPOINT_URL", "BUCKET_NAME"}
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


@pytest.mark.integration
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


def test_every_push_to_main_publishes_the_tag_the_readme_runs() -> None:
    """docs/operations.md runs `ghcr.io/OWNER/REPO:latest` on your own GPU: a push to main must
    push `latest`, and a release tag must not move it back to an older build."""
    operations = (REPO / "docs" / "operations.md").read_text()
    (image_ref,) = re.findall(r"ghcr\.io/OWNER/REPO:(\S+) --rp_serve_api", operations)
    meta = build_step("Tags and labels")["with"]
    tags = [line.strip() for line in meta["tags"].splitlines() if line.strip()]
    assert f"type=raw,value={image_ref},enable={{{{is_default_branch}}}}" in tags
    assert meta["flavor"] == "latest=false"
    assert "main" in IMAGE_WORKFLOW[True]["push"]["branches"]  # YAML 1.1 reads `on` as true
