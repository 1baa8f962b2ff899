"""The boot's configuration: read once from the environment into a typed, frozen object.

Every variable is documented in docs/provisioning.md. ComfyUI's directory, PID file, log and
readiness time-out come from the handler's settings (`wan_worker.settings`), the models root
from the provisioner's (`wan_worker.provision.settings`), so each is read in one place.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import wan_worker.env as read
from wan_worker.comfy.launch import LaunchSpec
from wan_worker.errors import ConfigError
from wan_worker.gpu_ready import GpuWaitSettings
from wan_worker.node_packs import read_mode
from wan_worker.provision.settings import runpod_mode
from wan_worker.settings import PROJECT_ROOT, Settings

DEFAULT_COMFYUI_ARGS = "--preview-method none --disable-auto-launch"


def _words(env: Mapping[str, str], name: str, default: str) -> tuple[str, ...]:
    """Shell-like words (quotes group them); unset or empty means `default`."""
    raw = read.text(env, name, default)
    try:
        return tuple(shlex.split(raw))
    except ValueError as exc:
        raise ConfigError(f"{name}={raw!r} cannot be split into arguments ({exc})") from None


def _size(env: Mapping[str, str], name: str, default: str) -> tuple[int, int]:
    text = read.text(env, name, default).lower()
    parts = text.split("x")
    if len(parts) != 2 or not all(p.isdigit() and int(p) >= 16 for p in parts):
        raise ConfigError(f"{name}={text!r} must be WIDTHxHEIGHT, e.g. {default}")
    return int(parts[0]), int(parts[1])


def _share(env: Mapping[str, str], name: str, default: float) -> float:
    value = read.number(env, name, default, 0)
    if value > 1:
        raise ConfigError(f"{name}={env.get(name)!r} must be a share of the time, from 0 to 1")
    return value


@dataclass(frozen=True)
class BootSettings:
    enabled: bool
    launch: LaunchSpec
    comfyui_url: str
    skip_provision: bool = False
    wait_comfyui: bool = False
    readahead: bool = True
    readahead_reserve_bytes: int = 16 * 1024**3
    #: The text encoder and the VAE of the fixed workflow (6662 MB) fit; the experts wait.
    readahead_before_answer_bytes: int = 6800 << 20
    #: Past that, until ComfyUI answers, the readahead reads this share of the time (0: waits;
    #: on an H200, reading half the time slowed ComfyUI's start more than it saved the job).
    readahead_share_before_answer: float = 0.0
    #: Before that wait, read the small tensors of the files to come (readahead.small_tensors).
    readahead_small_tensors: bool = True
    warmup: bool = False
    warmup_size: tuple[int, int] = (480, 832)
    warmup_frames: int = 9
    events_file: Path | None = None
    node_packs: str = "workflow"
    #: None when SKIP_GPU_CHECK=1 (CPU-only local runs and tests).
    gpu_check: GpuWaitSettings | None = None

    @classmethod
    def from_env(cls, settings: Settings, env: Mapping[str, str] | None = None) -> BootSettings:
        env = os.environ if env is None else env
        url_port = urlsplit(settings.comfyui_url).port
        port = read.integer(env, "COMFYUI_PORT", url_port or 8188, 1)
        url = settings.comfyui_url if "COMFYUI_URL" in env else f"http://127.0.0.1:{port}"
        comfyui_dir = settings.comfyui_dir
        events = read.text(env, "BOOT_EVENTS_FILE", "")
        return cls(
            enabled=read.flag(env, "WORKER_BOOT", False),
            launch=LaunchSpec(
                python=read.text(env, "COMFYUI_PYTHON", sys.executable),
                main=Path(read.text(env, "COMFYUI_MAIN", str(comfyui_dir / "main.py"))),
                comfyui_dir=comfyui_dir,
                listen=read.text(env, "COMFYUI_LISTEN", "127.0.0.1"),
                port=port,
                extra_model_paths=Path(
                    read.text(
                        env, "EXTRA_MODEL_PATHS", str(PROJECT_ROOT / "extra_model_paths.yaml")
                    )
                ),
                args=_words(env, "COMFYUI_ARGS", DEFAULT_COMFYUI_ARGS),
                extra_args=_words(env, "COMFYUI_EXTRA_ARGS", ""),
                pid_file=settings.comfyui_pid_file,
                log_file=settings.comfyui_log,
            ),
            comfyui_url=url,
            skip_provision=read.flag(env, "SKIP_PROVISION", False),
            wait_comfyui=read.flag(env, "COMFYUI_WAIT_READY", False),
            readahead=read.flag(env, "READAHEAD", True),
            readahead_reserve_bytes=read.integer(env, "READAHEAD_RESERVE_MB", 16384, 0) << 20,
            readahead_before_answer_bytes=read.integer(env, "READAHEAD_BEFORE_ANSWER_MB", 6800, 0)
            << 20,
            readahead_share_before_answer=_share(env, "READAHEAD_SHARE_BEFORE_ANSWER", 0.0),
            readahead_small_tensors=read.flag(env, "READAHEAD_SMALL_TENSORS", True),
            warmup=read.flag(env, "WARMUP", runpod_mode(env) == "serverless"),
            warmup_size=_size(env, "WARMUP_SIZE", "480x832"),
            warmup_frames=read.integer(env, "WARMUP_FRAMES", 9, 1),
            events_file=Path(events) if events else None,
            node_packs=read_mode(env),
            gpu_check=(
                None if read.flag(env, "SKIP_GPU_CHECK", False) else GpuWaitSettings.from_env(env)
            ),
        )
