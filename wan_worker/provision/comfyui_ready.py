"""Wait until the ComfyUI that start.sh launched answers.

Run as `python -m wan_worker.provision.comfyui_ready`.

Polls GET <url>/system_stats (quickly at first, then once a second) until it answers 200, the
ComfyUI process exits (then the boot fails with the end of its log), or the timeout passes.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped by start.sh) still answers kill(0).
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8")
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/system_stats", timeout=5) as response:  # noqa: S310
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _tail(log: Path | None, lines: int = 20) -> str:
    if log is None or not log.exists():
        return "(no log)"
    text = log.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
    return "\n".join(text) or "(empty log)"


def wait_ready(url: str, pid: int, timeout_s: float, log: Path | None) -> str | None:
    """None when ready, else the reason it is not."""
    started = time.monotonic()
    delay = 0.05
    while True:
        if _answers(url):
            return None
        if not _alive(pid):
            return f"ComfyUI (pid {pid}) exited before answering. Last log lines:\n{_tail(log)}"
        if time.monotonic() - started > timeout_s:
            return (
                f"ComfyUI did not answer {url}/system_stats within {timeout_s:g}s. "
                f"Raise COMFYUI_READY_TIMEOUT_S if it is still loading. Last log lines:\n"
                f"{_tail(log)}"
            )
        time.sleep(delay)
        delay = min(delay * 2, 1.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m wan_worker.provision.comfyui_ready")
    parser.add_argument("--url", required=True)
    parser.add_argument("--pid", type=int, required=True)
    parser.add_argument("--timeout", type=float, default=180.0)
    parser.add_argument("--log", type=Path, default=None)
    args = parser.parse_args(argv)
    started = time.monotonic()
    problem = wait_ready(args.url.rstrip("/"), args.pid, args.timeout, args.log)
    if problem is not None:
        print(f"[start] FAILED: {problem}", file=sys.stderr, flush=True)
        return 1
    print(
        f"[start] ComfyUI answers at {args.url} after {time.monotonic() - started:.1f}s",
        file=sys.stderr,
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
