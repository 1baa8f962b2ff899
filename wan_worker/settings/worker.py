"""The job path's settings: ComfyUI's address and files, the caps on a job's input, attention,
and how the video is delivered (inline, re-encoded to fit, or to output storage).

Read once from the environment into a typed, frozen object; every variable is documented in
docs/configuration.md. A bad value fails at start-up with a message naming the
variable, never in the middle of a job.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from wan_worker.settings.env import EnvVars

PROJECT_ROOT = Path(__file__).resolve().parent.parent.parent
DEFAULT_WORKFLOW = PROJECT_ROOT / "workflows" / "wan_flf_i2v_api.json"
#: x264's presets, fastest first (REENCODE_PRESET).
X264_PRESETS = (
    "ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow",
)  # fmt: skip


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
class WorkerSettings:
    """Everything a job reads from the environment, with documented defaults."""

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
    def from_env(cls, env: Mapping[str, str] | EnvVars | None = None) -> WorkerSettings:
        var = EnvVars.of(env)
        defaults = cls()
        endpoint_url = var.text("BUCKET_ENDPOINT_URL", "")
        storage = StorageSettings(
            endpoint_url=endpoint_url,
            bucket=var.text("BUCKET_NAME", ""),
            access_key_id=var.text("BUCKET_ACCESS_KEY_ID", ""),
            secret_access_key=var.text("BUCKET_SECRET_ACCESS_KEY", ""),
            region=var.text("BUCKET_REGION", "auto" if endpoint_url else ""),
            key_prefix=var.text("BUCKET_KEY_PREFIX", "wan-i2v").strip("/"),
            url_expiry_s=var.integer("BUCKET_URL_EXPIRY_S", 86_400, 1),
            upload=var.flag("UPLOAD_OUTPUTS", True),
        )
        return cls(
            comfyui_url=var.text("COMFYUI_URL", defaults.comfyui_url).rstrip("/"),
            comfyui_dir=var.path("COMFYUI_DIR", defaults.comfyui_dir),
            comfyui_pid_file=var.path("COMFYUI_PID_FILE", defaults.comfyui_pid_file),
            comfyui_log=var.path("COMFYUI_LOG", defaults.comfyui_log),
            workflow_path=var.path("WORKFLOW_PATH", defaults.workflow_path),
            ready_timeout_s=var.number("COMFYUI_READY_TIMEOUT_S", defaults.ready_timeout_s, 1),
            job_timeout_s=var.number("JOB_TIMEOUT_S", defaults.job_timeout_s, 1),
            image_fetch_timeout_s=var.number(
                "IMAGE_FETCH_TIMEOUT_S", defaults.image_fetch_timeout_s, 1
            ),
            max_image_bytes=var.integer("MAX_IMAGE_BYTES", defaults.max_image_bytes, 1024),
            max_image_pixels=var.integer("MAX_IMAGE_PIXELS", defaults.max_image_pixels, 256),
            max_prompt_chars=var.integer("MAX_PROMPT_CHARS", defaults.max_prompt_chars, 1),
            max_output_pixels=var.integer(
                "MAX_OUTPUT_PIXELS", defaults.max_output_pixels, 128 * 128
            ),
            attention=var.choice("ATTENTION", defaults.attention, ("sage", "sdpa")),
            attention_fallback=var.flag("ATTENTION_FALLBACK", defaults.attention_fallback),
            fp16_accumulation=var.flag("FP16_ACCUMULATION", defaults.fp16_accumulation),
            include_base64=var.flag("INCLUDE_BASE64", defaults.include_base64),
            max_base64_bytes=var.integer("MAX_BASE64_BYTES", defaults.max_base64_bytes, 0),
            reencode_to_fit=var.flag("REENCODE_TO_FIT", defaults.reencode_to_fit),
            reencode_preset=var.choice("REENCODE_PRESET", defaults.reencode_preset, X264_PRESETS),
            reencode_timeout_s=var.number("REENCODE_TIMEOUT_S", defaults.reencode_timeout_s, 1),
            storage=storage,
        )
