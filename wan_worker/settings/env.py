"""Typed reads of environment variables: a bad value raises ConfigError naming the variable.

Every settings class of the worker reads the environment through one `EnvVars`, so all accept
the same spellings (1/0, true/false, yes/no, on/off for flags) and fail with the same kind of
message. A variable that is unset or empty takes its default, flags included; numbers must be
finite (`inf`, `nan` and `1e400` are refused).

`EnvVars.kinds` records every variable read and how (`text`, `number`, `flag`, ...), so the
tests can list every variable the worker reads without a list kept by hand.

`REMOVED` names the variables earlier versions read and this one does not; the boot logs a
warning for each that is still set (`removed_still_set`), so a deployment that sets one learns
that it has no effect, and why.
"""

from __future__ import annotations

import math
import os
import shlex
from collections.abc import Mapping
from pathlib import Path

from wan_worker.errors import ConfigError

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}

#: Variables that earlier versions read, and what became of each.
REMOVED: dict[str, str] = {
    # Provisioning: fixed values now (wan_worker/settings/provisioning.py says why each).
    "PROVISION_PARALLEL_FILES": "three files download at once, a fixed value; unset it",
    "PROVISION_CONNECTIONS": "each file downloads over 8 connections, a fixed value; unset it",
    "PROVISION_CHUNK_MB": "files download in 64 MiB ranges, a fixed value; unset it",
    "PROVISION_RETRIES": "each range is tried 5 times before the next source; unset it",
    "PROVISION_BACKOFF_S": "a retry waits 1 s, doubling each time, at most 30 s; unset it",
    "PROVISION_TIMEOUT_S": "one request times out after 60 s; unset it",
    "PROVISION_MIN_FREE_MB": (
        "1 GiB is kept free after the downloads; if the models do not fit, attach a larger "
        "volume or point MODELS_ROOT at a disk with room"
    ),
    "PROVISION_PROGRESS_S": "download progress is logged every 10 s; unset it",
    "PROVISION_CLAIM_STALE_S": (
        "a download claim is taken over 60 s after its owner's heartbeat stops; unset it"
    ),
    "PROVISION_WAIT_S": (
        "a worker waits at most 1800 s for another worker's download of a file, then fails and "
        "RunPod starts it again; unset it"
    ),
    "RUNPOD_VOLUME_DIR": (
        "the network volume is where RunPod mounts it, /runpod-volume; to keep the models in "
        "another folder, set MODELS_ROOT"
    ),
    "WORKSPACE_DIR": (
        "a pod's volume is where RunPod mounts it, /workspace; to keep the models in another "
        "folder, set MODELS_ROOT"
    ),
    "RUNPOD_HF_CACHE": (
        "RunPod's cached models are read where RunPod mounts them, "
        "/runpod-volume/huggingface-cache/hub; unset it"
    ),
    "READAHEAD_SHARE_BEFORE_ANSWER": (
        "the readahead always holds what passes READAHEAD_BEFORE_ANSWER_MB until ComfyUI "
        "answers (reading during ComfyUI's imports was measured as no gain, "
        "docs/history/benchmarks.md); unset it"
    ),
    "READAHEAD_SMALL_TENSORS": (
        "the pass over the experts' small tensors is gone (its gain to the first video was "
        "not settled, docs/history/benchmarks.md); unset it"
    ),
    "BOOT_EVENTS_FILE": (
        "the boot's events are in its log only, one `[boot] +SECONDSs NAME key=value ...` line "
        "each, with the log's timestamp; read them there and unset it"
    ),
    "COMFYUI_PORT": (
        "the boot starts ComfyUI on the port of COMFYUI_URL (default http://127.0.0.1:8188); "
        "set COMFYUI_URL=http://127.0.0.1:PORT instead"
    ),
    "COMFYUI_ARGS": (
        "ComfyUI always gets --preview-method none --disable-auto-launch; put any other flag "
        "in COMFYUI_EXTRA_ARGS, which comes last and wins"
    ),
    "EXTRA_MODEL_PATHS": (
        "ComfyUI always reads the worker's extra_model_paths.yaml, which points at MODELS_ROOT; "
        "set MODELS_ROOT to move the models (COMFYUI_EXTRA_ARGS may add another "
        "--extra-model-paths-config)"
    ),
    "READAHEAD": (
        "the readahead is always on (at 480x832 it brought the first video from 85.9 s to "
        "74.3 s, docs/history/benchmarks.md); READAHEAD_RESERVE_MB sets the memory it leaves free"
    ),
    "WARMUP_SIZE": (
        "the warm-up always runs at 480x832, measured to pay every first-use cost "
        "(docs/history/benchmarks.md); WARMUP=0 turns it off"
    ),
    "WARMUP_FRAMES": (
        "the warm-up always runs 9 frames, measured to pay every first-use cost "
        "(docs/history/benchmarks.md); WARMUP=0 turns it off"
    ),
    "GPU_READY_INTERVAL_S": (
        "the boot probes CUDA every 2 s while it waits; GPU_READY_TIMEOUT_S bounds the wait"
    ),
    "GPU_PROBE_TIMEOUT_S": (
        "one CUDA probe may take 60 s (it takes 4-10 s); GPU_READY_TIMEOUT_S bounds the wait"
    ),
    "COMFYUI_WAIT_READY": (
        "the worker always takes jobs once its models are verified, and a job waits for "
        "ComfyUI to answer; unset it"
    ),
}


