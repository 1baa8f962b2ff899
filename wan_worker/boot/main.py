"""The worker's boot, in the handler's process: `Boot.run` (under start.sh, WORKER_BOOT=1).

In this order, each step as soon as it can run:

1. the models root is resolved, once (`ProvisionSettings`), and logged with its reason;
2. ComfyUI is started with that root, before anything slow is imported, while a probe checks
   that CUDA works (`cuda_check`; a failed probe stops ComfyUI, waits for CUDA as
   GPU_READY_TIMEOUT_S allows, and starts it again); the caller's slow imports come after the
   launch (`while_comfyui_starts`);
3. a thread verifies or downloads the models (`Provisioner`), then reads them ahead into the
   page cache (`readahead`) while ComfyUI is still importing;
4. a thread waits for ComfyUI to answer (COMFYUI_READY_TIMEOUT_S), then runs the warm-up
   (`warmup`) if it is on and no job needs ComfyUI;
5. once the models are verified, `run` returns the `Worker`, and the entry
   (`wan_worker.entry`) has the runpod SDK take jobs; a job waits for ComfyUI at the worker's
   gate (`wan_worker.worker_gate`).

A model that cannot be had ends the boot before any job is taken (exit status 2, 3 or 4, as
`python -m wan_worker.provision`); CUDA never working, or ComfyUI stopping or never answering,
ends it with status 1 (a job in hand gets the error, which asks RunPod to replace the worker).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from wan_worker.boot.cuda_check import BackgroundProbe, wait_for_gpu
from wan_worker.boot.timeline import Timeline
from wan_worker.comfy.launch import LaunchedComfy, comfyui_command, launch
from wan_worker.errors import (
    ComfyUnavailable,
    ConfigError,
    DiskSpaceError,
    GpuNotReady,
    ProvisionError,
    WorkerError,
)
from wan_worker.node_packs import selection_for
from wan_worker.settings.boot import BootSettings
from wan_worker.settings.provisioning import ProvisionSettings
from wan_worker.settings.worker import WorkerSettings
from wan_worker.worker_gate import WorkerGate

if TYPE_CHECKING:
    from wan_worker.provision.provisioner import Report
    from wan_worker.worker import Worker

log = logging.getLogger("wan_worker.boot")
TAIL_LINES = 20


def exit_status(error: WorkerError) -> int:
    """The process's exit status for a failed boot (the provisioning CLI's, 1 for ComfyUI)."""
    if isinstance(error, ConfigError):
        return 2
    if isinstance(error, DiskSpaceError):
        return 4
    if isinstance(error, ProvisionError):
        return 3
    return 1


def custom_node_args(settings: WorkerSettings, boot: BootSettings) -> tuple[str, ...]:
    """ComfyUI's arguments that choose the custom node packs it loads (`wan_worker.node_packs`).

    Only the packs whose classes the fixed workflow uses, derived from it; COMFYUI_NODE_PACKS=all
    loads every pack. A pack the workflow needs but that is not installed is a ConfigError.
    """
    selection = selection_for(settings.workflow_path, boot.node_packs, boot.launch.comfyui_dir)
    log.info("[boot] %s", selection.reason)
    return tuple(selection.comfyui_args())


class Boot:
    def __init__(self, settings: WorkerSettings, boot_settings: BootSettings) -> None:
        self.settings = settings
        self.boot_settings = boot_settings
        self.timeline = Timeline()
        self.gate = WorkerGate(booting=True, mark=self.timeline.mark)
        self.comfy: LaunchedComfy | None = None
        self.launched_at = time.monotonic()

    def run(self, while_comfyui_starts: Callable[[], object] = lambda: None) -> int | Worker:
        """Boot; return the exit status of a failed boot, or the worker once its models are
        verified. `while_comfyui_starts` runs right after ComfyUI's launch (slow imports)."""
        mark = self.timeline.mark
        mark("boot_started", pid=os.getpid())
        try:
            provision = ProvisionSettings.from_env()
        except ConfigError as exc:
            log.error("[boot] FAILED: the provisioning configuration is invalid: %s", exc.message)
            return 2
        root = provision.models_root
        mark("models_root", root=root, reason=provision.models_root_reason)
        try:
            node_args = custom_node_args(self.settings, self.boot_settings)
        except ConfigError as exc:
            log.error("[boot] FAILED: %s", exc.message)
            return 2
        cuda = self.boot_settings.cuda_check
        probe = BackgroundProbe(cuda) if cuda is not None else None
        if not self._launch(root, node_args):
            return 1
        while_comfyui_starts()
        from wan_worker.worker import Worker  # slow imports (requests, ...), after the launch

        worker = Worker.from_settings(self.settings, gate=self.gate)
        threading.Thread(
            target=self._verify_then_read_ahead, args=(provision,), name="models", daemon=True
        ).start()
        if probe is not None and not self._cuda_ready_or_relaunched(probe, root, node_args):
            return 1
        threading.Thread(
            target=self._wait_for_comfyui_then_warm_up, args=(worker,), name="comfyui", daemon=True
        ).start()

        failure = self.gate.wait_settled()
        if failure is not None:
            log.error("[boot] FAILED: %s", failure.message)
            if self.comfy is not None:
                self.comfy.stop()
            return exit_status(failure)
        mark("jobs_open")
        return worker

    def _launch(self, root: Path, node_args: tuple[str, ...], **extra: object) -> bool:
        spec = self.boot_settings.launch
        try:
            self.comfy = launch(spec, root, node_args)
        except OSError as exc:
            log.error("[boot] FAILED: ComfyUI could not be started (%s): %s", spec.python, exc)
            return False
        self.launched_at = time.monotonic()
        self.timeline.mark(
            "comfyui_launched",
            pid=self.comfy.pid,
            argv=" ".join(comfyui_command(spec)[1:]),
            **extra,
        )
        return True

    # -- CUDA: checked while ComfyUI starts (cuda_check) -------------------------------------------

    def _cuda_ready_or_relaunched(
        self, probe: BackgroundProbe, root: Path, node_args: tuple[str, ...]
    ) -> bool:
        first = probe.result()
        if first.ok:
            log.info("[gpu] ready, checked while ComfyUI starts (%.1fs): %s", first.seconds,
                     first.detail)  # fmt: skip
            self.timeline.mark("gpu_ready", s=first.seconds, probes=1)
            return True
        log.warning(
            "[gpu] not ready while ComfyUI started (%s): ComfyUI is stopped, and started again "
            "once CUDA works",
            first.detail,
        )
        if self.comfy is not None:
            self.comfy.stop()
        self.timeline.mark("comfyui_stopped", reason="gpu_not_ready", detail=first.detail)
        try:
            detail = wait_for_gpu(probe.settings, log=lambda line: log.info("%s", line))
        except GpuNotReady as exc:
            log.error("[gpu] FAILED: %s", exc.message)
            log.error("[boot] FAILED: no usable GPU; see the [gpu] lines above")
            self.timeline.mark("gpu_failed", error=exc.message)
            return False
        self.timeline.mark("gpu_ready", detail=detail, relaunch=True)
        return self._launch(root, node_args, relaunch=True)

    # -- the models: verify or download, then read ahead ----------------------------------------

    def _verify_then_read_ahead(self, provision: ProvisionSettings) -> None:
        began = time.monotonic()
        just_read: set[str] = set()
        if self.boot_settings.skip_provision:
            log.info("[boot] SKIP_PROVISION is set: using the models under %s as they are",
                     provision.models_root)  # fmt: skip
            self.timeline.mark("models_verified", s=0, skipped=True)
        else:
            report = self._provision(provision)
            if report is None:
                return
            just_read = {
                o.relpath for o in report.outcomes if o.action in ("verified", "downloaded")
            }
            self.timeline.mark(
                "models_verified",
                s=round(time.monotonic() - began, 2),
                **{action: report.count(action) for action in ("marker", "verified", "linked",
                                                                "downloaded")},
            )  # fmt: skip
        self.gate.models_verified()
        self._read_ahead(provision, just_read)

    def _provision(self, provision: ProvisionSettings) -> Report | None:
        from wan_worker.provision.provisioner import Provisioner

        say = logging.getLogger("wan_worker.provision").info
        try:
            return Provisioner(provision, log=say).run()
        except WorkerError as exc:
            error = exc
        except Exception as exc:  # a bug must still end the boot with a reason
            log.exception("[boot] provisioning failed unexpectedly")
            error = ProvisionError(f"Provisioning failed unexpectedly: {type(exc).__name__}: {exc}")
        self.timeline.mark("models_failed", status=exit_status(error), error=error.message)
        log.error("[provision] FAILED: %s", error.message)
        self.gate.fail(error)
        return None

    def _read_ahead(self, provision: ProvisionSettings, just_read: set[str]) -> None:
        from wan_worker.boot.readahead import Readahead, first_use_order, memory_for_readahead
        from wan_worker.workflow import load_template

        memory = memory_for_readahead()
        if memory is None:
            log.info("[boot] no /proc/meminfo: the models are not read ahead")
            return
        available, limited_by = memory
        graph = load_template(self.settings.workflow_path).graph
        Readahead(
            first_use_order(graph),
            provision.models_root,
            budget=max(0, available - self.boot_settings.readahead_reserve_bytes),
            budget_from=limited_by,
            stage_begun=self.gate.stage_begun,
            already_cached=just_read,
            mark=self.timeline.mark,
            cap_before_answer=self.boot_settings.readahead_before_answer_bytes,
            wait_for_answer=self.gate.wait_for_comfyui,
        ).run()

    # -- ComfyUI: wait for its first answer, then warm it up --------------------------------------

    def _wait_for_comfyui_then_warm_up(self, worker: Worker) -> None:
        from wan_worker.comfy.client import ComfyClient

        process = worker.client.process
        timeout_s = self.settings.ready_timeout_s
        left_s = max(0.0, self.launched_at + timeout_s - time.monotonic())
        try:
            ComfyClient(self.settings.comfyui_url, process).wait_ready(left_s)
        except ComfyUnavailable as exc:
            self._comfyui_failed(worker, timeout_s, exc)
            return
        since_launch = round(time.monotonic() - self.launched_at, 2)
        self.timeline.mark("comfyui_answers", s_since_launch=since_launch)
        self.gate.comfyui_answered()
        if not self.boot_settings.warmup:
            return
        from wan_worker.boot.warmup import WarmupPlan, warm_up

        warm_up(worker, WarmupPlan(), wait_s=self.settings.job_timeout_s, mark=self.timeline.mark)

    def _comfyui_failed(self, worker: Worker, timeout_s: float, error: ComfyUnavailable) -> None:
        process = worker.client.process
        state = process.state() if process is not None else None
        if state is not None and not state.alive:
            cause = process.death_cause() if process is not None else ""
            reason = f"ComfyUI (pid {state.pid}) exited before answering: {cause}."
        elif time.monotonic() < self.launched_at + timeout_s:
            # Failed before its time was up: something else answers at COMFYUI_URL.
            reason = error.message
        else:
            reason = (
                f"ComfyUI did not answer within {timeout_s:g} s of its start; raise "
                "COMFYUI_READY_TIMEOUT_S if it is still loading."
            )
        tail = process.log_tail().splitlines()[-TAIL_LINES:] if process is not None else []
        log.error("[boot] FAILED: %s Last log lines:\n%s", reason, "\n".join(tail) or "(empty)")
        self.timeline.mark("comfyui_failed", reason=reason)
        self.gate.fail(
            ComfyUnavailable(reason + " The worker will be replaced.", refresh_worker=True)
        )
        if self.gate.idle():
            # No job to tell: leave now, so RunPod replaces the worker (a job in hand gets the
            # error, and its result asks RunPod for the same).
            if self.comfy is not None:
                self.comfy.stop()
            os._exit(1)
