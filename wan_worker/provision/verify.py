"""Model file verification: size always, sha256 once, then a marker so warm starts never re-hash.

A marker is a small JSON file under `<models root>/.provision/` recording what was verified
(size, sha256) and the file's identity at that moment (inode, size, mtime). A later start that
finds the same identity trusts the marker: one `stat` per file instead of reading 38 GB.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

HASH_BLOCK = 8 * 1024 * 1024


def sha256_file(path: Path) -> str:
    """The file's sha256 (hex). Module-level so tests can count calls."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


class PrefixHasher:
    """The sha256 of a file whose ranges are written out of order, computed during the writes.

    A thread hashes the written prefix `[0, prefix())` as it grows, reading each block back
    from the page cache just behind the writers, so the digest is ready moments after the last
    byte lands, instead of after a second full read of the file. Call `writing(start)` before
    each write and `wrote(start)` once it is recorded in `prefix`'s ranges. `finish()` waits
    for the rest and returns the hex digest, or None when the bytes hashed may no longer be the
    bytes on disk (bytes of the prefix were written again) or the file is incomplete: the
    caller then hashes the file itself.
    """

    def __init__(self, fd: int, size: int, prefix: Callable[[], int]) -> None:
        self._fd = fd
        self._size = size
        self._prefix = prefix
        self._digest = hashlib.sha256()
        self._cond = threading.Condition()
        self._frontier = prefix()  # end of the written prefix, as last seen
        self._reached = 0  # end of the block being hashed (everything below is read)
        self._stale = False
        self._writing = True
        self._stopped = False
        self._failed = False
        self._thread = threading.Thread(target=self._run, name="sha256", daemon=True)
        self._thread.start()

    def writing(self, start: int) -> None:
        """Before bytes from `start` are written: bytes of the prefix, perhaps hashed already,
        written again make the running hash unusable."""
        with self._cond:
            if start < self._frontier:
                self._stale = True
                self._cond.notify()

    def wrote(self, start: int) -> None:
        """After a write from `start` was recorded in the prefix's ranges."""
        with self._cond:
            if start <= self._frontier:
                self._frontier = self._prefix()
                self._cond.notify()

    def finish(self) -> str | None:
        """The hex digest once every byte is hashed; None if it cannot vouch for the file."""
        with self._cond:
            self._frontier = self._prefix()
            self._writing = False
            self._cond.notify()
        self._thread.join()
        with self._cond:
            if self._stale or self._failed or self._reached != self._size:
                return None
        return self._digest.hexdigest()

    def stop(self) -> None:
        """End the thread without a result (the transfer failed); safe to call twice."""
        with self._cond:
            self._stopped = True
            self._cond.notify()
        self._thread.join()

    def _next_block(self) -> tuple[int, int] | None:
        with self._cond:
            while True:
                if self._stopped or self._stale:
                    return None
                if self._frontier > self._reached:
                    start = self._reached
                    self._reached = min(self._frontier, start + HASH_BLOCK)
                    return start, self._reached
                if not self._writing:
                    return None
                self._cond.wait()

    def _run(self) -> None:
        buffer = bytearray(HASH_BLOCK)
        try:
            while (block := self._next_block()) is not None:
                start, end = block
                view = memoryview(buffer)[: end - start]
                while view:
                    count = os.preadv(self._fd, [view], start)
                    if count <= 0:
                        raise OSError(f"unexpected end of file at byte {start}")
                    self._digest.update(view[:count])
                    view, start = view[count:], start + count
        except OSError:
            with self._cond:
                self._failed = True


@dataclass(frozen=True)
class Marker:
    size: int
    sha256: str | None
    sha256_checked: bool
    source: str
    inode: int
    mtime_ns: int

    def matches(self, st: os.stat_result) -> bool:
        return (
            st.st_size == self.size and st.st_ino == self.inode and st.st_mtime_ns == self.mtime_ns
        )


def marker_path(models_root: Path, relpath: str) -> Path:
    return models_root / ".provision" / f"{relpath}.verified.json"


def read_marker(models_root: Path, relpath: str) -> Marker | None:
    path = marker_path(models_root, relpath)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return Marker(**data)
    except (OSError, ValueError, TypeError):
        return None


def write_marker(
    models_root: Path,
    relpath: str,
    file: Path,
    *,
    size: int,
    sha256: str | None,
    sha256_checked: bool,
    source: str,
) -> Marker:
    """Record the file as verified, against its current identity (atomic write)."""
    st = file.stat()
    marker = Marker(
        size=size,
        sha256=sha256,
        sha256_checked=sha256_checked,
        source=source,
        inode=st.st_ino,
        mtime_ns=st.st_mtime_ns,
    )
    path = marker_path(models_root, relpath)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{secrets.token_hex(8)}.tmp")  # one per writer
    tmp.write_text(json.dumps(asdict(marker), indent=1), encoding="utf-8")
    os.replace(tmp, path)
    return marker
