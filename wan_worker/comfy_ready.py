"""Wait until the ComfyUI that start.sh launched answers; fail at once if it exits.

    python -m wan_worker.comfy_ready --url http://127.0.0.1:8188 \
        --pid-file /tmp/comfyui.pid --log /tmp/comfyui.log --timeout 180

The same readiness check the handler uses before each job (ComfyClient.wait_ready, tied to the
process through its PID file), run once at boot so the worker only takes jobs once ComfyUI is
up. On failure it prints the cause and the end of ComfyUI's log and exits 1.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from wan_worker import logs
from wan_worker.comfy.client import ComfyClient
from wan_worker.comfy.process import ComfyProcess
from wan_worker.errors import ComfyUnavailable, redact

TAIL_LINES = 20


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m wan_worker.comfy_ready")
    parser.add_argument("--url", required=True)
    parser.add_argument("--pid-file", type=Path, required=True)
    parser.add_argument("--log", type=Path, required=True)
    parser.add_argument("--timeout", type=float, default=180.0)
    args = parser.parse_args(argv)
    logs.configure(logging.WARNING)
    process = ComfyProcess(args.pid_file, args.log)
    started = time.monotonic()
    try:
        ComfyClient(args.url, process).wait_ready(args.timeout)
    except ComfyUnavailable as exc:
        state = process.state()
        if not state.alive:
            reason = f"ComfyUI (pid {state.pid}) exited before answering: {process.death_cause()}."
        else:
            reason = f"{exc.message} Raise COMFYUI_READY_TIMEOUT_S if it is still loading."
        tail = "\n".join(process.log_tail().splitlines()[-TAIL_LINES:]) or "(empty log)"
        print(
            redact(f"[start] FAILED: {reason} Last log lines:\n{tail}"),
            file=sys.stderr,
            flush=True,
        )
        return 1
    print(
        f"[start] ComfyUI answers at {args.url} after {time.monotonic() - started:.1f}s",
        file=sys.stderr,
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
