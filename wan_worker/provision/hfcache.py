"""RunPod's cached Hugging Face models, used in place.

An endpoint with "cached models" gets the repository under
`/runpod-volume/huggingface-cache/hub/models--ORG--NAME/snapshots/REV/PATH`, laid out like the
huggingface_hub cache: the snapshot entry is a symlink to `blobs/<etag>`, and for LFS files the
etag is the file's sha256. So a cached file is verified by name, without reading it.

The name that counts is the snapshot entry's own target (`blobs/<etag>`), not where a chain of
links ends: recent huggingface_hub versions turn `blobs/<etag>` of a Xet-stored file into a link
to a cache-wide store named by the Xet hash, which is 64 hex digits too but not the sha256.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from wan_worker.provision.manifest import SHA256_RE, SourceSpec


@dataclass(frozen=True)
class CachedFile:
    path: Path  # the snapshot entry, linked to from the models folder
    size: int
    sha256: str | None  # from the blob's name, when it is an LFS sha256
    revision: str


def repo_dir(cache_dir: Path, repo: str) -> Path:
    return cache_dir / ("models--" + repo.replace("/", "--"))


def _snapshot_revisions(repo_dir: Path, wanted: str | None) -> list[str]:
    if wanted:
        return [wanted]
    revisions: list[str] = []
    main_ref = repo_dir / "refs" / "main"
    if main_ref.is_file():
        revisions.append(main_ref.read_text(encoding="utf-8").strip())
    snapshots = repo_dir / "snapshots"
    if snapshots.is_dir():
        revisions += sorted(p.name for p in snapshots.iterdir() if p.name not in revisions)
    return revisions


def _blob_sha256(entry: Path) -> str | None:
    """The sha256 an entry's blob is named by: the first link's target, `blobs/<etag>`."""
    try:
        target = os.readlink(entry)
    except OSError:
        return None  # a plain file: its name says nothing about its content
    name = Path(target).name
    return name if SHA256_RE.match(name) else None


def find_cached(cache_dir: Path, spec: SourceSpec) -> CachedFile | None:
    """The cached copy of an `hf` source, at its pinned revision (any snapshot if unpinned)."""
    if spec.type != "hf":
        return None
    folder = repo_dir(cache_dir, spec.repo)
    if not folder.is_dir():
        return None
    for revision in _snapshot_revisions(folder, spec.revision):
        entry = folder / "snapshots" / revision / spec.path
        try:
            size = entry.stat().st_size  # follows the links to the bytes
        except (OSError, RuntimeError):
            continue
        return CachedFile(path=entry, size=size, sha256=_blob_sha256(entry), revision=revision)
    return None


def why_not_cached(cache_dir: Path, spec: SourceSpec) -> str:
    """Why `find_cached` found nothing for this source, for the log."""
    folder = repo_dir(cache_dir, spec.repo)
    if not folder.is_dir():
        return f"{spec.repo} is not in RunPod's model cache ({folder} does not exist)"
    revisions = _snapshot_revisions(folder, spec.revision)
    if spec.revision and not (folder / "snapshots" / spec.revision).is_dir():
        return f"revision {spec.revision} of {spec.repo} is not in RunPod's model cache"
    if not revisions:
        return f"{spec.repo} has no snapshot in RunPod's model cache"
    where = ", ".join(revisions)
    return f"{spec.path} is missing or unreadable in the cached {spec.repo} (snapshots: {where})"
