"""Read the model files into the page cache while ComfyUI starts, in the order a job uses them.

ComfyUI's start is mostly imports (about 25 s on an H200), and a first job on a cold page cache
spends much of its extra time reading 38 GB of models from disk. Reading them meanwhile turns
the first job's reads into page-cache hits. The order is the order of first use in the fixed
workflow (`first_use_order`): the text encoder (text_encode), the VAE (image_encode), the
high-noise expert and the LoRA patched into it (sample_high_noise), the low-noise expert
(sample_low_noise), RIFE (interpolate); a test checks it against the order a real ComfyUI ran
the workflow in.

Each file is read in chunks with `sendfile` to /dev/null (into the page cache, no copy through
user space), and the reading stops early when it cannot help:

- the **budget** is spent: MemAvailable at the start (or the container's memory-cgroup headroom,
  where that is less) minus READAHEAD_RESERVE_MB (left to ComfyUI and the job); a file that
  does not fit in what is left ends the readahead, since every later file is needed later
  still;
- ComfyUI has **begun the stage** that uses a file (a job or the warm-up got there first): it is
  loading the file itself, and its loader advises the kernel to drop the pages it has read,
  so reading behind it would read them twice. That file is left, and the next one tried;
- every stage has begun, or the boot stops the readahead.

Files the provisioner has just read (hashed or downloaded at this boot) are skipped: they are
in the page cache already.

**Before ComfyUI first answers**, its imports read thousands of small files from the same disk,
and they queue behind a stream read at full speed. So only `cap_before_answer` bytes (the text
encoder and the VAE) are read before the answer; the file that would pass the cap, and every
file after it, waits for the answer (`wait_for_answer`), then the reading goes on.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wan_worker.workflow import MODEL_INPUTS, STAGES

CHUNK_BYTES = 64 * 1024 * 1024
#: Stages in the order a job runs them (the workflow's STAGES lists them so).
STAGE_ORDER: tuple[str, ...] = tuple(dict.fromkeys(STAGES.values()))


@dataclass(frozen=True)
class ModelUse:
    """A model file (its manifest folder and name) and the stage that first needs it."""

    stage: str
    folder: str
    filename: str

    @property
    def relpath(self) -> str:
        return f"{self.folder}/{self.filename}"


def _consumers(graph: Mapping[str, Any]) -> dict[str, list[str]]:
    """node id -> the ids of the nodes that take one of its outputs."""
    found: dict[str, list[str]] = {}
    for node_id, node in graph.items():
        for value in (node.get("inputs") or {}).values():
            if isinstance(value, list) and len(value) == 2 and str(value[0]) in graph:
                found.setdefault(str(value[0]), []).append(str(node_id))
    return found


def _first_stage(start: str, consumers: Mapping[str, list[str]]) -> str | None:
    """The earliest working stage (not loading) among `start` and the nodes downstream of it."""
    seen = {start}
    frontier = [start]
    best: int | None = None
    while frontier:
        node = frontier.pop()
        stage = STAGES.get(node)
        if stage is not None and stage != "load_models":
            index = STAGE_ORDER.index(stage)
            best = index if best is None else min(best, index)
        for nxt in consumers.get(node, []):
            if nxt not in seen:
                seen.add(nxt)
                frontier.append(nxt)
    return STAGE_ORDER[best] if best is not None else None


def first_use_order(graph: Mapping[str, Any]) -> list[ModelUse]:
    """Every model file the workflow's loaders name, in the order a job first uses them."""
    consumers = _consumers(graph)
    uses: list[ModelUse] = []
    for node_id, node in graph.items():
        for (class_type, input_name), folder in MODEL_INPUTS.items():
            value = (node.get("inputs") or {}).get(input_name)
            if node.get("class_type") != class_type or not isinstance(value, str):
                continue
            stage = _first_stage(str(node_id), consumers) or STAGE_ORDER[-1]
            uses.append(ModelUse(stage, folder, value))
    unique = {use.relpath: use for use in uses}.values()
    return sorted(unique, key=lambda use: (STAGE_ORDER.index(use.stage), use.relpath))


