"""Provisioning configuration: read once from the environment into a typed, frozen object.

Every variable is documented in docs/provisioning.md. A bad value fails before anything is
downloaded, with a message naming the variable and the fix.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import wan_worker.env as read
from wan_worker.settings import PROJECT_ROOT

DEFAULT_MANIFEST = PROJECT_ROOT / "workflows" / "models.json"


def runpod_mode(env: Mapping[str, str]) -> str:
    """`serverless`, `pod` or `local`, from RunPod's own variables (serverless workers also
    carry RUNPOD_POD_ID, so the serverless ones are checked first)."""
    if env.get("RUNPOD_WEBHOOK_GET_JOB") or env.get("RUNPOD_ENDPOINT_ID"):
        return "serverless"
    if env.get("RUNPOD_POD_ID"):
        return "pod"
    return "local"


@dataclass(frozen=True)
class R2Settings:
    """Cloudflare R2 (any S3-compatible store) holding copies of the models."""

    endpoint: str = ""
    bucket: str = "wan-models"
    access_key: str = field(default="", repr=False)
    secret_key: str = field(default="", repr=False)

    @property
    def configured(self) -> bool:
        return bool(self.endpoint and self.access_key and self.secret_key)

    def missing(self) -> list[str]:
        """The variables still unset, for messages."""
        names = [("R2_ENDPOINT", self.endpoint), ("R2_ACCESS_KEY", self.access_key)]
        names.append(("R2_SECRET_KEY", self.secret_key))
        return [name for name, value in names if not value]


@dataclass(frozen=True)
class ProvisionSettings:
    """Everything the provisioner reads from the environment, with documented defaults."""

    manifest_path: Path = DEFAULT_MANIFEST
    models_root: Path = Path("/opt/ComfyUI/models")
    models_root_reason: str = "local default"
    comfyui_dir: Path = Path("/opt/ComfyUI")
    hf_cache_dir: Path = Path("/runpod-volume/huggingface-cache/hub")
    hf_endpoint: str = "https://huggingface.co"
    hf_token: str = field(default="", repr=False)
    hf_offline: bool = False
    r2: R2Settings = field(default_factory=R2Settings)
    max_parallel_files: int = 3
    connections: int = 8
    chunk_bytes: int = 64 * 1024 * 1024
    retries: int = 5
    backoff_s: float = 1.0
    timeout_s: float = 60.0
    min_free_bytes: int = 1024 * 1024 * 1024
    progress_interval_s: float = 10.0
    mode: str = "local"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ProvisionSettings:
        env = os.environ if env is None else env
        d = cls()
        mode = runpod_mode(env)
        comfyui_dir = Path(read.text(env, "COMFYUI_DIR", str(d.comfyui_dir)))
        root, reason = resolve_models_root(env, mode, comfyui_dir)
        return cls(
            manifest_path=Path(read.text(env, "MODELS_MANIFEST", str(d.manifest_path))),
            models_root=root,
            models_root_reason=reason,
            comfyui_dir=comfyui_dir,
            hf_cache_dir=Path(read.text(env, "RUNPOD_HF_CACHE", str(d.hf_cache_dir))),
            hf_endpoint=read.text(env, "HF_ENDPOINT", d.hf_endpoint).rstrip("/"),
            hf_token=read.text(env, "HF_TOKEN", "") or read.text(env, "HUGGING_FACE_HUB_TOKEN", ""),
            hf_offline=read.flag(env, "HF_HUB_OFFLINE", False),
            r2=R2Settings(
                endpoint=read.text(env, "R2_ENDPOINT", ""),
                bucket=read.text(env, "R2_BUCKET", R2Settings.bucket),
                access_key=read.text(env, "R2_ACCESS_KEY", ""),
                secret_key=read.text(env, "R2_SECRET_KEY", ""),
            ),
            max_parallel_files=read.integer(
                env, "PROVISION_PARALLEL_FILES", d.max_parallel_files, 1
            ),
            connections=read.integer(env, "PROVISION_CONNECTIONS", d.connections, 1),
            chunk_bytes=read.integer(env, "PROVISION_CHUNK_MB", d.chunk_bytes >> 20, 1) << 20,
            retries=read.integer(env, "PROVISION_RETRIES", d.retries, 1),
            backoff_s=read.number(env, "PROVISION_BACKOFF_S", d.backoff_s, 0),
            timeout_s=read.number(env, "PROVISION_TIMEOUT_S", d.timeout_s, 1),
            min_free_bytes=read.integer(env, "PROVISION_MIN_FREE_MB", d.min_free_bytes >> 20, 0)
            << 20,
            progress_interval_s=read.number(
                env, "PROVISION_PROGRESS_S", d.progress_interval_s, 0.1
            ),
            mode=mode,
        )


def resolve_models_root(env: Mapping[str, str], mode: str, comfyui_dir: Path) -> tuple[Path, str]:
    """Where models live, and why: MODELS_ROOT; else the network volume; else /workspace on
    a pod; else ComfyUI's own models folder on the container disk."""
    explicit = read.text(env, "MODELS_ROOT", "")
    if explicit:
        return Path(explicit), "MODELS_ROOT"
    volume = Path(read.text(env, "RUNPOD_VOLUME_DIR", "/runpod-volume"))
    if volume.is_dir():
        return volume / "models", f"network volume at {volume}"
    workspace = Path(read.text(env, "WORKSPACE_DIR", "/workspace"))
    if mode == "pod" and workspace.is_dir():
        return workspace / "models", f"pod volume at {workspace}"
    return comfyui_dir / "models", "container disk (no network volume mounted)"
