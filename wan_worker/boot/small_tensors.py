"""The small tensors of a safetensors model file, read into the page cache before its bulk.

On a GPU, ComfyUI (with comfy-aimdo) maps a model file and builds the model from it lazily: the
large weights stay on disk until a sampler moves them to the GPU, but building the model reads
the small tensors scattered between them (each fp8 layer's scale, the biases, norms and
modulations: a few hundred places in a 13 GB expert). When those reads queue behind the
readahead's stream of the same disk, ComfyUI's first `load_models` takes 4-6 s instead of under
one. Reading them first, one range at a time, costs a few MB and a fraction of a second.

The format is safetensors' own: an 8-byte little-endian header length, a JSON header naming
each tensor's `data_offsets` (from the end of the header), then the data.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

#: Tensors smaller than this are "small": scales, biases, norms, modulations (a 5120-wide
#: model's largest, its modulation, is 61 KB); the fp8 weights are tens of MB each.
SMALL_TENSOR_BYTES = 1 << 20
#: Ranges closer together than this are read as one.
GAP_BYTES = 64 << 10
#: A header larger than this is not a model file's.
MAX_HEADER_BYTES = 100 << 20


@dataclass(frozen=True)
class SmallTensors:
    """Where a file's small tensors are: (offset, length) ranges, merged and in file order."""

    ranges: tuple[tuple[int, int], ...]

    @property
    def bytes(self) -> int:
        return sum(length for _offset, length in self.ranges)


def small_tensors_in_header_order(
    path: Path, max_bytes: int = SMALL_TENSOR_BYTES
) -> list[tuple[int, int]]:
    """Each small tensor of the safetensors file at `path` as (offset, length), in the order
    its header lists them (the order a loader walks them); ValueError when it is not one."""
    with path.open("rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            raise ValueError(f"{path.name} is too short to be a safetensors file")
        (length,) = struct.unpack("<Q", prefix)
        if length > MAX_HEADER_BYTES:
            raise ValueError(f"{path.name} has no safetensors header")
        try:
            header = json.loads(handle.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path.name} has no safetensors header ({exc})") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path.name} has no safetensors header")
    data_start = 8 + length
    found: list[tuple[int, int]] = []
    for name, info in header.items():
        if name == "__metadata__" or not isinstance(info, dict):
            continue
        offsets = info.get("data_offsets")
        if not (isinstance(offsets, list) and len(offsets) == 2):
            raise ValueError(f"{path.name}: tensor {name!r} has no data_offsets")
        start, end = int(offsets[0]), int(offsets[1])
        if 0 < end - start < max_bytes:
            found.append((data_start + start, end - start))
    return found


def small_tensors(
    path: Path, max_bytes: int = SMALL_TENSOR_BYTES, gap: int = GAP_BYTES
) -> SmallTensors:
    """The small tensors of the safetensors file at `path`, merged into ranges in file order;
    ValueError when it is not one."""
    merged: list[tuple[int, int]] = []
    for offset, size in sorted(small_tensors_in_header_order(path, max_bytes)):
        if merged and offset - sum(merged[-1]) <= gap:
            last_offset, _ = merged[-1]
            merged[-1] = (last_offset, max(sum(merged[-1]), offset + size) - last_offset)
        else:
            merged.append((offset, size))
    return SmallTensors(tuple(merged))


def read_ranges(path: Path, ranges: tuple[tuple[int, int], ...]) -> int:
    """Read `ranges` of `path` into the page cache, one at a time and nothing around them (no
    kernel readahead: ComfyUI's imports share the disk); return the bytes read."""
    done = 0
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
        for offset, size in ranges:
            done += len(os.pread(fd, size, offset))
    finally:
        os.close(fd)
    return done
