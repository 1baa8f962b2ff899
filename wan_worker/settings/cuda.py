"""The boot's CUDA check: how long to wait for a usable GPU, and how often to probe."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from wan_worker.settings.env import EnvVars


@dataclass(frozen=True)
class CudaWaitSettings:
    #: GPU_READY_TIMEOUT_S: how long the boot waits for CUDA after a failed probe (RunPod
    #: sometimes attaches the GPU late; an operator raises it on hosts that attach slowly).
    timeout_s: float = 120.0
    #: The pause between two probes while the boot waits (not a setting: nothing measured it).
    interval_s: float = 2.0
    #: One probe's bound. A probe took 4-5 s, and 7.7-10.2 s as a fresh host's first use of its
    #: GPU (docs/history/benchmarks.md, "Spreads for the last cells, and a fresh host's first
    #: boot").
    probe_timeout_s: float = 60.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | EnvVars | None = None) -> CudaWaitSettings:
        var = EnvVars.of(env)
        return cls(timeout_s=var.number("GPU_READY_TIMEOUT_S", cls.timeout_s, 0, "seconds"))
