"""Provisioning's settings: where the models live, where they come from, how they download.

Read once from the environment into a typed, frozen object; every variable is documented in
docs/configuration.md. A bad value fails before anything is downloaded, with a message naming
the variable and the fix.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
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
class RunPodMounts:
    """Where RunPod mounts storage into a worker's container. RunPod fixes these places, so no
    variable names them; tests pass folders of their own, and their own test of a mount point."""

    network_volume: Path = Path("/runpod-volume")  # serverless: the network volume, if attached
    pod_volume: Path = Path("/workspace")  # a pod's volume
    hf_cache: Path = Path("/runpod-volume/huggingface-cache/hub")  # RunPod's cached models
    is_mount: Callable[[Path], bool] = os.path.ismount


#: RunPod's own places: what `ProvisionSettings.from_env` and `resolve_models_root` use when
#: given no others (looked up when called, so a test harness may put its own here).
RUNPOD = RunPodMounts()


@dataclass(frozen=True)
class ProvisionSettings:
    """Everything the provisioner reads from the environment, with documented defaults.

    The fields from `max_parallel_files` on are fixed values, not read from the environment:
    no measurement in the repository shows another value winning (each says why it is what it
    is); tests pass their own, to make a run short or a failure quick.
    """

    manifest_path: Path = DEFAULT_MANIFEST
    models_root: Path = Path("/opt/ComfyUI/models")
    models_root_reason: str = "local default"
    comfyui_dir: Path = Path("/opt/ComfyUI")
    hf_cache_dir: Path = RUNPOD.hf_cache
    hf_endpoint: str = "https://huggingface.co"
    hf_token: str = field(default="", repr=False)
    hf_offline: bool = False
    bundle_repo: str = ""  # the models bundle (docs/operations.md), "" when not used
    bundle_revision: str | None = None  # a 40-hex commit, or None for the cached/main one
    r2: R2Settings = field(default_factory=R2Settings)
    mode: str = "local"
    # Three files at once, eight ranges of 64 MiB each at a time: with these, three 512 MiB
    # files from a local nginx came 1.42 times as fast as aria2c -x 16 (docs/history/
    # benchmarks.md, "Model provisioning (a 2-core VM)"); no other values were measured.
    max_parallel_files: int = 3
    connections: int = 8
    chunk_bytes: int = 64 * 1024 * 1024
    # Five attempts a range, 1 s before the first retry, doubling: a source may falter for
    # about 15 s before the next source is tried.
    retries: int = 5
    backoff_s: float = 1.0
    timeout_s: float = 60.0  # one request's network timeout
    min_free_bytes: int = 1024 * 1024 * 1024  # left free after the downloads, for the jobs
    progress_interval_s: float = 10.0  # between two progress (or "waiting for") lines
    # A claim is stale after six missed heartbeats (one every 10 s): well above NFS's attribute
    # cache and a network volume's hiccups (docs/operations.md, "Many workers, one volume").
    claim_stale_s: float = 60.0
    # The longest one file waits for another worker's live download: 38 GB at about 21 MB/s.
    # A worker that waited that long fails; RunPod starts it again, and it waits anew while the
    # owner's download goes on.
    wait_s: float = 1800.0

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | EnvVars | None = None, mounts: RunPodMounts | None = None
    ) -> ProvisionSettings:
        var = EnvVars.of(env)
        mounts = RUNPOD if mounts is None else mounts
        d = cls()
        mode = runpod_mode(var)
        comfyui_dir = var.path("COMFYUI_DIR", d.comfyui_dir)
        root, reason = resolve_models_root(var, mode, comfyui_dir, mounts)
        return cls(
            manifest_path=var.path("MODELS_MANIFEST", d.manifest_path),
            models_root=root,
            models_root_reason=reason,
            comfyui_dir=comfyui_dir,
            hf_cache_dir=mounts.hf_cache,
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
            mode=mode,
        )


def resolve_models_root(
    env: Mapping[str, str] | EnvVars,
    mode: str,
    comfyui_dir: Path,
    mounts: RunPodMounts | None = None,
) -> tuple[Path, str]:
    """Where models live, and why: MODELS_ROOT; else the network volume, if one is mounted;
    else the volume on a pod; else ComfyUI's own models folder on the container disk.

    A network volume is a mount point. The folder alone proves nothing: RunPod's cached models
    are a Docker volume mounted at `/runpod-volume/huggingface-cache/hub`, which makes
    `/runpod-volume` without any network volume, and an image may ship that folder too; models
    written there would land on the container disk under a misleading name. MODELS_ROOT names
    any folder, a volume's or not."""
    var = EnvVars.of(env)
    mounts = RUNPOD if mounts is None else mounts
    explicit = var.text("MODELS_ROOT", "")
    if explicit:
        return Path(explicit), "MODELS_ROOT"
    volume = mounts.network_volume
    if mounts.is_mount(volume):
        return volume / "models", f"network volume at {volume}"
    if mode == "pod" and mounts.pod_volume.is_dir():
        return mounts.pod_volume / "models", f"pod volume at {mounts.pod_volume}"
    if volume.is_dir():
        return (
            comfyui_dir / "models",
            f"container disk (no network volume mounted; {volume} {_what_is_in(volume)})",
        )
    return comfyui_dir / "models", "container disk (no network volume mounted)"


#: Where RunPod mounts its cached models, inside the network volume's folder.
HF_CACHE_FOLDER = "huggingface-cache"


def _what_is_in(volume: Path) -> str:
    """For the log: why a folder at the network volume's place is not one."""
    try:
        entries = {entry.name for entry in volume.iterdir()}
    except OSError:
        entries = set()
    if entries == {HF_CACHE_FOLDER}:
        return "holds only RunPod's model cache"
    return "is a folder, not a mount point; set MODELS_ROOT to keep the models there"


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
