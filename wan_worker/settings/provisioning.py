"""Provisioning's settings: where the models live, where they come from, how they download.

Read once from the environment into a typed, frozen object; every variable is documented in
docs/provisioning.md. A bad value fails before anything is downloaded, with a message naming
the variable and the fix.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from wan_worker.errors import ConfigError
from wan_worker.settings.env import EnvVars
from wan_worker.settings.worker import PROJECT_ROOT

DEFAULT_MANIFEST = PROJECT_ROOT / "workflows" / "models.json"
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


def runpod_mode(env: Mapping[str, str] | EnvVars) -> str:
    """`serverless`, `pod` or `local`, from RunPod's own variables (serverless workers also
    carry RUNPOD_POD_ID, so the serverless ones are checked first)."""
    var = EnvVars.of(env)
    if var.is_set("RUNPOD_WEBHOOK_GET_JOB") or var.is_set("RUNPOD_ENDPOINT_ID"):
        return "serverless"
    if var.is_set("RUNPOD_POD_ID"):
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
    bundle_repo: str = ""  # the models bundle (docs/provisioning.md), "" when not used
    bundle_revision: str | None = None  # a 40-hex commit, or None for the cached/main one
    r2: R2Settings = field(default_factory=R2Settings)
    max_parallel_files: int = 3
    connections: int = 8
    chunk_bytes: int = 64 * 1024 * 1024
    retries: int = 5
    backoff_s: float = 1.0
    timeout_s: float = 60.0
    min_free_bytes: int = 1024 * 1024 * 1024
    progress_interval_s: float = 10.0
    claim_stale_s: float = 60.0  # a download claim whose heartbeat stopped this long is taken
    wait_s: float = 1800.0  # the longest one file waits for another worker's download
    mode: str = "local"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | EnvVars | None = None) -> ProvisionSettings:
        var = EnvVars.of(env)
        d = cls()
        mode = runpod_mode(var)
        comfyui_dir = var.path("COMFYUI_DIR", d.comfyui_dir)
        root, reason = resolve_models_root(var, mode, comfyui_dir)
        return cls(
            manifest_path=var.path("MODELS_MANIFEST", d.manifest_path),
            models_root=root,
            models_root_reason=reason,
            comfyui_dir=comfyui_dir,
            hf_cache_dir=var.path("RUNPOD_HF_CACHE", d.hf_cache_dir),
            hf_endpoint=var.text("HF_ENDPOINT", d.hf_endpoint).rstrip("/"),
            hf_token=var.text("HF_TOKEN", "") or var.text("HUGGING_FACE_HUB_TOKEN", ""),
            hf_offline=var.flag("HF_HUB_OFFLINE", False),
            bundle_repo=bundle_repo(var.text("MODELS_BUNDLE_REPO", "")),
            bundle_revision=bundle_revision(var.text("MODELS_BUNDLE_REVISION", "")),
            r2=R2Settings(
                endpoint=var.text("R2_ENDPOINT", ""),
                bucket=var.text("R2_BUCKET", R2Settings.bucket),
                access_key=var.text("R2_ACCESS_KEY", ""),
                secret_key=var.text("R2_SECRET_KEY", ""),
            ),
            max_parallel_files=var.integer("PROVISION_PARALLEL_FILES", d.max_parallel_files, 1),
            connections=var.integer("PROVISION_CONNECTIONS", d.connections, 1),
            chunk_bytes=var.integer("PROVISION_CHUNK_MB", d.chunk_bytes >> 20, 1) << 20,
            retries=var.integer("PROVISION_RETRIES", d.retries, 1),
            backoff_s=var.number("PROVISION_BACKOFF_S", d.backoff_s, 0),
            timeout_s=var.number("PROVISION_TIMEOUT_S", d.timeout_s, 1),
            min_free_bytes=var.integer("PROVISION_MIN_FREE_MB", d.min_free_bytes >> 20, 0) << 20,
            progress_interval_s=var.number("PROVISION_PROGRESS_S", d.progress_interval_s, 0.1),
            claim_stale_s=var.number("PROVISION_CLAIM_STALE_S", d.claim_stale_s, 0.5, "seconds"),
            wait_s=var.number("PROVISION_WAIT_S", d.wait_s, 1, "seconds"),
            mode=mode,
        )


def resolve_models_root(
    env: Mapping[str, str] | EnvVars, mode: str, comfyui_dir: Path
) -> tuple[Path, str]:
    """Where models live, and why: MODELS_ROOT; else the network volume; else /workspace on
    a pod; else ComfyUI's own models folder on the container disk."""
    var = EnvVars.of(env)
    explicit = var.text("MODELS_ROOT", "")
    if explicit:
        return Path(explicit), "MODELS_ROOT"
    volume = var.path("RUNPOD_VOLUME_DIR", Path("/runpod-volume"))
    if network_volume_at(volume):
        return volume / "models", f"network volume at {volume}"
    workspace = var.path("WORKSPACE_DIR", Path("/workspace"))
    if mode == "pod" and workspace.is_dir():
        return workspace / "models", f"pod volume at {workspace}"
    if volume.is_dir():
        return comfyui_dir / "models", (
            f"container disk (no network volume mounted; {volume} holds only RunPod's model cache)"
        )
    return comfyui_dir / "models", "container disk (no network volume mounted)"


#: Where RunPod mounts its cached models, inside the network volume's folder.
HF_CACHE_FOLDER = "huggingface-cache"


def network_volume_at(volume: Path) -> bool:
    """Whether a network volume is mounted at `volume`. RunPod's cached models alone also make
    that folder: their Docker volume is mounted at `volume/huggingface-cache/hub`. So a folder
    that is not a mount point and holds nothing but that cache is no network volume, and models
    written there would land on the container disk under a misleading name."""
    if not volume.is_dir():
        return False
    if os.path.ismount(volume):
        return True
    try:
        entries = {entry.name for entry in volume.iterdir()}
    except OSError:
        return False
    return entries != {HF_CACHE_FOLDER}


def bundle_repo(raw: str, name: str = "MODELS_BUNDLE_REPO") -> str:
    """MODELS_BUNDLE_REPO (or the bundle command's `--repo`) as `owner/name`; also taken as the
    link RunPod's Model field shows (`https://huggingface.co/owner/name`)."""
    value = raw.strip()
    for prefix in ("https://huggingface.co/", "http://huggingface.co/", "hf://"):
        if value.startswith(prefix):
            value = value[len(prefix) :]
    value = value.strip("/")
    if value and not _REPO_ID.match(value):
        raise ConfigError(
            f"{name}={raw!r} is not a Hugging Face repository; give it as "
            "owner/name (the repository the bundle command printed), or unset it"
        )
    return value


def bundle_revision(raw: str) -> str | None:
    """MODELS_BUNDLE_REVISION: a full commit hash, or empty (`main`) for the latest one."""
    value = raw.strip().lower()
    if value in {"", "main"}:
        return None
    if not _COMMIT.match(value):
        raise ConfigError(
            f"MODELS_BUNDLE_REVISION={raw!r} must be a full 40-hex commit hash (the bundle "
            "command prints it), or empty for the repository's main branch"
        )
    return value