def mem_available_bytes(meminfo: Path = Path("/proc/meminfo")) -> int | None:
    """MemAvailable from /proc/meminfo (None where there is none)."""
    try:
        for line in meminfo.read_text(encoding="ascii").splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


#: cgroup v1 writes a limit this large (page-rounded 2**63 - 1) for "no limit".
_V1_NO_LIMIT = 1 << 62


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text(encoding="ascii").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # "max" (cgroup v2): no limit


def cgroup_headroom_bytes(cgroup: Path = Path("/sys/fs/cgroup")) -> int | None:
    """How much more this container's memory cgroup may charge before it reclaims: its limit
    minus what it holds now, page cache included (None: no limit, or no cgroup). In a container
    /proc/meminfo describes the host, so MemAvailable alone can promise memory the container's
    limit does not give, and the page cache read past it would evict itself."""
    for limit_file, usage_file in (
        (cgroup / "memory.max", cgroup / "memory.current"),  # v2
        (cgroup / "memory" / "memory.limit_in_bytes", cgroup / "memory" / "memory.usage_in_bytes"),
    ):
        limit, usage = _read_int(limit_file), _read_int(usage_file)
        if limit is not None and usage is not None and limit < _V1_NO_LIMIT:
            return max(0, limit - usage)
    return None


def memory_for_readahead(
    meminfo: Path = Path("/proc/meminfo"), cgroup: Path = Path("/sys/fs/cgroup")
) -> tuple[int, str] | None:
    """The memory the page cache can grow into: MemAvailable, or the container's cgroup
    headroom where that is less; with what set it. None where neither can be read."""
    available = mem_available_bytes(meminfo)
    headroom = cgroup_headroom_bytes(cgroup)
    if headroom is not None and (available is None or headroom < available):
        return headroom, "the container's memory limit"
    if available is None:
        return None
    return available, "MemAvailable"


@dataclass
class FileRead:
    relpath: str
    stage: str
    size: int
    read: int = 0
    seconds: float = 0.0
    outcome: str = "pending"  # read, skipped (why), left (why)


@dataclass
class ReadaheadReport:
    budget: int
    files: list[FileRead] = field(default_factory=list)
    seconds: float = 0.0
    stopped: str = ""

    @property
    def read(self) -> int:
        return sum(f.read for f in self.files)


Mark = Callable[..., None]
#: Block until ComfyUI has answered once (or the boot failed: nothing is left to wait for).
WaitForAnswer = Callable[[], object]


