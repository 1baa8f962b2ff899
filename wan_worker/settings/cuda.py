"""The boot's CUDA check: how long to wait for a usable GPU, and how often to probe."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from wan_worker.settings.env import EnvVars


@dataclass(frozen=True)
class CudaWaitSettings:
    timeout_s: float = 120.0
    interval_s: float = 2.0
    probe_timeout_s: float = 60.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | EnvVars | None = None) -> CudaWaitSettings:
        var = EnvVars.of(env)
        d = cls()
        return cls(
            timeout_s=var.number("GPU_READY_TIMEOUT_S", d.timeout_s, 0, "seconds"),
            interval_s=var.number("GPU_READY_INTERVAL_S", d.interval_s, 0, "seconds"),
            probe_timeout_s=var.number("GPU_PROBE_TIMEOUT_S", d.probe_timeout_s, 0, "seconds"),
        )
