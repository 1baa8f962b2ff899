"""Parallel, resumable transfer of one file into a temporary name.

The temporary file is the final size from the start; bytes land at their offsets (pwrite), and
the byte ranges already written are recorded in a small state file beside it (every 256 MiB,
and at least every second). A transfer that
stops (network error, killed process) resumes by fetching only the missing ranges. Each range
is retried with exponential backoff; a source that keeps failing raises `SourceFailed` so the
caller can try the next source. The file's sha256 is computed while the ranges arrive
(`verify.PrefixHasher`), so verifying a download needs no second read of the file.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, Protocol

from wan_worker.errors import NoRangeSupport, RetryableError, SourceFailed
from wan_worker.provision.verify import PrefixHasher

STATE_SUFFIX = ".state.json"
PERSIST_EVERY_BYTES = 256 * 1024 * 1024
PERSIST_EVERY_S = 1.0  # and at least this often: what a takeover resumes from


Sink = Callable[[int, bytes | memoryview], None]


class Remote(Protocol):
    """A file on a source, opened: its size, published sha256 (if any), and a range reader."""

    label: str
    size: int
    sha256: str | None
    identity: str

    def read_range(self, start: int, end: int, sink: Sink) -> None:
        """Deliver bytes [start, end) by calling sink(offset, data), in order."""
        ...


class Extents:
    """A set of half-open byte ranges, merged; thread-safe."""

    def __init__(self, ranges: list[tuple[int, int]] | None = None) -> None:
        self._lock = threading.Lock()
        self._ranges: list[tuple[int, int]] = []
        for start, end in ranges or []:
            self.add(start, end)

    def add(self, start: int, end: int) -> None:
        if end <= start:
            return
        with self._lock:
            merged: list[tuple[int, int]] = []
            placed = False
            for s, e in self._ranges:
                if e < start:
                    merged.append((s, e))
                elif end < s:
                    if not placed:
                        merged.append((start, end))
                        placed = True
                    merged.append((s, e))
                else:
                    start, end = min(s, start), max(e, end)
            if not placed:
                merged.append((start, end))
            merged.sort()
            self._ranges = merged

    def ranges(self) -> list[tuple[int, int]]:
        with self._lock:
            return list(self._ranges)

    def prefix(self) -> int:
        """End of the range that starts at byte 0 (0 if none does)."""
        with self._lock:
            return self._ranges[0][1] if self._ranges and self._ranges[0][0] == 0 else 0

    def total(self) -> int:
        return sum(e - s for s, e in self.ranges())

    def missing(self, size: int) -> list[tuple[int, int]]:
        gaps, cursor = [], 0
        for s, e in self.ranges():
            if s > cursor:
                gaps.append((cursor, s))
            cursor = max(cursor, e)
        if cursor < size:
            gaps.append((cursor, size))
        return gaps


@dataclass
class PartialState:
    """What a partial download already holds; persisted beside the temporary file."""

    size: int
    identity: str
    source: str
    done: Extents = field(default_factory=Extents)

    def save(self, path: Path) -> None:
        tmp = path.with_name(path.name + ".tmp")
        data = {
            "size": self.size,
            "identity": self.identity,
            "source": self.source,
            "done": self.done.ranges(),
        }
        tmp.write_text(json.dumps(data), encoding="utf-8")
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> PartialState | None:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(
                size=int(data["size"]),
                identity=str(data["identity"]),
                source=str(data["source"]),
                done=Extents([(int(s), int(e)) for s, e in data["done"]]),
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None


def state_path(tmp: Path) -> Path:
    """Where the state of the partial download in `tmp` is kept."""
    return tmp.with_name(tmp.name + STATE_SUFFIX)


def resumable_state(tmp: Path, remote: Remote) -> PartialState | None:
    """What the partial download in `tmp` holds, if it can be resumed from `remote`: the file
    is there and its state records the same size and identity."""
    state = PartialState.load(state_path(tmp)) if tmp.exists() else None
    if state is None or state.size != remote.size or state.identity != remote.identity:
        return None
    return state


class DownloadProgress:
    """Byte counters for all transfers, and periodic lines with bytes, rate and ETA."""

    def __init__(self, log: Callable[[str], None], interval_s: float) -> None:
        self._log = log
        self._interval = interval_s
        self._lock = threading.Lock()
        self._files: dict[str, list[int]] = {}  # name -> [done, total, started_done]
        self._started = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def track(self, name: str, done: int, total: int) -> None:
        with self._lock:
            self._files[name] = [done, total, done]

    def add(self, name: str, count: int) -> None:
        with self._lock:
            self._files[name][0] += count

    def forget(self, name: str) -> None:
        with self._lock:
            self._files.pop(name, None)

    def snapshot(self) -> tuple[int, int, int]:
        with self._lock:
            done = sum(v[0] for v in self._files.values())
            total = sum(v[1] for v in self._files.values())
            fetched = sum(v[0] - v[2] for v in self._files.values())
        return done, total, fetched

    def line(self) -> str:
        done, total, fetched = self.snapshot()
        elapsed = max(time.monotonic() - self._started, 1e-6)
        return progress_line(done, total, fetched / elapsed)

    def start(self) -> None:
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="progress", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            if self.snapshot()[1]:
                self._log(self.line())


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover


def progress_line(done: int, total: int, rate: float) -> str:
    """`downloading: 1.2 GiB / 9.8 GiB (12%) at 350.0 MiB/s, ETA 25s`."""
    pct = 100 * done / total if total else 100.0
    remaining = max(total - done, 0)
    eta = f"{remaining / rate:.0f}s" if rate > 0 else "unknown"
    return (
        f"downloading: {human_bytes(done)} / {human_bytes(total)} ({pct:.0f}%) "
        f"at {human_bytes(rate)}/s, ETA {eta}"
    )


class OffsetWriter:
    """A seekable, write-only view of the temporary file that records what was written.

    Positional writes (`write_at`) serve the range engine; `seek`/`write` serve libraries that
    drive a seekable file object themselves (boto3's download_fileobj).
    """

    def __init__(
        self,
        fd: int,
        state: PartialState,
        state_path: Path,
        progress: DownloadProgress,
        name: str,
        hasher: PrefixHasher | None = None,
        check: Callable[[], None] | None = None,
    ) -> None:
        self._fd = fd
        self._check = check
        self._state = state
        self._state_path = state_path
        self._progress = progress
        self._name = name
        self._hasher = hasher
        self._pos = 0
        self._since_persist = 0
        self._persisted_at = time.monotonic()
        self._lock = threading.Lock()

    def check(self) -> None:
        """Raise when this process may no longer write the file (its claim was taken over)."""
        if self._check is not None:
            self._check()

    def write_at(self, offset: int, data: bytes | memoryview) -> None:
        self.check()
        view = memoryview(data)
        pos = offset
        if self._hasher is not None:
            self._hasher.writing(offset)
        while view:
            written = os.pwrite(self._fd, view, pos)
            view = view[written:]
            pos += written
        self._state.done.add(offset, offset + len(data))
        if self._hasher is not None:
            self._hasher.wrote(offset)
        self._progress.add(self._name, len(data))
        with self._lock:
            self._since_persist += len(data)
            now = time.monotonic()
            persist = (
                self._since_persist >= PERSIST_EVERY_BYTES
                or now - self._persisted_at >= PERSIST_EVERY_S
            )
            if persist:
                self._since_persist = 0
                self._persisted_at = now
        if persist:
            self.persist()

    def persist(self) -> None:
        with self._lock:
            self._state.save(self._state_path)

    # file-object protocol for boto3
    def seekable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        if whence == 0:
            self._pos = offset
        elif whence == 1:
            self._pos += offset
        else:
            self._pos = self._state.size + offset
        return self._pos

    def tell(self) -> int:
        return self._pos

    def write(self, data: bytes) -> int:
        self.write_at(self._pos, data)
        self._pos += len(data)
        return len(data)

    def flush(self) -> None:
        return None


def chunks(gaps: list[tuple[int, int]], chunk: int) -> Iterator[tuple[int, int]]:
    for start, end in gaps:
        for s in range(start, end, chunk):
            yield s, min(s + chunk, end)


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int
    backoff_s: float

    def delay(self, attempt: int) -> float:
        return min(self.backoff_s * 2.0**attempt, 30.0)


def _fetch_range(
    remote: Remote,
    *,
    start: int,
    end: int,
    writer: OffsetWriter,
    policy: RetryPolicy,
    log: Callable[[str], None],
) -> None:
    """One range with retries; a retry continues from the last byte received."""
    position = start

    def sink(offset: int, data: bytes | memoryview) -> None:
        nonlocal position
        writer.write_at(offset, data)
        position = offset + len(data)

    for attempt in range(policy.attempts):
        writer.check()  # before asking for more: the file may have been taken over meanwhile
        try:
            remote.read_range(position, end, sink)
            if position < end:
                raise RetryableError(f"short read: got {position - start} of {end - start} bytes")
            return
        except RetryableError as exc:
            if attempt + 1 >= policy.attempts:
                raise SourceFailed(f"{exc} (after {policy.attempts} attempts)") from exc
            delay = policy.delay(attempt)
            log(f"{remote.label}: bytes {position}-{end}: {exc}; retrying in {delay:.1f}s")
            time.sleep(delay)


class Transferred(NamedTuple):
    fetched: int  # bytes fetched by this call (a resumed partial already held the rest)
    sha256: str | None  # the file's sha256, or None if it must be hashed from disk


def transfer(
    remote: Remote,
    tmp: Path,
    *,
    connections: int,
    chunk_bytes: int,
    policy: RetryPolicy,
    progress: DownloadProgress,
    name: str,
    log: Callable[[str], None],
    check: Callable[[], None] | None = None,
) -> Transferred:
    """Fill `tmp` with the remote file, resuming a compatible partial. `check`, called before
    each request and each write, stops the transfer by raising (a download claim lost to
    another worker)."""
    state_file = state_path(tmp)
    state = resumable_state(tmp, remote)
    if state is None:
        if tmp.exists():
            log(f"{name}: discarding a partial download that does not match {remote.label}")
        state = PartialState(size=remote.size, identity=remote.identity, source=remote.label)
        tmp.unlink(missing_ok=True)
    elif state.done.total():
        log(f"{name}: resuming, {human_bytes(state.done.total())} already on disk")
    already = state.done.total()
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT, 0o644)
    hasher: PrefixHasher | None = None
    try:
        os.ftruncate(fd, remote.size)
        state.save(state_file)
        progress.track(name, already, remote.size)

        def prefix() -> int:  # read through `state`: a server that ignores Range resets it
            return state.done.prefix()

        # Hashes what a resumed partial already holds, then each range as the prefix grows.
        hasher = PrefixHasher(fd, remote.size, prefix)
        writer = OffsetWriter(fd, state, state_file, progress, name, hasher, check)
        try:
            _transfer_into(
                remote,
                state=state,
                writer=writer,
                connections=connections,
                chunk_bytes=chunk_bytes,
                policy=policy,
                log=log,
            )
        finally:
            writer.persist()
        if state.done.missing(remote.size):
            raise SourceFailed("transfer ended with bytes missing")
        os.fsync(fd)  # while the hasher finishes the last blocks
        sha256 = hasher.finish()
    finally:
        if hasher is not None:
            hasher.stop()
        os.close(fd)
    state_file.unlink(missing_ok=True)
    return Transferred(remote.size - already, sha256)


def _transfer_into(
    remote: Remote,
    *,
    state: PartialState,
    writer: OffsetWriter,
    connections: int,
    chunk_bytes: int,
    policy: RetryPolicy,
    log: Callable[[str], None],
) -> None:
    gaps = state.done.missing(remote.size)
    if not gaps:
        return
    fetch_whole = getattr(remote, "fetch_whole", None)
    if fetch_whole is not None and state.done.total() == 0:
        try:
            fetch_whole(writer)
            return
        except RetryableError as exc:
            log(f"{remote.label}: {exc}; continuing with ranged requests for what is missing")
            gaps = state.done.missing(remote.size)
    work = list(chunks(gaps, chunk_bytes))
    try:
        _run_ranges(
            remote, work=work, writer=writer, connections=connections, policy=policy, log=log
        )
    except NoRangeSupport:
        log(f"{remote.label}: the server ignores Range; downloading in one stream")
        state.done = Extents()
        _fetch_range(remote, start=0, end=remote.size, writer=writer, policy=policy, log=log)


def _run_ranges(
    remote: Remote,
    *,
    work: list[tuple[int, int]],
    writer: OffsetWriter,
    connections: int,
    policy: RetryPolicy,
    log: Callable[[str], None],
) -> None:
    if not work:
        return
    with ThreadPoolExecutor(max_workers=min(connections, len(work))) as pool:
        futures = [
            pool.submit(_fetch_range, remote, start=s, end=e, writer=writer, policy=policy, log=log)
            for s, e in work
        ]
        first_error: BaseException | None = None
        for future in futures:
            try:
                future.result()
            except BaseException as exc:  # keep draining so every thread stops
                if first_error is None:
                    first_error = exc
                    for other in futures:
                        other.cancel()
        if first_error is not None:
            raise first_error
