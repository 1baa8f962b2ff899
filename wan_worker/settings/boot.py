"""The boot's settings: how ComfyUI is launched, the readahead, the warm-up, the CUDA check.

Read once from the environment into a typed, frozen object; every variable is documented in
docs/configuration.md. ComfyUI's directory, URL (whose port it is started on), PID file, log and
readiness time-out come from the job path's settings (`settings.worker`), the models root from
provisioning's (`settings.provisioning`), so each is read in one place. A tuning knob is a
variable only where a measurement (docs/performance.md, docs/history/benchmarks.md) shows its
choice wins (named beside it); the others are constants, each with why.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from wan_worker.settings.cuda import CudaWaitSettings
from wan_worker.settings.env import EnvVars
from wan_worker.settings.provisioning import runpod_mode
from wan_worker.settings.worker import PROJECT_ROOT, WorkerSettings

#: ComfyUI's own flags, before the custom node packs' and COMFYUI_EXTRA_ARGS: no latent previews
#: (nothing watches a job's) and no browser to open. Not settings: nothing measured other values,
#: and COMFYUI_EXTRA_ARGS, which comes last, overrides them (a later --preview-method wins).
COMFYUI_ARGS = ("--preview-method", "none", "--disable-auto-launch")
#: ComfyUI's model folders under MODELS_ROOT (the file reads `${MODELS_ROOT}`).
EXTRA_MODEL_PATHS = PROJECT_ROOT / "extra_model_paths.yaml"
#: Where ComfyUI listens when COMFYUI_URL names no port.
DEFAULT_COMFYUI_PORT = 8188
#: COMFYUI_NODE_PACKS: the packs the workflow uses (`wan_worker.node_packs`), or every one (the
#: UI on a pod). Only the workflow's packs start ComfyUI 3.2-4.0 s sooner
#: (docs/history/benchmarks.md, "ComfyUI's start").
NODE_PACK_MODES = ("workflow", "all")


@dataclass(frozen=True)
class ComfyLaunchSettings:
    """How the boot starts ComfyUI (`wan_worker.comfy.launch`)."""

    python: str
    main: Path
    comfyui_dir: Path
    listen: str
    port: int
    extra_model_paths: Path
    args: tuple[str, ...]
    extra_args: tuple[str, ...]
    pid_file: Path
    log_file: Path


@dataclass(frozen=True)
class BootSettings:
    enabled: bool
    launch: ComfyLaunchSettings
    skip_provision: bool = False
    #: READAHEAD_RESERVE_MB: memory the readahead leaves to ComfyUI and the job. No measurement
    #: chose 16384; it stays a setting because the budget it sets depends on the host's memory
    #: (the boot's tests run on machines with less than 16 GiB free, and lower it).
    readahead_reserve_bytes: int = 16 * 1024**3
    #: READAHEAD_BEFORE_ANSWER_MB: the text encoder and the VAE of the fixed workflow (6662 MB)
    #: are read before ComfyUI first answers; the experts wait for the answer. Measured in
    #: docs/history/benchmarks.md, "The read before the answer against none, in the first video": at
    #: 720x1280, the default size, the first video came 1.4-2.3 s sooner than with 0; at 480x832
    #: 0.1-3.5 s later, so a deployment that serves mostly 480x832 sets 0.
    readahead_before_answer_bytes: int = 6800 << 20
    #: WARMUP: on by default on serverless. Measured in docs/history/benchmarks.md, "Cold worker
    #: to first video (H200)": a worker that warmed up before its first job ran it in 0.98x
    #: warm time.
    warmup: bool = False
    node_packs: str = "workflow"
    #: None when SKIP_GPU_CHECK=1 (CPU-only local runs and tests).
    cuda_check: CudaWaitSettings | None = None

    @classmethod
    def from_env(
        cls, settings: WorkerSettings, env: Mapping[str, str] | EnvVars | None = None
    ) -> BootSettings:
        """The boot's settings; ComfyUI is started on the port of COMFYUI_URL (`settings`)."""
        var = EnvVars.of(env)
        comfyui_dir = settings.comfyui_dir
        return cls(
            enabled=var.flag("WORKER_BOOT", False),
            launch=ComfyLaunchSettings(
                python=var.text("COMFYUI_PYTHON", sys.executable),
                main=var.path("COMFYUI_MAIN", comfyui_dir / "main.py"),
                comfyui_dir=comfyui_dir,
                listen=var.text("COMFYUI_LISTEN", "127.0.0.1"),
                port=urlsplit(settings.comfyui_url).port or DEFAULT_COMFYUI_PORT,
                extra_model_paths=EXTRA_MODEL_PATHS,
                args=COMFYUI_ARGS,
                extra_args=var.words("COMFYUI_EXTRA_ARGS", ""),
                pid_file=settings.comfyui_pid_file,
                log_file=settings.comfyui_log,
            ),
            skip_provision=var.flag("SKIP_PROVISION", False),
            readahead_reserve_bytes=var.integer("READAHEAD_RESERVE_MB", 16384, 0) << 20,
            readahead_before_answer_bytes=var.integer("READAHEAD_BEFORE_ANSWER_MB", 6800, 0) << 20,
            warmup=var.flag("WARMUP", runpod_mode(var) == "serverless"),
            node_packs=var.choice("COMFYUI_NODE_PACKS", "workflow", NODE_PACK_MODES),
            cuda_check=(
                None if var.flag("SKIP_GPU_CHECK", False) else CudaWaitSettings.from_env(var)
            ),
        )
