"""The whole boot outside the image, for tests: start.sh from its first line, the real handler
process (it boots ComfyUI and the models), the ComfyUI double standing in for ComfyUI's main.py,
and the boot's own events, read from its log (`tests.boot_events`), to check the order things
happened in.

`COMFY_MAIN` records the command line, working directory and MODELS_ROOT ComfyUI was given
(the last launch in FAKE_COMFY_RECORD, every launch as a line of FAKE_COMFY_RECORD.launches),
then runs the double with the same command line (the double takes ComfyUI's flags). It dies
at once when FAKE_COMFY_CRASH is set. With FAKE_COMFY_ANSWER_WHEN set (`hold_comfyui`) it
stands for ComfyUI's imports until that file exists: it listens, and so answers, only once the
test says so (`BootRun.let_comfyui_answer`). `HANDLER` records the arguments and PID start.sh
exec'd it with, puts RunPod's mounts in the test's folders (TEST_NETWORK_VOLUME, a mount point
while it exists; TEST_POD_VOLUME; TEST_HF_CACHE), then runs the real rp_handler.py in the same
process.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.boot_events import parse_events
from tests.support import closed_port, free_port, wait_for

ROOT = Path(__file__).resolve().parent.parent
START = ROOT / "start.sh"

COMFY_MAIN = r"""
import json, os, sys
sys.path.insert(0, os.environ["APP_DIR"])
record = {"argv": sys.argv[1:], "pid": os.getpid(), "cwd": os.getcwd(),
          "models_root": os.environ.get("MODELS_ROOT")}
with open(os.environ["FAKE_COMFY_RECORD"], "w") as f:
    json.dump(record, f)
with open(os.environ["FAKE_COMFY_RECORD"] + ".launches", "a") as f:
    f.write(json.dumps(record) + "\n")
print("stand-in ComfyUI starting", flush=True)
if os.environ.get("FAKE_COMFY_CRASH"):
    print("Exception: stand-in crash on start-up", flush=True)
    sys.exit(1)
answer_when = os.environ.get("FAKE_COMFY_ANSWER_WHEN")
if answer_when:
    import time
    while not os.path.exists(answer_when):  # "importing" until the test lets it answer
        time.sleep(0.02)
from tests.comfy_double import main
main(sys.argv[1:])
"""

INSTALLED_PACKS = ("ComfyUI-Frame-Interpolation", "ComfyUI-KJNodes", "ComfyUI-VideoHelperSuite",
                   "ComfyUI-Manager")  # fmt: skip
#: The flags that load only the workflow's packs (wan_worker.node_packs).
WORKFLOW_PACK_ARGS = [
    "--disable-all-custom-nodes",
    "--whitelist-custom-nodes",
    "ComfyUI-Frame-Interpolation",
    "ComfyUI-KJNodes",
    "ComfyUI-VideoHelperSuite",
    "--disable-api-nodes",
]

HANDLER = r"""
import json, os, runpy, sys
record = {"argv": sys.argv[1:], "pid": os.getpid()}
with open(os.environ["FAKE_HANDLER_RECORD"], "w") as f:
    json.dump(record, f)