class Readahead:
    """One pass over `uses` under `models_root`; `run` returns what it read and why it ended."""

    def __init__(
        self,
        uses: Iterable[ModelUse],
        models_root: Path,
        *,
        budget: int,
        stage_begun: Callable[[str], bool],
        already_cached: Iterable[str] = (),
        stop: threading.Event | None = None,
        mark: Mark | None = None,
        chunk_bytes: int = CHUNK_BYTES,
        cap_before_answer: int | None = None,
        wait_for_answer: WaitForAnswer = lambda: None,
        budget_from: str = "MemAvailable",
    ) -> None:
        self.uses = list(uses)
        self.models_root = models_root
        self.budget = budget
        #: What set the budget (the log says it): MemAvailable, or the container's memory limit.
        self.budget_from = budget_from
        self.stage_begun = stage_begun
        #: Files in the page cache already (the provisioner has just read them): skipped.
        self.already_cached = set(already_cached)
        self.stop = stop or threading.Event()
        self.mark: Mark = mark or (lambda *_args, **_kwargs: None)
        self.chunk_bytes = chunk_bytes
        #: Bytes read before ComfyUI's first answer, at most (None: no cap, no hold); the file
        #: that would pass it waits for `wait_for_answer`, once.
        self.cap_before_answer = cap_before_answer
        self.wait_for_answer = wait_for_answer

    def run(self) -> ReadaheadReport:
        report = ReadaheadReport(self.budget)
        began = time.monotonic()
        left = self.budget
        self.mark(
            "readahead_started",
            budget_mb=_mb(self.budget),
            budget_from=self.budget_from,
            files=len(self.uses),
        )
        for use in self.uses:
            path = self.models_root / use.folder / use.filename
            try:
                size = path.stat().st_size
            except OSError:
                report.files.append(FileRead(use.relpath, use.stage, 0, outcome="skipped: missing"))
                continue
            entry = FileRead(use.relpath, use.stage, size)
            report.files.append(entry)
            if self.stop.is_set():
                report.stopped = "the boot stopped it"
                entry.outcome = "skipped: stopped"
                break
            if all(self.stage_begun(stage) for stage in STAGE_ORDER if stage != "load_models"):
                report.stopped = "ComfyUI has begun every stage"
                entry.outcome = "skipped: every stage begun"
                break
            if use.relpath in self.already_cached:
                entry.outcome = "skipped: read by verification at this boot"
                continue
            if self.stage_begun(use.stage):
                entry.outcome = f"skipped: ComfyUI began {use.stage}"
                continue
            cap = self.cap_before_answer
            if cap is not None and report.read + size > cap:
                self._hold_until_answer(report.read)
                if self.stage_begun(use.stage):
                    entry.outcome = f"skipped: ComfyUI began {use.stage}"
                    continue
            if size > left:
                report.stopped = (
                    f"the budget is spent ({left >> 20} MiB left of {self.budget >> 20} MiB, "
                    f"{use.relpath} needs {size >> 20} MiB)"
                )
                entry.outcome = "skipped: over budget"
                break
            self._read(path, entry)
            left -= entry.read
            self.mark(
                "readahead_file",
                file=use.relpath,
                mb=_mb(entry.read),
                s=round(entry.seconds, 2),
                outcome=entry.outcome,
            )
        report.seconds = time.monotonic() - began
        report.stopped = report.stopped or "every file read"
        self.mark(
            "readahead_done",
            mb=_mb(report.read),
            s=round(report.seconds, 2),
            stopped=report.stopped,
        )
        return report

    def _hold_until_answer(self, read: int) -> None:
        """The next file would pass the cap before ComfyUI's answer: wait for the answer, once
        (the files after it wait with it)."""
        self.cap_before_answer = None
        self.mark("readahead_held", mb=_mb(read))
        began = time.monotonic()
        self.wait_for_answer()
        self.mark("readahead_resumed", waited_s=round(time.monotonic() - began, 2))

    def _read(self, path: Path, entry: FileRead) -> None:
        began = time.monotonic()
        try:
            with path.open("rb") as src, open(os.devnull, "wb") as sink:
                entry.outcome = "read"
                while entry.read < entry.size:
                    if self.stop.is_set():
                        entry.outcome = "left: the boot stopped it"
                        break
                    if self.stage_begun(entry.stage):
                        entry.outcome = f"left: ComfyUI began {entry.stage}"
                        break
                    count = min(self.chunk_bytes, entry.size - entry.read)
                    done = _read_into_cache(src.fileno(), sink.fileno(), entry.read, count)
                    if done == 0:
                        break
                    entry.read += done
        except OSError as exc:
            entry.outcome = f"left: {exc.strerror or exc}"
        entry.seconds = time.monotonic() - began


def _mb(count: int) -> float:
    return round(count / 2**20, 1)


def _read_into_cache(src: int, sink: int, offset: int, count: int) -> int:
    """Read `count` bytes of `src` from `offset` through the page cache; return how many."""
    try:
        return os.sendfile(sink, src, offset, count)
    except OSError:  # a file system without sendfile: read them (and drop them) instead
        return len(os.pread(src, count, offset))
