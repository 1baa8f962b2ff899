"""The page cache, as tests see it: drop a file from it, and tell how much of the file is in it,
or has been since it was dropped.

Some hosts reclaim idle page cache on their own, with no memory pressure: a VM whose kernel runs
DAMON's proactive reclaim (`pageout` of regions idle for a minute or so) evicts pages of a file
read seconds before, a few at a time. So a test that checks that something *read* a file asks
`cached_since_drop`, which counts the evicted pages too (cachestat(2): the page cache keeps a
"shadow" of each page reclaim evicted; dropping a file with POSIX_FADV_DONTNEED leaves none).
A test that checks that nothing read a file asks `resident_bytes`.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
from pathlib import Path

PAGE = os.sysconf("SC_PAGE_SIZE")
CACHESTAT = 451  # the syscall's number on every architecture (Linux 6.5 and later)


class _Range(ctypes.Structure):
    _fields_ = [("off", ctypes.c_uint64), ("len", ctypes.c_uint64)]


class _Cachestat(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_uint64)
        for name in ("nr_cache", "nr_dirty", "nr_writeback", "nr_evicted", "nr_recently_evicted")
    ]


_libc = ctypes.CDLL(None, use_errno=True)


def cachestat(path: Path) -> tuple[int, int] | None:
    """(pages of `path` in the page cache, pages evicted from it by reclaim), or None where the
    kernel has no cachestat(2)."""
    whole, stat = _Range(0, 0), _Cachestat()
    fd = os.open(path, os.O_RDONLY)
    try:
        if _libc.syscall(CACHESTAT, fd, ctypes.byref(whole), ctypes.byref(stat), 0) != 0:
            return None  # ENOSYS before 6.5; EPERM where a seccomp filter refuses it
    finally:
        os.close(fd)
    return stat.nr_cache, stat.nr_evicted


def resident_bytes(path: Path) -> int:
    """How much of `path` is in the page cache now, in whole pages (util-linux `fincore`)."""
    done = subprocess.run(
        ["fincore", "--bytes", "--noheadings", "--output", "RES", str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(done.stdout.split()[0])


def cached_since_drop(path: Path) -> int:
    """How much of `path` has been read into the page cache since `drop_from_cache`, in whole
    pages: what is there now and what reclaim has evicted since. Where the kernel has no
    cachestat(2), only what is there now."""
    stat = cachestat(path)
    if stat is None:
        return resident_bytes(path)
    cached, evicted = stat
    return (cached + evicted) * PAGE


def drop_from_cache(path: Path) -> None:
    """Write `path` out and drop it from the page cache, as after a reboot."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
