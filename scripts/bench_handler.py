"""Measure the handler's own overhead per job against the ComfyUI double.

For each job it takes the moment the double sent `execution_success` (the timestamp ComfyUI
puts in that message, kept in /history) and the moment `handle()` returned, both wall clock on
this machine, and reports the gap with and without the base64 encode. Run from the project root:

    python scripts/bench_handler.py --jobs 20 --width 480 --height 832
"""

from __future__ import annotations

import argparse
import base64
import statistics
import sys
import tempfile
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support import make_png, start_double, stop
from wan_worker.handler import handle


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--width", type=int, default=480)
    parser.add_argument("--height", type=int, default=832)
    args = parser.parse_args()

    image = base64.b64encode(make_png(832, 480)).decode()
    with tempfile.TemporaryDirectory() as tmp:
        server = start_double(Path(tmp))
        try:
            worker = server.worker(max_base64_bytes=100_000_000)
            after_success, encode, sizes = [], [], []
            for index in range(args.jobs + 1):
                job = {
                    "id": f"bench-{index}",
                    "input": {
                        "start_image": image,
                        "prompt": "benchmark",
                        "width": args.width,
                        "height": args.height,
                    },
                }
                result = handle(job, worker)
                returned = time.time()
                if "error" in result:
                    raise SystemExit(f"job failed: {result['error']}")
                history = requests.get(f"{server.url}/history", timeout=5).json()
                last = list(history.values())[-1]
                success = next(
                    data["timestamp"]
                    for kind, data in last["status"]["messages"]
                    if kind == "execution_success"
                )
                if index == 0:
                    continue  # warm-up: first connection, imports
                gap_ms = (returned * 1000) - success
                after_success.append(gap_ms)
                encode.append(result["timings"]["deliver_s"] * 1000)
                sizes.append(result["bytes"])
        finally:
            stop(server)

    without_encode = [a - e for a, e in zip(after_success, encode, strict=True)]
    print(
        f"jobs: {args.jobs} at {args.width}x{args.height}, MP4 median {statistics.median(sizes)} B"
    )
    for name, values in (
        ("execution_success -> handler returned", after_success),
        ("  of which base64 encode", encode),
        ("  overhead without the encode", without_encode),
    ):
        print(
            f"{name:40s} median {statistics.median(values):6.1f} ms   "
            f"p95 {percentile(values, 0.95):6.1f} ms   max {max(values):6.1f} ms"
        )


if __name__ == "__main__":
    main()
