"""CUDA's readiness, checked while ComfyUI starts rather than before it.

The first probe (`wan_worker.gpu_ready.probe_once`: a fresh interpreter imports torch, then
queries the device and allocates on it) runs in a thread beside ComfyUI's launch, so its 4-5 s
no longer stand before ComfyUI's own start. ComfyUI touches CUDA only once torch and most of its
own modules are imported, seconds after the probe (which touches it right after importing
torch), so a probe that succeeds means CUDA was usable before ComfyUI reached it.

A probe that fails means ComfyUI may have started without the GPU. The boot then stops it,
waits for CUDA as `python -m wan_worker.gpu_ready` does (bounded by GPU_READY_TIMEOUT_S), and
starts it again; CUDA that never works ends the boot with status 1.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from wan_worker.gpu_ready import probe_once
from wan_worker.settings.cuda import CudaWaitSettings


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    detail: str
    seconds: float


class FirstProbe:
    """One CUDA probe, started now in a thread; `result()` waits for it."""

    def __init__(self, settings: CudaWaitSettings) -> None:
        self.settings = settings
        self._timeout_s = settings.probe_timeout_s
        self._started = time.monotonic()
        self._result: ProbeResult | None = None
        self._thread = threading.Thread(target=self._run, name="gpu-probe", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            ok, _fatal, detail = probe_once(self._timeout_s)
        except Exception as exc:  # a probe that cannot even start is a failed probe
            ok, detail = False, f"the CUDA probe could not run: {type(exc).__name__}: {exc}"
        self._result = ProbeResult(ok, detail, round(time.monotonic() - self._started, 2))

    def result(self) -> ProbeResult:
        self._thread.join()
        if self._result is None:  # _run always sets it; this only satisfies the type
            return ProbeResult(False, "the CUDA probe gave no result", 0.0)
        return self._result
