"""The handler process's entry (`run`, which rp_handler.py calls): boot when start.sh asks, then
serve jobs.

- A configuration error: every job fails with it, saying what to fix, until it is fixed.
- Without WORKER_BOOT: the handler serves jobs on the ComfyUI at COMFYUI_URL (local runs, tests).
- Under start.sh (WORKER_BOOT=1): `Boot.run` starts ComfyUI, verifies the models and starts the
  warm-up (`wan_worker.boot.main`); it returns the exit status of a failed boot, or the ready
  `Worker`, whose jobs are then served.

This module composes the boot and the handler, which never import each other. The handler's
imports are slow (the runpod SDK, requests and PIL: about 1.8 s), so they come only after
ComfyUI's launch, as the boot was measured (docs/history/benchmarks.md: ComfyUI launched 0.16-0.19 s
after start.sh's first line): the boot calls `import_job_path` right after the launch, while
ComfyUI imports.
"""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING

from wan_worker import logs
from wan_worker.boot.main import Boot
from wan_worker.errors import ConfigError
from wan_worker.settings.boot import BootSettings
from wan_worker.settings.env import removed_still_set
from wan_worker.settings.worker import WorkerSettings

if TYPE_CHECKING:
    from wan_worker.handler import JobHandler
    from wan_worker.worker import Worker

log = logging.getLogger("wan_worker.boot")


def run() -> None:
    """rp_handler.py's entry."""
    logs.configure()
    for warning in removed_still_set():
        log.warning("[boot] %s", warning)
    try:
        settings = WorkerSettings.from_env()
        boot_settings = BootSettings.from_env(settings)
    except ConfigError as exc:
        from wan_worker.handler import job_handler

        log.error("[boot] configuration error, every job will fail with it: %s", exc.message)
        error = exc

        def broken() -> Worker:
            raise error

        serve(job_handler(broken))
        return
    if not boot_settings.enabled:
        from wan_worker.handler import default_worker, job_handler

        serve(job_handler(default_worker, stop_on_signal=local_api()))
        return
    outcome = Boot(settings, boot_settings).run(while_comfyui_starts=import_job_path)
    if isinstance(outcome, int):
        sys.exit(outcome)
    from wan_worker.handler import job_handler

    worker = outcome
    serve(job_handler(lambda: worker, stop_on_signal=local_api()))


def local_api() -> bool:
    """Whether the runpod SDK will serve its local API (--rp_serve_api), where a signal to
    stop stops the jobs in hand (`wan_worker.handler.StopJobsFirst`)."""
    return "--rp_serve_api" in sys.argv[1:]


def import_job_path() -> None:
    """Import the handler's modules (the slow ones above) while ComfyUI starts."""
    import wan_worker.handler  # noqa: F401


def serve(handler: JobHandler) -> None:
    """Hand this process to the runpod SDK (it parses the command line: --rp_serve_api, ...)."""
    import runpod

    runpod.serverless.start({"handler": handler})
