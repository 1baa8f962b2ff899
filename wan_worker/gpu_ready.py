"""Wait, bounded, until CUDA works: `python -m wan_worker.gpu_ready`.

RunPod sometimes attaches the GPU after the container starts, and a process whose first CUDA
call fails keeps failing ("CUDA driver initialization failed"). So each probe runs in a fresh
interpreter: import torch, `torch.cuda.is_available()`, then a device query and a tiny
allocation. Probes repeat until one succeeds or GPU_READY_TIMEOUT_S passes; then the boot fails
with the last error and what to do. torch is imported only inside the probe.

Environment: GPU_READY_TIMEOUT_S (default 120), GPU_READY_INTERVAL_S (default 2),
GPU_PROBE_TIMEOUT_S (default 60, one probe). start.sh skips this when SKIP_GPU_CHECK=1.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from collections.abc import Callable

from wan_worker import logs
from wan_worker.errors import ConfigError, GpuNotReady, redact
from wan_worker.settings.cuda import CudaWaitSettings

PROBE = """
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


def probe_once(probe_timeout_s: float) -> tuple[bool, bool, str]:
    """(ok, fatal, detail) from one probe in a fresh interpreter."""
    try:
        done = subprocess.run(
            [sys.executable, "-c", PROBE],
            capture_output=True,
            text=True,
            timeout=probe_timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return False, False, f"the CUDA probe hung for more than {probe_timeout_s:g}s"
    lines = done.stdout.strip().splitlines()
    try:
        result = json.loads(lines[-1]) if lines else {}
    except ValueError:
        result = {}
    if done.returncode == 0 and "device" in result:
        detail = (
            f"{result['device']} (compute capability {result['capability']}, "
            f"{result['count']} device(s)), torch {result['torch']}, CUDA {result['cuda']}"
        )
        return True, False, detail
    if "fatal" in result:
        return False, True, result["fatal"]
    if "error" in result:
        return False, False, result["error"]
    tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
    return False, False, f"the CUDA probe exited with status {done.returncode}: {tail}"


def wait_for_gpu(settings: CudaWaitSettings, log: Callable[[str], None] = print) -> str:
    started = time.monotonic()
    attempts = 0
    while True:
        attempts += 1
        ok, fatal, detail = probe_once(settings.probe_timeout_s)
        elapsed = time.monotonic() - started
        if ok:
            log(f"[gpu] ready after {attempts} probe(s), {elapsed:.1f}s: {detail}")
            return detail
        if fatal:
            raise GpuNotReady(
                f"{detail} with {sys.executable}. The image's Python must have PyTorch with "
                "CUDA; set SKIP_GPU_CHECK=1 only to run without a GPU (local tests)."
            )
        if elapsed + settings.interval_s > settings.timeout_s:
            raise GpuNotReady(
                f"CUDA did not become ready within {settings.timeout_s:g}s ({attempts} probes). "
                f"Last error: {detail}. This worker has no usable GPU: check that the endpoint's "
                "GPU type matches the image (CUDA 12.8, RTX 5090 / SM 12.0) and that the host "
                "driver supports CUDA 12.8; RunPod replaces the worker when it exits. Raise "
                "GPU_READY_TIMEOUT_S if GPUs attach slowly on this host."
            )
        log(f"[gpu] not ready yet (probe {attempts}): {detail}")
        time.sleep(settings.interval_s)


def main() -> int:
    logs.configure(logging.WARNING)
    try:
        wait_for_gpu(CudaWaitSettings.from_env(), log=lambda s: print(redact(s), flush=True))
    except (GpuNotReady, ConfigError) as exc:
        print(redact(f"[gpu] FAILED: {exc}"), file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
