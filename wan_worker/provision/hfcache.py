"""RunPod's cached Hugging Face models, used in place.

An endpoint with "cached models" gets the repository under
`/runpod-volume/huggingface-cache/hub/models--ORG--NAME/snapshots/REV/PATH`, laid out like the
huggingface_hub cache: the snapshot entry is a symlink to `blobs/<etag>`, and for LFS files the
etag is the file's sha256. So a cached file is verified by name, without reading it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from wan_worker.provision.manifest import SHA256_RE, SourceSpec


@dataclass(frozen=True)
class CachedFile:
    path: Path  # the snapshot entry, linked to from the models folder
    size: int
    sha256: str | None  # from the blob's name, when it is an LFS sha256
    revision: str


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


def find_cached(cache_dir: Path, spec: SourceSpec) -> CachedFile | None:
    """The cached copy of an `hf` source, at its pinned revision (any snapshot if unpinned)."""
    if spec.type != "hf":
        return None
    repo_dir = cache_dir / ("models--" + spec.repo.replace("/", "--"))
    if not repo_dir.is_dir():
        return None
    for revision in _snapshot_revisions(repo_dir, spec.revision):
        entry = repo_dir / "snapshots" / revision / spec.path
        try:
            target = entry.resolve(strict=True)
            size = target.stat().st_size
        except (OSError, RuntimeError):
            continue
        sha = target.name if SHA256_RE.match(target.name) else None
        return CachedFile(path=entry, size=size, sha256=sha, revision=revision)
    return None
