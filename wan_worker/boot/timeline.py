"""The boot's events in order, for the log and for whoever measures the boot.

Each event is logged as `[boot] +12.3s name key=value ...`, the seconds counted from the
handler's process start, and, when BOOT_EVENTS_FILE is set, appended to that file as one JSON
object per line with its wall-clock time (`t`, seconds since the epoch), so a benchmark or a
test can order events of several processes (start.sh, the boot, ComfyUI's log) on one clock.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("wan_worker.boot")


class Timeline:
    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self.started = time.monotonic()
        self._lock = threading.Lock()

    def mark(self, name: str, **detail: Any) -> None:
        elapsed = time.monotonic() - self.started
        shown = " ".join(f"{key}={value}" for key, value in detail.items())
        log.info("[boot] +%.1fs %s%s", elapsed, name, f" {shown}" if shown else "")
        if self.path is None:
            return
        line = json.dumps({"event": name, "t": time.time(), **detail}, default=str)
        with self._lock, self.path.open("a", encoding="utf-8") as handle:
            handle.write(line + "\n")
