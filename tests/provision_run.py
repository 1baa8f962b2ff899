"""`python -m wan_worker.provision` in a test's own world, for tests and benchmarks that run it
as a process: RunPod's mounts in folders of the test's own, and the provisioner's fixed values
(retries, claim timings, ...) changed, since no variable sets them.

    python -m tests.provision_run CONFIG [the command's own arguments]

CONFIG is JSON: {"mounts": {"network_volume": ..., "pod_volume": ..., "hf_cache": ...,
"mounted": [folders that count as mount points]}, "settings": {ProvisionSettings field: value}}.
The environment is read as the command reads it. `command(...)` builds the command line.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from wan_worker.provision.__main__ import main
from wan_worker.settings.provisioning import RUNPOD, ProvisionSettings, RunPodMounts


def config(mounts: dict[str, Any] | None = None, settings: dict[str, Any] | None = None) -> str:
    """CONFIG for one run (paths may be given as Path)."""
    return json.dumps({"mounts": mounts or {}, "settings": settings or {}}, default=str)


def command(
    *args: str, mounts: dict[str, Any] | None = None, settings: dict[str, Any] | None = None
) -> list[str]:
    """The command line of one run."""
    return [sys.executable, "-m", "tests.provision_run", config(mounts, settings), *args]


def mounts_from(config: dict[str, Any]) -> RunPodMounts:
    mounted = {Path(p) for p in config.pop("mounted", [])}
    places = {name: Path(value) for name, value in config.items()}
    return dataclasses.replace(RUNPOD, is_mount=lambda path: path in mounted, **places)


def settings_from(config: dict[str, Any], mounts: RunPodMounts) -> ProvisionSettings:
    settings = ProvisionSettings.from_env(mounts=mounts)
    kinds = {f.name: type(getattr(settings, f.name)) for f in dataclasses.fields(settings)}
    return dataclasses.replace(settings, **{k: kinds[k](v) for k, v in config.items()})


def run(argv: list[str]) -> int:
    config = json.loads(argv[0])
    mounts = mounts_from(config.get("mounts", {}))
    return main(argv[1:], lambda: settings_from(config.get("settings", {}), mounts))


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