def removed_still_set(env: Mapping[str, str] | None = None) -> list[str]:
    """One warning for each variable in `REMOVED` that is set (non-empty)."""
    env = os.environ if env is None else env
    return [
        f"{name} is set but no longer read: {why}"
        for name, why in REMOVED.items()
        if env.get(name, "").strip()
    ]


class EnvVars:
    """The environment (or any mapping standing in for it), read with types and checks."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        self.env: Mapping[str, str] = os.environ if env is None else env
        #: Every variable read so far, and the kind of value it was read as.
        self.kinds: dict[str, str] = {}

    @classmethod
    def of(cls, env: Mapping[str, str] | EnvVars | None) -> EnvVars:
        """`env` itself when it is an EnvVars (one reader shared by several settings)."""
        return env if isinstance(env, EnvVars) else cls(env)

    def _raw(self, name: str, kind: str) -> str | None:
        self.kinds.setdefault(name, kind)
        value = self.env.get(name)
        return None if value is None or value.strip() == "" else value.strip()

    def is_set(self, name: str) -> bool:
        """Whether `name` has a non-empty value (for defaults that depend on another one)."""
        return self._raw(name, "text") is not None

    def text(self, name: str, default: str) -> str:
        value = self._raw(name, "text")
        return default if value is None else value

    def path(self, name: str, default: Path) -> Path:
        value = self._raw(name, "path")
        return default if value is None else Path(value)

    def number(self, name: str, default: float, minimum: float, unit: str = "") -> float:
        """A number at least `minimum`; `unit` (e.g. "seconds") names what it counts in errors."""
        raw = self._raw(name, "number")
        if raw is None:
            return default
        what = f"a number of {unit}" if unit else "a number"
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(f"{name}={raw!r} is not {what}; unset it or give {what}") from None
        if not math.isfinite(value):
            raise ConfigError(
                f"{name}={raw!r} is not a finite number; unset it or give {what} "
                f"(at least {minimum:g})"
            )
        if value < minimum:
            raise ConfigError(f"{name}={raw!r} must be at least {minimum:g}")
        return value

    def integer(self, name: str, default: int, minimum: int) -> int:
        value = self.number(name, default, minimum)
        self.kinds[name] = "integer"
        if value != int(value):
            raise ConfigError(f"{name}={self.env.get(name)!r} must be a whole number")
        return int(value)

    def flag(self, name: str, default: bool) -> bool:
        raw = self._raw(name, "flag")
        if raw is None:
            return default
        lowered = raw.lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise ConfigError(f"{name}={raw!r} must be one of 1/0, true/false, yes/no, on/off")

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        raw = self._raw(name, "choice")
        value = default if raw is None else raw.lower()
        if value not in choices:
            raise ConfigError(f"{name}={value!r} must be one of: {', '.join(choices)}")
        return value

    def words(self, name: str, default: str) -> tuple[str, ...]:
        """Shell-like words (quotes group them); unset or empty means `default`."""
        raw = self._raw(name, "words")
        text = default if raw is None else raw
        try:
            return tuple(shlex.split(text))
        except ValueError as exc:
            raise ConfigError(f"{name}={text!r} cannot be split into arguments ({exc})") from None
