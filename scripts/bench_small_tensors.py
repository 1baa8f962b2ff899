"""Time touching a model file's small tensors behind the readahead's stream, with and without
reading them first: the disk-side cost the readahead's small-tensor pass removes.

What it plays, on one safetensors file out of the page cache (posix_fadvise DONTNEED, no root):

- `stream first` (the boot without the pass): a process streams the file from its start, as the
  readahead does from ComfyUI's answer on, while this process touches each small tensor
  (`wan_worker.boot.small_tensors`) through a memory map, in header order, as ComfyUI does when
  it builds a model from a mapped file;
- `small first` (the boot with it): the small tensors are read first (`read_ranges`, timed on
  its own), then the same stream and the same touches.

The two alternate, `--runs` times each; the report gives min / median / max. The touch list is
the pass's own (the small tensors), so this measures what reading them first saves when they are
what the loader reads; which pages ComfyUI's loader really reads is measured on a GPU (its
`load_models` stage in scripts/bench_boot.py).

    python scripts/bench_small_tensors.py --file MODELS/diffusion_models/EXPERT.safetensors
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from wan_worker.boot.small_tensors import (  # noqa: E402
    read_ranges,
    small_tensors,
    small_tensors_in_header_order,
)

STREAM = """
import os, sys
src = os.open(sys.argv[1], os.O_RDONLY); sink = os.open(os.devnull, os.O_WRONLY)
offset, size = 0, os.fstat(src).st_size
print("streaming", flush=True)
while offset < size:
    offset += os.sendfile(sink, src, offset, 64 << 20) or size
"""


def evict(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def touch(path: Path, ranges: list[tuple[int, int]]) -> float:
    """Read each range through a memory map; the seconds it took."""
    began = time.monotonic()
    total = 0
    with path.open("rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        for offset, size in ranges:
            total += len(mm[offset : offset + size])
    if total != sum(size for _offset, size in ranges):
        raise RuntimeError(f"read {total} bytes of {path.name}'s small tensors, not all of them")
    return time.monotonic() - began


def one_run(path: Path, small_first: bool) -> dict[str, float]:
    evict(path)
    result: dict[str, float] = {}
    if small_first:
        began = time.monotonic()
        read_ranges(path, small_tensors(path).ranges)
        result["pass_s"] = round(time.monotonic() - began, 3)
    stream = subprocess.Popen(
        [sys.executable, "-c", STREAM, str(path)], stdout=subprocess.PIPE, text=True
    )
    try:
        if stream.stdout is not None:
            stream.stdout.readline()  # it has opened the file and starts reading
        result["touch_s"] = round(touch(path, small_tensors_in_header_order(path)), 3)
    finally:
        stream.kill()
        stream.wait()
    return result


def spread(values: list[float]) -> str:
    return f"{min(values):.3f} / {statistics.median(values):.3f} / {max(values):.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--file", type=Path, required=True, help="a safetensors model file")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--out", type=Path, default=None, help="write the runs as JSON here")
    args = parser.parse_args()
    found = small_tensors(args.file)
    runs: dict[str, list[dict[str, float]]] = {"stream first": [], "small first": []}
    for _ in range(args.runs):
        runs["stream first"].append(one_run(args.file, small_first=False))
        runs["small first"].append(one_run(args.file, small_first=True))
    size = args.file.stat().st_size
    count = len(small_tensors_in_header_order(args.file))
    lines = [
        f"{args.file.name}: {size / 1e9:.1f} GB, {count} small tensors "
        f"in {len(found.ranges)} ranges, {found.bytes / 2**20:.1f} MiB; {args.runs} runs each; "
        "seconds, min / median / max",
    ]
    for arm, results in runs.items():
        text = f"- {arm}: touching the small tensors {spread([r['touch_s'] for r in results])}"
        if arm == "small first":
            text += f"; the pass itself {spread([r['pass_s'] for r in results])}"
        lines.append(text)
    print("\n".join(lines))
    if args.out is not None:
        report = {"file": str(args.file), "bytes": size, "ranges": len(found.ranges)}
        args.out.write_text(json.dumps({**report, "runs": runs}, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
