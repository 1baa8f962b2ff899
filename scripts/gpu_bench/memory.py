"""GPU memory during the benchmark: `nvidia-smi` readings, and a process that holds the card
to a budget (by default the RTX 5090's 32607 MiB) so ComfyUI sees what a 5090 would leave it.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import time

from scripts.gpu_bench import BenchError

RTX_5090_MIB = 32607  # what nvidia-smi reports as the RTX 5090's total memory

# The helper that holds GPU memory: it allocates everything above the budget, reports, and
# keeps the allocation until its stdin closes (when the benchmark ends, however it ends).
BALLAST_CODE = """
import sys
import torch

budget = int(sys.argv[1]) * 2**20
free, total = torch.cuda.mem_get_info()
hold = max(0, free - budget)
block = torch.empty(hold, dtype=torch.uint8, device="cuda") if hold else None
free_after, _ = torch.cuda.mem_get_info()
print(f"READY {hold} {free_after} {total}", flush=True)
sys.stdin.read()
"""


class GpuMemorySampler:
    """``nvidia-smi`` device memory in use, every ``interval_ms``, stamped with our clock."""

    def __init__(self, interval_ms: int = 200) -> None:
        self.samples: list[tuple[float, int]] = []
        self.proc: subprocess.Popen[str] | None = None
        self.interval_ms = interval_ms
        self.thread: threading.Thread | None = None

    def start(self) -> bool:
        if shutil.which("nvidia-smi") is None:
            return False
        self.proc = subprocess.Popen(
            [
                "nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits",
                f"--loop-ms={self.interval_ms}", "-i", "0",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )  # fmt: skip
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()
        return True

    def _read(self) -> None:
        stdout = self.proc.stdout if self.proc is not None else None
        if stdout is None:
            return
        for line in stdout:
            text = line.strip()
            if text.isdigit():
                self.samples.append((time.monotonic(), int(text)))

    def now(self) -> int | None:
        """A fresh reading (one nvidia-smi call), independent of the sampling thread."""
        if shutil.which("nvidia-smi") is None:
            return None
        done = subprocess.run(
            ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits", "-i", "0"],
            capture_output=True,
            text=True,
            check=False,
        )
        text = done.stdout.strip()
        return int(text) if text.isdigit() else None

    def peak(self, start: float, end: float) -> int | None:
        values = [v for t, v in self.samples if start <= t <= end]
        return max(values) if values else None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


class VramBallast:
    """A process holding all GPU memory above ``budget_mib`` until the benchmark ends."""

    def __init__(self, python: str, budget_mib: int) -> None:
        self.python = python
        self.budget_mib = budget_mib
        self.proc: subprocess.Popen[str] | None = None
        self.info: dict[str, int] = {}

    def start(self) -> dict[str, int]:
        self.proc = subprocess.Popen(
            [self.python, "-c", BALLAST_CODE, str(self.budget_mib)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        line = self.proc.stdout.readline() if self.proc.stdout is not None else ""
        if not line.startswith("READY "):
            self.stop()
            raise BenchError(
                f"the helper that holds GPU memory above --vram-budget-mib failed ({line!r}); "
                "pass --vram-budget-mib 0 to run without a budget"
            )
        held, free_after, total = (int(x) for x in line.split()[1:])
        self.info = {
            "held_mib": held >> 20,
            "free_after_mib": free_after >> 20,
            "total_mib": total >> 20,
        }
        return self.info

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
