"""The worker's configuration: read once from the environment into a typed, frozen object.

Every variable is documented in README.md ("Environment variables"). A bad value fails at
start-up with a message naming the variable, never in the middle of a job.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import wan_worker.env as read
from wan_worker.video_fit import PRESETS

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_WORKFLOW = PROJECT_ROOT / "workflows" / "wan_flf_i2v_api.json"


@dataclass(frozen=True)
class StorageSettings:
    """S3-compatible output storage (AWS S3, Cloudflare R2, RunPod storage, MinIO)."""

    endpoint_url: str = ""
    bucket: str = ""
    access_key_id: str = field(default="", repr=False)
    secret_access_key: str = field(default="", repr=False)
    #: The region to sign for; empty: `auto` with an endpoint URL (R2), else (AWS S3) the
    #: bucket's own region, asked of S3 at the first upload.
    region: str = ""
    key_prefix: str = "wan-i2v"
    url_expiry_s: int = 86_400
    upload: bool = True

    @property
    def configured(self) -> bool:
        return bool(self.bucket and self.access_key_id and self.secret_access_key)


@dataclass(frozen=True)
class Settings:
    """Everything the handler reads from the environment, with documented defaults."""

    comfyui_url: str = "http://127.0.0.1:8188"
    comfyui_dir: Path = Path("/opt/ComfyUI")
    comfyui_pid_file: Path = Path("/tmp/comfyui.pid")  # noqa: S108 - written by start.sh
    comfyui_log: Path = Path("/tmp/comfyui.log")  # noqa: S108 - written by start.sh
    workflow_path: Path = DEFAULT_WORKFLOW
    ready_timeout_s: float = 180.0
    job_timeout_s: float = 540.0  # inside RunPod's default execution timeout (600 s)
    image_fetch_timeout_s: float = 30.0
    max_image_bytes: int = 25 * 1024 * 1024
    max_image_pixels: int = 40_000_000
    max_prompt_chars: int = 4_000
    max_output_pixels: int = 1280 * 720
    attention: str = "sage"
    attention_fallback: bool = True
    fp16_accumulation: bool = True
    include_base64: bool = True
    max_base64_bytes: int = 9_500_000
    reencode_to_fit: bool = True
    reencode_preset: str = "veryfast"
    reencode_timeout_s: float = 300.0
    storage: StorageSettings = field(default_factory=StorageSettings)

    @property
    def comfyui_input_dir(self) -> Path:
        return self.comfyui_dir / "input"

    @property
    def comfyui_output_dir(self) -> Path:
        return self.comfyui_dir / "output"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        defaults = cls()
        endpoint_url = read.text(env, "BUCKET_ENDPOINT_URL", "")
        storage = StorageSettings(
            endpoint_url=endpoint_url,
            bucket=read.text(env, "BUCKET_NAME", ""),
            access_key_id=read.text(env, "BUCKET_ACCESS_KEY_ID", ""),
            secret_access_key=read.text(env, "BUCKET_SECRET_ACCESS_KEY", ""),
            region=read.text(env, "BUCKET_REGION", "auto" if endpoint_url else ""),
            key_prefix=read.text(env, "BUCKET_KEY_PREFIX", "wan-i2v").strip("/"),
            url_expiry_s=read.integer(env, "BUCKET_URL_EXPIRY_S", 86_400, 1),
            upload=read.flag(env, "UPLOAD_OUTPUTS", True),
        )
        return cls(
            comfyui_url=read.text(env, "COMFYUI_URL", defaults.comfyui_url).rstrip("/"),
            comfyui_dir=Path(read.text(env, "COMFYUI_DIR", str(defaults.comfyui_dir))),
            comfyui_pid_file=Path(
                read.text(env, "COMFYUI_PID_FILE", str(defaults.comfyui_pid_file))
            ),
            comfyui_log=Path(read.text(env, "COMFYUI_LOG", str(defaults.comfyui_log))),
            workflow_path=Path(read.text(env, "WORKFLOW_PATH", str(defaults.workflow_path))),
            ready_timeout_s=read.number(
                env, "COMFYUI_READY_TIMEOUT_S", defaults.ready_timeout_s, 1
            ),
            job_timeout_s=read.number(env, "JOB_TIMEOUT_S", defaults.job_timeout_s, 1),
            image_fetch_timeout_s=read.number(
                env, "IMAGE_FETCH_TIMEOUT_S", defaults.image_fetch_timeout_s, 1
            ),
            max_image_bytes=read.integer(env, "MAX_IMAGE_BYTES", defaults.max_image_bytes, 1024),
            max_image_pixels=read.integer(env, "MAX_IMAGE_PIXELS", defaults.max_image_pixels, 256),
            max_prompt_chars=read.integer(env, "MAX_PROMPT_CHARS", defaults.max_prompt_chars, 1),
            max_output_pixels=read.integer(
                env, "MAX_OUTPUT_PIXELS", defaults.max_output_pixels, 128 * 128
            ),
            attention=read.choice(env, "ATTENTION", defaults.attention, ("sage", "sdpa")),
            attention_fallback=read.flag(env, "ATTENTION_FALLBACK", defaults.attention_fallback),
            fp16_accumulation=read.flag(env, "FP16_ACCUMULATION", defaults.fp16_accumulation),
            include_base64=read.flag(env, "INCLUDE_BASE64", defaults.include_base64),
            max_base64_bytes=read.integer(env, "MAX_BASE64_BYTES", defaults.max_base64_bytes, 0),
            reencode_to_fit=read.flag(env, "REENCODE_TO_FIT", defaults.reencode_to_fit),
            reencode_preset=read.choice(env, "REENCODE_PRESET", defaults.reencode_preset, PRESETS),
            reencode_timeout_s=read.number(
                env, "REENCODE_TIMEOUT_S", defaults.reencode_timeout_s, 1
            ),
            storage=storage,
        )
