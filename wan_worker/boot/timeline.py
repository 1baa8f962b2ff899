"""The boot's events in order, in its log: one line each, for people and for programs.

Each event is logged as `[boot] +12.3s name key=value ...`, the seconds counted from the
handler's process start; the log's own timestamp (`logs.FORMAT`) gives its wall-clock time, so
a benchmark or a test can order the events of several processes (start.sh, the boot, ComfyUI's
log) on one clock. A value is written bare where that is unambiguous (`file=vae/x.safetensors`,
`mb=6419.6`, `ok=true`), and as JSON otherwise: a text with a space, a quote or a newline, or
one that would read as a number (`outcome="left: ComfyUI began text_encode"`, `seed="7"`), and
a dict or a list (`stages={"text_encode": 2.1}`). So every line reads back into the values it
was written with (`tests/boot_events.py` does, for the tests and `scripts/bench_boot.py`).
"""

from __future__ import annotations

import json
import logging
import re
import time
from pathlib import PurePath
from typing import Any

log = logging.getLogger("wan_worker.boot")

#: A text written bare: no space, no quote, no bracket.
_BARE = re.compile(r"[^\s\"'{}\[\]]+")


def format_value(value: Any) -> str:
    """`value` as the event line writes it (see the module's docstring)."""
    if value is None or isinstance(value, bool | int | float):
        return json.dumps(value)
    if isinstance(value, str | PurePath):
        text = str(value)
        if _BARE.fullmatch(text) and not _reads_as_json(text):
            return text
        return json.dumps(text, ensure_ascii=False)
    return json.dumps(value, ensure_ascii=False, default=str)


def _reads_as_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


class Timeline:
    def __init__(self) -> None:
        self.started = time.monotonic()

    def mark(self, name: str, **detail: Any) -> None:
        elapsed = time.monotonic() - self.started
        values = "".join(f" {key}={format_value(value)}" for key, value in detail.items())
        log.info("[boot] +%.1fs %s%s", elapsed, name, values)
