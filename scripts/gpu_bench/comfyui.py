"""A fresh ComfyUI process per benchmark configuration, and the flags it runs with."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
from pathlib import Path
from typing import IO

REPO_ROOT = Path(__file__).resolve().parents[2]
MODEL_PATHS = REPO_ROOT / "extra_model_paths.yaml"
DEFAULT_COMFYUI_ARGS = "--preview-method none --disable-auto-launch"  # start.sh's


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
    ) -> None:
        self.python = python
        self.comfyui_dir = comfyui_dir
        self.port = port
        self.args = args
        self.models_root = models_root
        self.log_path = log_path
        self.pid_file = pid_file
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_handle: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [
            self.python, "-u", "main.py", "--listen", "127.0.0.1", "--port", str(self.port),
            "--extra-model-paths-config", str(MODEL_PATHS), *self.args,
        ]  # fmt: skip

    def start(self) -> None:
        env = dict(os.environ, MODELS_ROOT=str(self.models_root), PYTHONUNBUFFERED="1")
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
