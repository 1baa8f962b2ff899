"""Model file verification: size always, sha256 once, then a marker so warm starts never re-hash.

A marker is a small JSON file under `<models root>/.provision/` recording what was verified
(size, sha256) and the file's identity at that moment (inode, size, mtime). A later start that
finds the same identity trusts the marker: one `stat` per file instead of reading 38 GB.
"""

from __future__ import annotations

import hashlib
import json
import os
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
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(asdict(marker), indent=1), encoding="utf-8")
    os.replace(tmp, path)
    return marker