sys.path.insert(0, os.environ["APP_DIR"])
from pathlib import Path
from wan_worker.settings import provisioning
volume = Path(os.environ["TEST_NETWORK_VOLUME"])  # a mount point while it exists
provisioning.RUNPOD = provisioning.RunPodMounts(
    network_volume=volume,
    pod_volume=Path(os.environ["TEST_POD_VOLUME"]),
    hf_cache=Path(os.environ["TEST_HF_CACHE"]),
    is_mount=lambda path: path == volume and path.is_dir(),
)
runpy.run_path(os.path.join(os.environ["APP_DIR"], "rp_handler.py"), run_name="__main__")
"""


def boot_env(tmp_path: Path) -> dict[str, str]:
    """The environment of one start.sh run: everything under `tmp_path`, nothing reached
    outside loopback, no GPU check, RunPod's network volume at tmp_path/volume."""
    comfy = tmp_path / "comfy"
    comfy.mkdir()
    (comfy / "main.py").write_text(COMFY_MAIN)
    for pack in INSTALLED_PACKS:  # the image installs nine packs; the workflow needs these
        (comfy / "custom_nodes" / pack).mkdir(parents=True)
    (tmp_path / "handler.py").write_text(HANDLER)
    (tmp_path / "volume").mkdir()
    keep = ("PATH", "HOME", "LANG", "SYSTEMROOT")
    env = {k: v for k, v in os.environ.items() if k in keep}
    env.update(
        {
            "APP_DIR": str(ROOT),
            "PYTHON": sys.executable,
            "COMFYUI_DIR": str(comfy),
            "COMFYUI_URL": f"http://127.0.0.1:{free_port()}",
            "COMFYUI_PID_FILE": str(tmp_path / "run" / "comfyui.pid"),
            "COMFYUI_LOG": str(tmp_path / "run" / "comfyui.log"),
            "COMFYUI_READY_TIMEOUT_S": "60",
            "HANDLER": str(tmp_path / "handler.py"),
            "TEST_NETWORK_VOLUME": str(tmp_path / "volume"),
            "TEST_POD_VOLUME": str(tmp_path / "no-workspace"),
            "TEST_HF_CACHE": str(tmp_path / "hf-cache"),
            "HF_ENDPOINT": f"http://127.0.0.1:{closed_port()}",
            "SKIP_GPU_CHECK": "1",
            "READAHEAD_RESERVE_MB": "0",
            "ATTENTION": "sdpa",
            "JOB_TIMEOUT_S": "120",
            "FAKE_COMFY_RECORD": str(tmp_path / "comfy.json"),
            "FAKE_HANDLER_RECORD": str(tmp_path / "handler.json"),
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def hold_comfyui(env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """`env` with the stand-in ComfyUI holding back its first answer until the test calls
    `BootRun.let_comfyui_answer` (ComfyUI's imports, for as long as the test needs)."""
    return {**env, "FAKE_COMFY_ANSWER_WHEN": str(tmp_path / "comfyui-may-answer")}


class BootRun:
    """One start.sh process. Output goes to files: the ComfyUI it leaves running keeps its
    copies of the pipes open, so waiting for pipe EOF would wait for ComfyUI."""

    def __init__(self, env: dict[str, str], tmp_path: Path, *args: str) -> None:
        self.env = env
        self.out_path = tmp_path / "start.out"
        self.err_path = tmp_path / "start.err"
        with self.out_path.open("w") as out, self.err_path.open("w") as err:
            self.proc = subprocess.Popen(
                ["bash", str(START), *args], env=env, stdout=out, stderr=err
            )

    def wait(self, timeout_s: float = 120) -> int:
        return self.proc.wait(timeout=timeout_s)

    @property
    def stdout(self) -> str:
        return self.out_path.read_text()

    @property
    def stderr(self) -> str:
        return self.err_path.read_text()

    @property
    def output(self) -> str:
        """Everything it printed (the runpod SDK writes its own lines to stdout)."""
        return self.stdout + self.stderr

    def events(self) -> list[dict[str, Any]]:
        """The boot's events so far, from its log (stderr)."""
        return parse_events(self.stderr) if self.err_path.exists() else []

    def names(self) -> list[str]:
        return [event["event"] for event in self.events()]

    def event(self, name: str) -> dict[str, Any]:
        found = [e for e in self.events() if e["event"] == name]
        assert found, f"no {name} event in {self.names()}\n{self.stderr[-3000:]}"
        return found[0]

    def wait_event(self, name: str, timeout_s: float = 60) -> dict[str, Any]:
        """The first `name` event, once the boot has written it (the process must live)."""
        return wait_for(
            lambda: next((e for e in self.events() if e["event"] == name), None),
            f"a {name} event",
            timeout_s=timeout_s,
            gone=lambda: self.proc.poll() is not None,
            context=lambda: f"events: {self.names()}\n{self.stderr[-3000:]}",
        )

    def let_comfyui_answer(self) -> None:
        """A stand-in ComfyUI held by `hold_comfyui` now listens, and answers."""
        Path(self.env["FAKE_COMFY_ANSWER_WHEN"]).touch()

    def stop(self) -> None:
        """End the boot and the ComfyUI it started."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        stop_comfyui(self.env)


def stop_comfyui(env: dict[str, str]) -> None:
    """End the ComfyUI a boot started (it outlives a handler that exits)."""
    pid_file = Path(env["COMFYUI_PID_FILE"])
    if pid_file.exists():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid_file.read_text()), signal.SIGTERM)


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie, dead but not reaped, counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")
