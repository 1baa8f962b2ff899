"""The boot's events, read back from its log: the one reader for the tests and for
scripts/bench_boot.py.

The boot writes each event as a log line (`wan_worker.boot.timeline`):

    2025-05-01 12:00:00,123 INFO wan_worker.boot: [boot] +12.3s readahead_file file=vae/x mb=1.0

`parse_events` gives one dict per such line: `event` (the name), `t` (the line's wall-clock
time, seconds since the epoch, from the log's own timestamp), `elapsed_s` (the seconds since the
handler's process started), and every key=value with the value it was written with. A line
still being written (no newline yet) is left for the next read.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

LINE = re.compile(
    r"^(?P<asctime>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) \S+ wan_worker\.boot: "
    r"\[boot\] \+(?P<elapsed>\d+\.\d+)s (?P<name>\w+)(?P<values>.*)$"
)
KEY = re.compile(r" (\w+)=")
_JSON = json.JSONDecoder()


def parse_events(text: str) -> list[dict[str, Any]]:
    """The boot's events in `text` (a log, other lines among them), in order."""
    lines = text.split("\n")[:-1]  # the last one is unfinished, or empty
    events = []
    for line in lines:
        found = LINE.match(line.rstrip("\r"))
        if found is None:
            continue
        event: dict[str, Any] = {
            "event": found["name"],
            "t": datetime.strptime(found["asctime"], "%Y-%m-%d %H:%M:%S,%f").timestamp(),
            "elapsed_s": float(found["elapsed"]),
        }
        event.update(parse_values(found["values"]))
        events.append(event)
    return events


def parse_values(text: str) -> dict[str, Any]:
    """` key=value key=value ...` as the timeline writes them: a value is JSON where it reads
    as JSON up to the next space, else the text up to the next space."""
    values: dict[str, Any] = {}
    at = 0
    while at < len(text):
        key = KEY.match(text, at)
        if key is None:
            raise ValueError(f"not a key=value at {at} of {text!r}")
        start = key.end()
        try:
            value, end = _JSON.raw_decode(text, start)
            if end < len(text) and text[end] != " ":
                raise ValueError("a bare value that begins like JSON")
        except ValueError:
            end = text.find(" ", start)
            end = len(text) if end < 0 else end
            value = text[start:end]
        values[key.group(1)] = value
        at = end
    return values
