"""The model manifest (workflows/models.json): which files the workflow needs and where to get them.

Each entry names a ComfyUI folder and filename, the size and sha256 where they are known, and
ordered sources. A `null` size or sha256 means the fact could not be established from a
published source; the downloader then takes it from the source at download time (Hugging Face
publishes both for LFS files) and records it in the verified marker.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wan_worker.errors import ConfigError

SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
REVISION_RE = re.compile(r"^[0-9a-f]{40}$")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9._\-]+$")
SOURCE_TYPES = ("r2", "hf", "url")


@dataclass(frozen=True)
class SourceSpec:
    """One place a model file can be fetched from."""

    type: str
    key: str = ""  # r2: object key in R2_BUCKET
    repo: str = ""  # hf: owner/name
    path: str = ""  # hf: path inside the repo
    revision: str | None = None  # hf: pinned 40-hex commit; None means the `main` branch
    url: str = ""  # url: a plain HTTPS download

    def label(self, bucket: str = "$R2_BUCKET") -> str:
        if self.type == "r2":
            return f"r2://{bucket}/{self.key}"
        if self.type == "hf":
            return f"hf://{self.repo}/{self.path}@{self.revision or 'main (unpinned)'}"
        return self.url


@dataclass(frozen=True)
class ModelSpec:
    folder: str
    filename: str
    size: int | None
    sha256: str | None
    sources: tuple[SourceSpec, ...]
    link_into: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default=(), compare=False)

    @property
    def relpath(self) -> str:
        return f"{self.folder}/{self.filename}"


@dataclass(frozen=True)
class Manifest:
    models: tuple[ModelSpec, ...]
    path: Path

    def filenames(self) -> set[str]:
        return {m.filename for m in self.models}


def _fail(path: Path, where: str, problem: str) -> ConfigError:
    return ConfigError(f"{path}: {where}: {problem}")


def _source(path: Path, where: str, raw: Any) -> SourceSpec:
    if not isinstance(raw, dict):
        raise _fail(path, where, "each source must be an object")
    kind = raw.get("type")
    if kind not in SOURCE_TYPES:
        raise _fail(path, where, f"type must be one of {', '.join(SOURCE_TYPES)}, got {kind!r}")
    if kind == "r2":
        key = raw.get("key")
        if not isinstance(key, str) or not key or key.startswith("/"):
            raise _fail(path, where, "an r2 source needs a relative object `key`")
        return SourceSpec(type="r2", key=key)
    if kind == "hf":
        repo, file_path, revision = raw.get("repo"), raw.get("path"), raw.get("revision")
        if not isinstance(repo, str) or repo.count("/") != 1:
            raise _fail(path, where, "an hf source needs `repo` as owner/name")
        if not isinstance(file_path, str) or not file_path or file_path.startswith("/"):
            raise _fail(path, where, "an hf source needs a relative `path`")
        if revision is not None and (
            not isinstance(revision, str) or not REVISION_RE.match(revision)
        ):
            raise _fail(path, where, "`revision` must be a 40-hex commit or null")
        return SourceSpec(type="hf", repo=repo, path=file_path, revision=revision)
    url = raw.get("url")
    if not isinstance(url, str) or not url.startswith(("https://", "http://")):
        raise _fail(path, where, "a url source needs an http(s) `url`")
    return SourceSpec(type="url", url=url)


def _model(path: Path, index: int, raw: Any) -> ModelSpec:
    where = f"models[{index}]"
    if not isinstance(raw, dict):
        raise _fail(path, where, "must be an object")
    folder, filename = raw.get("folder"), raw.get("filename")
    for name, value in (("folder", folder), ("filename", filename)):
        if not isinstance(value, str) or not _SAFE_NAME.match(value) or value in {".", ".."}:
            raise _fail(path, where, f"`{name}` must be a plain file or folder name")
    where = f"{where} ({folder}/{filename})"
    size = raw.get("size")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size <= 0):
        raise _fail(path, where, "`size` must be a positive byte count or null")
    sha = raw.get("sha256")
    if sha is not None and (not isinstance(sha, str) or not SHA256_RE.match(sha)):
        raise _fail(path, where, "`sha256` must be 64 lowercase hex digits or null")
    sources_raw = raw.get("sources")
    if not isinstance(sources_raw, list) or not sources_raw:
        raise _fail(path, where, "`sources` must be a non-empty list")
    sources = tuple(_source(path, f"{where} sources[{i}]", s) for i, s in enumerate(sources_raw))
    links = raw.get("link_into", [])
    if not isinstance(links, list) or not all(isinstance(x, str) and x for x in links):
        raise _fail(path, where, "`link_into` must be a list of folder paths")
    notes = raw.get("notes", [])
    if isinstance(notes, str):
        notes = [notes]
    return ModelSpec(
        folder=str(folder),
        filename=str(filename),
        size=size,
        sha256=sha,
        sources=sources,
        link_into=tuple(links),
        notes=tuple(str(n) for n in notes),
    )


def load_manifest(path: Path) -> Manifest:
    """Read and validate the manifest; every problem names the entry and the field."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            f"MODELS_MANIFEST: {path} does not exist; point MODELS_MANIFEST at models.json"
        ) from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("models"), list):
        raise ConfigError(f"{path}: expected an object with a `models` list")
    models = tuple(_model(path, i, m) for i, m in enumerate(data["models"]))
    seen: set[str] = set()
    for m in models:
        if m.relpath in seen:
            raise ConfigError(f"{path}: {m.relpath} is listed twice")
        seen.add(m.relpath)
    return Manifest(models=models, path=path)
