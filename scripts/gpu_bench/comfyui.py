"""A fresh ComfyUI process per benchmark configuration, and the flags it runs with.

The stack ComfyUI runs on: ``image`` runs it as the image's torch (2.10, cu128, cuDNN 9.10) makes
ComfyUI 0.33 run: comfy-kitchen's ``cuda`` backend disabled and ``comfy/ops.py``'s conv3d
workaround on (through ``comfy_launch.py``, ComfyUI's source left as it is); ``host`` runs it
as the host's own torch does (torch 2.11 cu130: that backend on, the workaround off).
"""

from __future__ import annotations

import ast
import os
import re
import shlex
import signal
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from scripts.gpu_bench import BenchError

REPO_ROOT = Path(__file__).resolve().parents[2]
MODEL_PATHS = REPO_ROOT / "extra_model_paths.yaml"
DEFAULT_COMFYUI_ARGS = "--preview-method none --disable-auto-launch"  # start.sh's
LAUNCHER = Path(__file__).resolve().with_name("comfy_launch.py")


@dataclass(frozen=True)
class Stack:
    """What ComfyUI 0.33 decides from the torch under it, as the launcher reproduces it."""

    disabled_backends: tuple[str, ...]  # comfy-kitchen's, as comfy/quant_ops.py disables them
    conv3d_workaround: bool  # comfy/ops.py's NVIDIA_MEMORY_CONV_BUG_WORKAROUND

    def launcher_flags(self) -> list[str]:
        flags = [arg for name in self.disabled_backends for arg in ("--disable-ck-backend", name)]
        return [*flags, "--conv3d-workaround"] if self.conv3d_workaround else flags


# ComfyUI 0.33 disables comfy-kitchen's "cuda" under any torch older than cu130
# (comfy/quant_ops.py), and sets the conv3d workaround under torch 2.9-2.10 with cuDNN
# 9.10-9.14 (comfy/ops.py): the image's torch 2.10 cu128 with cuDNN 9.10.2 gets both.
STACKS: dict[str, Stack] = {
    "image": Stack(disabled_backends=("cuda",), conv3d_workaround=True),
    "host": Stack(disabled_backends=(), conv3d_workaround=False),
}
TRITON_BACKEND_FLAG = "--enable-triton-backend"
LAUNCHER_TAG = "comfy_launch:"
_BACKEND_LINE = re.compile(r"Found comfy_kitchen backend (\w+): (\{.*\})")
_CONV3D_LINE = re.compile(rf"{LAUNCHER_TAG} conv3d workaround (on|left off|not set)")


def launch_command(python: str, stack: str, main_args: list[str]) -> list[str]:
    """How ComfyUI is started on `stack`: ``python -u main.py ARGS`` on the host's stack, or
    through the launcher that makes ComfyUI decide as under the image's torch."""
    if stack not in STACKS:
        raise ValueError(f"unknown stack {stack!r}; use one of {sorted(STACKS)}")
    flags = STACKS[stack].launcher_flags()
    if not flags:
        return [python, "-u", "main.py", *main_args]
    return [python, "-u", str(LAUNCHER), *flags, "--", "main.py", *main_args]


def conv3d_state(log: str) -> str:
    """The launcher's conv3d workaround as ComfyUI's log tells it: "on", "left off" (not an
    NVIDIA GPU), "not set" (this ComfyUI has no such workaround), or "" (never set)."""
    match = _CONV3D_LINE.search(log)
    return match.group(1) if match else ""


def kitchen_backends(log: str) -> dict[str, str]:
    """comfy-kitchen's backends as ComfyUI's log lists them at start: name -> "on", "disabled"
    or "unavailable"."""
    found: dict[str, str] = {}
    for match in _BACKEND_LINE.finditer(log):
        try:
            info = ast.literal_eval(match.group(2))
        except (ValueError, SyntaxError):
            continue
        if not isinstance(info, dict):
            continue
        if info.get("disabled"):
            found[match.group(1)] = "disabled"
        elif info.get("available"):
            found[match.group(1)] = "on"
        else:
            found[match.group(1)] = "unavailable"
    return found


def stack_problem(stack: str, log: str) -> str | None:
    """Why ComfyUI's log shows it is not running on `stack`, or None when it is."""
    backends = kitchen_backends(log)
    for name in STACKS[stack].disabled_backends:
        if LAUNCHER_TAG not in log:
            return f"the launcher never disabled comfy-kitchen's {name!r} backend"
        if backends.get(name, "disabled") != "disabled":
            return f"comfy-kitchen's {name!r} backend is {backends[name]} in ComfyUI's log"
    if STACKS[stack].conv3d_workaround and not conv3d_state(log):
        return "the launcher never set ComfyUI's conv3d workaround (comfy.ops was not imported)"
    return None


def comfyui_args(base: str, extra: str, fast: list[str]) -> list[str]:
    """ComfyUI's flags: `base`, then `extra`, with every `--fast` feature (theirs and `fast`)
    under a single `--fast`. ComfyUI keeps only the last `--fast` it is given, so appending a
    second one would drop the first one's features; a bare `--fast` enables them all."""
    tokens = shlex.split(base) + shlex.split(extra)
    args: list[str] = []
    features: list[str] = []
    every = False
    index = 0
    while index < len(tokens):
        if tokens[index] != "--fast":
            args.append(tokens[index])
            index += 1
            continue
        end = index + 1
        while end < len(tokens) and not tokens[end].startswith("-"):
            end += 1
        given = tokens[index + 1 : end]
        every = every or not given
        features += [f for f in given if f not in features]
        index = end
    features += [f for f in fast if f not in features]
    if every:
        return [*args, "--fast"]
    return [*args, "--fast", *features] if features else args


def port_in_use(port: int) -> bool:
    """Whether something accepts connections at 127.0.0.1:`port`."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(2)
        return probe.connect_ex(("127.0.0.1", port)) == 0


class ComfyServer:
    """A fresh ComfyUI process for one configuration, with its own log and PID file."""

    def __init__(
        self,
        python: str,
        comfyui_dir: Path,
        port: int,
        args: list[str],
        models_root: Path,
        log_path: Path,
        pid_file: Path,
        stack: str = "host",
        env: dict[str, str] | None = None,
    ) -> None:
        self.python = python
        self.comfyui_dir = comfyui_dir
        self.port = port
        self.args = args
        self.models_root = models_root
        self.log_path = log_path
        self.pid_file = pid_file
        self.stack = stack
        self.env = dict(env or {})
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_handle: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return launch_command(self.python, self.stack, [
            "--listen", "127.0.0.1", "--port", str(self.port),
            "--extra-model-paths-config", str(MODEL_PATHS), *self.args,
        ])  # fmt: skip

    def environment(self) -> dict[str, str]:
        own = {"MODELS_ROOT": str(self.models_root), "PYTHONUNBUFFERED": "1"}
        return {**os.environ, **self.env, **own}

    def start(self) -> None:
        """Start ComfyUI; BenchError if something already listens on its port (the run would
        time that program instead, or ComfyUI would fail to bind)."""
        if port_in_use(self.port):
            raise BenchError(
                f"port {self.port} is in use: another program (a ComfyUI left from an earlier "
                "run?) listens at 127.0.0.1 there; stop it or pass --port"
            )
        env = self.environment()
        self.log_handle = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            self.command(),
            cwd=self.comfyui_dir,
            stdout=self.log_handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
        self.pid_file.write_text(str(self.proc.pid), encoding="ascii")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.log_handle is not None:
            self.log_handle.close()
        self.pid_file.unlink(missing_ok=True)
