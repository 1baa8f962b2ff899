"""Where the MP4 goes (`--out`), checked before the job is submitted.

A job on RunPod is paid for when it runs, so a `--out` that cannot take its video is refused
before `/run`, not found out once the video is there. `--out` is read as:

- nothing: `wan-<job id>.mp4` in the current folder;
- a path that ends in `/` (or the OS's separator): a folder, created with its parents if it
  does not exist yet; `wan-<job id>.mp4` goes in it;
- an existing folder: the same;
- anything else: the file itself, replaced (whole or not at all) if it exists. Its folder is
  created with its parents if it does not exist yet;
- an existing path that is neither a file nor a folder (a device, a pipe): refused.

The folder must be one this user can create files in: the check creates and removes a file
there named as the save's own temporary file (`outcome.replacing`), so it tests what the save
will do, whatever decides it (permissions, ACLs, a read-only file system).
"""

from __future__ import annotations

import contextlib
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from wan_worker.client.errors import UsageError

SEPARATORS = tuple(sep for sep in (os.sep, os.altsep) if sep)


@dataclass(frozen=True)
class Destination:
    """A folder ready to take the video, and the file name in it (None: `wan-<job id>.mp4`)."""

    folder: Path
    name: str | None = None

    def path(self, job_id: str) -> Path:
        return self.folder / (self.name or f"wan-{job_id}.mp4")


def destination(out: str | None) -> Destination:
    """`--out` read and checked as the module says; a UsageError names the path and why not."""
    if out is None:
        return ready(Destination(Path()), "no --out, so the current folder")
    if not out.strip():
        raise UsageError("--out: is empty")
    path = Path(out).expanduser()
    if out.endswith(SEPARATORS) or path.is_dir() or path.name in ("", ".", ".."):
        return ready(Destination(path), f"--out {out}")
    if path.exists() and not path.is_file():
        raise UsageError(f"--out {out}: exists and is not a file or a folder")
    return ready(Destination(path.parent, path.name), f"--out {out}")


def ready(dest: Destination, what: str) -> Destination:
    """Create dest's folder (with parents) if needed, and check that a file can be made in it.

    `what` starts the message of a refusal: `--out` as typed, or what stands for it.
    """
    folder = dest.folder
    shown = folder.absolute() if folder == Path() else folder
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"{what}: {folder} is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(
            f"{what}: cannot create the folder {shown}: {reason(exc, folder)}"
        ) from exc
    probe = folder / f".{dest.name or 'wan-i2v'}.{secrets.token_hex(6)}.part"
    try:
        probe.open("xb").close()
    except OSError as exc:
        raise UsageError(
            f"{what}: cannot write in the folder {shown}: {reason(exc, folder)}"
        ) from exc
    with contextlib.suppress(OSError):  # made, so the folder takes files; a leftover is harmless
        probe.unlink()
    return dest


def reason(exc: OSError, folder: Path) -> str:
    """The OS's reason, with the part of the path in the way when a file stands there."""
    text = exc.strerror or str(exc)
    if isinstance(exc, NotADirectoryError | FileExistsError):
        blocking = next((p for p in (folder, *folder.parents) if p.is_file()), None)
        if blocking is not None:
            return f"{blocking} is a file, not a folder"
    return text
