"""CUDA's readiness, checked while ComfyUI starts rather than before it.

RunPod sometimes attaches the GPU after the container starts, and a process whose first CUDA
call fails keeps failing ("CUDA driver initialization failed"). So each probe runs in a fresh
interpreter (`probe_once`): import torch, `torch.cuda.is_available()`, then a device query and a
tiny allocation; torch is imported only inside the probe.

The boot runs the first probe in a thread beside ComfyUI's launch (`BackgroundProbe`), so its
4-5 s no longer stand before ComfyUI's own start. ComfyUI touches CUDA only once torch and most
of its own modules are imported, seconds after the probe (which touches it right after importing
torch), so a probe that succeeds means CUDA was usable before ComfyUI reached it. A probe that
fails means ComfyUI may have started without the GPU: the boot stops it, waits for CUDA
(`wait_for_gpu`: a probe every 2 s until one succeeds or GPU_READY_TIMEOUT_S passes), and starts
it again; CUDA that never works ends the boot with status 1 and the last error.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from wan_worker.errors import GpuNotReady
from wan_worker.settings.cuda import CudaWaitSettings

PROBE_SCRIPT = """
import json, sys
try:
    import torch
except ImportError as exc:
    print(json.dumps({"fatal": f"PyTorch cannot be imported ({exc})"}))
    sys.exit(3)
if not torch.cuda.is_available():
    print(json.dumps({"error": "torch.cuda.is_available() is False "
                      f"(torch {torch.__version__}, built for CUDA {torch.version.cuda})"}))
    sys.exit(1)
index = torch.cuda.current_device()
name = torch.cuda.get_device_name(index)
major, minor = torch.cuda.get_device_capability(index)
torch.zeros(1, device="cuda").add_(1)
torch.cuda.synchronize()
print(json.dumps({"device": name, "capability": f"{major}.{minor}",
                  "count": torch.cuda.device_count(), "torch": torch.__version__,
                  "cuda": torch.version.cuda}))
"""


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    #: No later probe can succeed either (PyTorch cannot be imported).
    fatal: bool
    #: The device when ok, else what failed.
    detail: str
    seconds: float


def probe_once(probe_timeout_s: float) -> ProbeResult:
    """One probe in a fresh interpreter."""
    began = time.monotonic()

    def result(ok: bool, detail: str, fatal: bool = False) -> ProbeResult:
        return ProbeResult(ok, fatal, detail, round(time.monotonic() - began, 2))

    try:
        done = subprocess.run(
            [sys.executable, "-c", PROBE_SCRIPT],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=probe_timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return result(False, f"the CUDA probe hung for more than {probe_timeout_s:g}s")
    lines = done.stdout.strip().splitlines()
    try:
        found = json.loads(lines[-1]) if lines else {}
    except ValueError:
        found = {}
    if done.returncode == 0 and "device" in found:
        return result(
            True,
            f"{found['device']} (compute capability {found['capability']}, "
            f"{found['count']} device(s)), torch {found['torch']}, CUDA {found['cuda']}",
        )
    if "fatal" in found:
        return result(False, found["fatal"], fatal=True)
    if "error" in found:
        return result(False, found["error"])
    tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
    return result(False, f"the CUDA probe exited with status {done.returncode}: {tail}")


def wait_for_gpu(settings: CudaWaitSettings, log: Callable[[str], None]) -> str:
    """Probe until CUDA works (its device) or `settings.timeout_s` passes (GpuNotReady)."""
    started = time.monotonic()
    attempts = 0
    while True:
        attempts += 1
        probe = probe_once(settings.probe_timeout_s)
        elapsed = time.monotonic() - started
        if probe.ok:
            log(f"[gpu] ready after {attempts} probe(s), {elapsed:.1f}s: {probe.detail}")
            return probe.detail
        if probe.fatal:
            raise GpuNotReady(
                f"{probe.detail} with {sys.executable}. The image's Python must have PyTorch with "
                "CUDA; set SKIP_GPU_CHECK=1 only to run without a GPU (local tests)."
            )
        if elapsed + settings.interval_s > settings.timeout_s:
            raise GpuNotReady(
                f"CUDA did not become ready within {settings.timeout_s:g}s ({attempts} probes). "
                f"Last error: {probe.detail}. This worker has no usable GPU: check that the "
                "endpoint's GPU type matches the image (CUDA 12.8, RTX 5090 / SM 12.0) and that "
                "the host driver supports CUDA 12.8; RunPod replaces the worker when it exits. "
                "Raise GPU_READY_TIMEOUT_S if GPUs attach slowly on this host."
            )
        log(f"[gpu] not ready yet (probe {attempts}): {probe.detail}")
        time.sleep(settings.interval_s)


class BackgroundProbe:
    """One CUDA probe, started now in a thread of its own; `result()` waits for it."""

    def __init__(self, settings: CudaWaitSettings) -> None:
        self.settings = settings
        self._result: ProbeResult | None = None
        self._thread = threading.Thread(target=self._run, name="cuda-probe", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._result = probe_once(self.settings.probe_timeout_s)
        except Exception as exc:  # a probe that cannot even start is a failed probe
            detail = f"the CUDA probe could not run: {type(exc).__name__}: {exc}"
            self._result = ProbeResult(False, False, detail, 0.0)

    def result(self) -> ProbeResult:
        self._thread.join()
        if self._result is None:  # _run always sets it; this only satisfies the type
            return ProbeResult(False, False, "the CUDA probe gave no result", 0.0)
        return self._result
