"""A Hugging Face Hub on loopback: the routes huggingface_hub uses to create a repository,
commit files through the LFS protocol, and list and download them.

Write side (what `HfApi.create_repo` / `create_branch` / `create_commit` call):
- `POST /api/repos/create`, `POST /api/models/{repo}/branch/{branch}`;
- `POST /api/models/{repo}/preupload/{rev}`: each file's upload mode (`lfs` for binary, large
  or `.safetensors`/`.pth` files, `regular` otherwise) and the oid it has at that revision;
- `POST /{repo}.git/info/lfs/objects/batch`: upload actions for objects the repository's LFS
  store lacks (a basic PUT, or above `multipart_threshold` one PUT per part plus a completion
  URL), a verify action, and no actions for objects it holds;
- on the storage host (another origin, like the Hub's S3 and CDN): `PUT /{repo}/{oid}` and
  `PUT /{repo}/{oid}/part/{n}`; on the Hub `POST /api/complete_multipart/{repo}/{oid}` and
  `POST /{repo}.git/info/lfs/objects/verify`. Every object's size and sha256 are checked;
- `POST /api/models/{repo}/commit/{rev}`: the ndjson commit (`header`, `file`, `lfsFile`,
  `deletedFile`, `deletedFolder`); an `lfsFile` must name an object the store holds;
- `POST /api/validate-yaml` (huggingface_hub sends a README there first).
Read side (what `snapshot_download`, `hf_hub_download` and the provisioner call):
- `GET /api/models/{repo}[/revision/{rev}]`, `GET /api/models/{repo}/tree/{rev}[/{path}]`;
- `HEAD|GET /{repo}/resolve/{rev}/{path}`: an LFS file answers 302 to the storage host with
  `X-Linked-Etag`/`X-Linked-Size`/`X-Repo-Commit`, as the Hub does; a regular file is served;
- `GET /{repo}/{sha256}` on the storage host: the bytes, with Range.
Writes, and reads of a private repository, need `Authorization: Bearer <token>`; errors carry
the Hub's `X-Error-Code`. Every request is recorded as (host, method, path, authorised), host
being "hub" or "storage".
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote

from aiohttp import web

from tests.provision_servers import _AioServer

LFS_SUFFIXES = (".safetensors", ".pth", ".bin", ".pt", ".ckpt", ".gguf")
POINTER_SIZE = 134


def git_blob_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


@dataclass(frozen=True)
class Entry:
    """A file at a commit: an LFS pointer (sha256) or a regular git blob (content)."""

    size: int
    git_oid: str
    sha256: str | None = None
    content: bytes | None = None


@dataclass
class Repo:
    private: bool
    branches: dict[str, str] = field(default_factory=dict)
    commits: dict[str, dict[str, Entry]] = field(default_factory=dict)
    messages: dict[str, str] = field(default_factory=dict)


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response(
        {"error": message},
        status=status,
        headers={"X-Error-Code": code, "X-Error-Message": message},
    )


class _Storage(_AioServer):
    """The storage host: LFS uploads land here and downloads are served from here."""

    def __init__(self, hub: FakeHub) -> None:
        super().__init__()
        self.hub = hub

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._record], client_max_size=1 << 34)
        app.router.add_put("/{org}/{name}/{oid}", self.hub._put_object)
        app.router.add_put("/{org}/{name}/{oid}/part/{n}", self.hub._put_part)
        app.router.add_route("*", "/{org}/{name}/{oid}", self.hub._cdn)
        return app

    @web.middleware
    async def _record(self, request: web.Request, handler):  # type: ignore[no-untyped-def]
        self.hub.requests.append(
            ("storage", request.method, request.path, self.hub._authorised(request))
        )
        return await handler(request)


class FakeHub(_AioServer):
    def __init__(self, store: Path, token: str, multipart_threshold: int = 1 << 40) -> None:
        super().__init__()
        self.token = token
        self.store = store
        self.parts_dir = store / "parts"
        self.parts_dir.mkdir(parents=True)
        self.multipart_threshold = multipart_threshold
        self.part_size = max(1, multipart_threshold // 2)
        self.repos: dict[str, Repo] = {}
        self.requests: list[tuple[str, str, str, bool]] = []
        self.commit_bodies: list[list[dict]] = []
        self._ids = itertools.count(1)
        self.storage = _Storage(self)

    def start(self) -> None:
        self.storage.start()
        super().start()

    def stop(self) -> None:
        super().stop()
        self.storage.stop()

    def lfs_path(self, repo: str, sha256: str) -> Path:
        return self.store / "lfs" / repo.replace("/", "--") / sha256

    # ------------------------------------------------------------------ direct, for tests
    def add_repo(self, repo: str, files: dict[str, bytes], *, private: bool = False) -> str:
        """A repository with these files in one commit on main; returns the commit."""
        self.repos[repo] = Repo(private=private)
        entries = {path: self._store_bytes(repo, path, data) for path, data in files.items()}
        return self._commit(repo, "main", entries, "initial")

    def files(self, repo: str, revision: str = "main") -> dict[str, Entry]:
        info = self.repos[repo]
        return dict(info.commits[info.branches.get(revision, revision)])

    def seen(self, host: str, method: str, prefix: str = "") -> list[str]:
        """Paths of the requests `host` ("hub" or "storage") got with `method`."""
        return [
            p for h, m, p, _ in self.requests if h == host and m == method and p.startswith(prefix)
        ]

    def _store_bytes(self, repo: str, path: str, data: bytes) -> Entry:
        if self._is_lfs(path, len(data), data[:512]):
            sha = hashlib.sha256(data).hexdigest()
            target = self.lfs_path(repo, sha)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            return self._lfs_entry(sha, len(data))
        return Entry(size=len(data), git_oid=git_blob_oid(data), content=data)

    @staticmethod
    def _lfs_entry(sha256: str, size: int) -> Entry:
        pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n"
        return Entry(size=size, git_oid=git_blob_oid(pointer.encode()), sha256=sha256)

    @staticmethod
    def _is_lfs(path: str, size: int, sample: bytes) -> bool:
        if path.endswith(LFS_SUFFIXES) or size > 10 * 1024 * 1024:
            return True
        try:
            sample.decode("utf-8")
        except UnicodeDecodeError:
            return True
        return b"\0" in sample

    def _commit(self, repo: str, branch: str, entries: dict[str, Entry], message: str) -> str:
        oid = hashlib.sha1(f"{repo}:{next(self._ids)}".encode(), usedforsecurity=False).hexdigest()
        info = self.repos[repo]
        info.commits[oid] = entries
        info.messages[oid] = message
        info.branches[branch] = oid
        return oid

    # ------------------------------------------------------------------ server
    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._record], client_max_size=1 << 34)
        r = app.router
        r.add_post("/api/repos/create", self._create_repo)
        r.add_post("/api/validate-yaml", self._validate_yaml)
        r.add_post("/api/models/{org}/{name}/branch/{branch}", self._create_branch)
        r.add_post("/api/models/{org}/{name}/preupload/{rev}", self._preupload)
        r.add_post("/api/models/{org}/{name}/commit/{rev}", self._commit_route)
        r.add_get("/api/models/{org}/{name}/tree/{rev}", self._tree)
        r.add_get("/api/models/{org}/{name}/tree/{rev}/{path:.*}", self._tree)
        r.add_get("/api/models/{org}/{name}/revision/{rev}", self._info)
        r.add_get("/api/models/{org}/{name}", self._info)
        r.add_post("/api/complete_multipart/{org}/{name}/{oid}", self._complete)
        r.add_post("/{org}/{namegit}/info/lfs/objects/batch", self._batch)
        r.add_post("/{org}/{namegit}/info/lfs/objects/verify", self._verify)
        r.add_route("*", "/{org}/{name}/resolve/{rev}/{path:.*}", self._resolve)
        return app

    @web.middleware
    async def _record(self, request: web.Request, handler):  # type: ignore[no-untyped-def]
        self.requests.append(("hub", request.method, request.path, self._authorised(request)))
        return await handler(request)

    def _authorised(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {self.token}"

    def _repo(self, request: web.Request, *, write: bool) -> tuple[str, Repo] | web.Response:
        info = request.match_info
        repo_id = f"{info['org']}/{info.get('name') or info['namegit'].removesuffix('.git')}"
        repo = self.repos.get(repo_id)
        if write and not self._authorised(request):
            return _error(401, "Unauthorized", "Invalid credentials in Authorization header")
        if repo is None or (repo.private and not self._authorised(request)):
            return _error(404 if self._authorised(request) else 401, "RepoNotFound", "no repo")
        return repo_id, repo

    def _revision(self, repo: Repo, raw: str) -> str | None:
        rev = unquote(raw)
        if rev in repo.branches:
            return repo.branches[rev]
        return rev if rev in repo.commits else None

    async def _create_repo(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return _error(401, "Unauthorized", "Invalid credentials in Authorization header")
        body = await request.json()
        repo_id = f"{body['organization']}/{body['name']}"
        url = f"{self.url}/{repo_id}"
        if repo_id in self.repos:
            return web.json_response(
                {"error": "You already created this model repo", "url": url}, status=409
            )
        self.repos[repo_id] = Repo(
            private=body.get("visibility") == "private" or bool(body.get("private"))
        )
        attributes = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.pth filter=lfs diff=lfs merge=lfs -text\n"
        self._commit(
            repo_id,
            "main",
            {".gitattributes": self._store_bytes(repo_id, ".gitattributes", attributes)},
            "initial commit",
        )
        return web.json_response({"url": url, "name": repo_id, "id": repo_id})

    async def _validate_yaml(self, request: web.Request) -> web.Response:
        await request.json()
        return web.json_response({"errors": [], "warnings": []})

    async def _create_branch(self, request: web.Request) -> web.Response:
        found = self._repo(request, write=True)
        if isinstance(found, web.Response):
            return found
        _, repo = found
        branch = unquote(request.match_info["branch"])
        if branch in repo.branches:
            return _error(409, "BranchExists", "Reference already exists")
        repo.branches[branch] = repo.branches["main"]
        return web.json_response({})

    async def _preupload(self, request: web.Request) -> web.Response:
        found = self._repo(request, write=True)
        if isinstance(found, web.Response):
            return found
        _, repo = found
        head = self._revision(repo, request.match_info["rev"])
        current = repo.commits.get(head or "", {})
        body = await request.json()
        files = []
        for item in body["files"]:
            sample = base64.b64decode(item["sample"])
            lfs = self._is_lfs(item["path"], item["size"], sample)
            entry = current.get(item["path"])
            oid = None
            if entry is not None:
                oid = entry.sha256 if lfs else entry.git_oid
            files.append(
                {
                    "path": item["path"],
                    "uploadMode": "lfs" if lfs else "regular",
                    "shouldIgnore": False,
                    "oid": oid,
                }
            )
        return web.json_response({"files": files, "commitOid": head})

    async def _batch(self, request: web.Request) -> web.Response:
        found = self._repo(request, write=True)
        if isinstance(found, web.Response):
            return found
        repo_id, _ = found
        body = await request.json()
        assert body["operation"] == "upload" and body["hash_algo"] == "sha256"
        objects = []
        chosen = "basic"
        for obj in body["objects"]:
            oid, size = obj["oid"], obj["size"]
            if self.lfs_path(repo_id, oid).is_file():
                objects.append({"oid": oid, "size": size})
                continue
            verify = {"href": f"{self.url}/{repo_id}.git/info/lfs/objects/verify"}
            stored = f"{self.storage.url}/{repo_id}/{oid}"
            if size > self.multipart_threshold and "multipart" in body["transfers"]:
                chosen = "multipart"
                count = -(-size // self.part_size)
                header = {"chunk_size": str(self.part_size)}
                header.update({str(n): f"{stored}/part/{n}" for n in range(1, count + 1)})
                upload = {
                    "href": f"{self.url}/api/complete_multipart/{repo_id}/{oid}",
                    "header": header,
                }
            else:
                upload = {"href": stored}
            objects.append(
                {"oid": oid, "size": size, "actions": {"upload": upload, "verify": verify}}
            )
        return web.json_response(
            {"transfer": chosen, "objects": objects},
            content_type="application/vnd.git-lfs+json",
        )

    @staticmethod
    def _repo_id(request: web.Request) -> str:
        return f"{request.match_info['org']}/{request.match_info['name']}"

    async def _accept(self, repo: str, oid: str, data: bytes) -> web.Response:
        if hashlib.sha256(data).hexdigest() != oid:
            return _error(400, "BadContent", f"content does not hash to {oid}")
        target = self.lfs_path(repo, oid)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        return web.Response()

    async def _put_object(self, request: web.Request) -> web.Response:
        return await self._accept(
            self._repo_id(request), request.match_info["oid"], await request.read()
        )

    async def _put_part(self, request: web.Request) -> web.Response:
        data = await request.read()
        folder = (
            self.parts_dir / self._repo_id(request).replace("/", "--") / request.match_info["oid"]
        )
        folder.mkdir(parents=True, exist_ok=True)
        (folder / request.match_info["n"]).write_bytes(data)
        etag = hashlib.md5(data, usedforsecurity=False).hexdigest()
        return web.Response(headers={"ETag": f'"{etag}"'})

    async def _complete(self, request: web.Request) -> web.Response:
        oid = request.match_info["oid"]
        body = await request.json()
        folder = self.parts_dir / self._repo_id(request).replace("/", "--") / oid
        chunks = []
        for expected, part in enumerate(body["parts"], 1):
            data = (folder / str(part["partNumber"])).read_bytes()
            etag = hashlib.md5(data, usedforsecurity=False).hexdigest()
            if part["partNumber"] != expected or part["etag"].strip('"') != etag:
                return _error(400, "BadPart", f"part {expected} does not match")
            chunks.append(data)
        return await self._accept(self._repo_id(request), oid, b"".join(chunks))

    async def _verify(self, request: web.Request) -> web.Response:
        found = self._repo(request, write=True)
        if isinstance(found, web.Response):
            return found
        body = await request.json()
        path = self.lfs_path(found[0], body["oid"])
        if not path.is_file() or path.stat().st_size != body["size"]:
            return _error(404, "EntryNotFound", "object not stored")
        return web.json_response({})

    async def _commit_route(self, request: web.Request) -> web.Response:
        found = self._repo(request, write=True)
        if isinstance(found, web.Response):
            return found
        repo_id, repo = found
        branch = unquote(request.match_info["rev"])
        if branch not in repo.branches:
            return _error(404, "RevisionNotFound", f"no branch {branch}")
        lines = [json.loads(line) for line in (await request.read()).splitlines() if line]
        self.commit_bodies.append(lines)
        entries = dict(repo.commits[repo.branches[branch]])
        summary = ""
        for line in lines:
            key, value = line["key"], line["value"]
            if key == "header":
                summary = value["summary"]
            elif key == "file":
                data = base64.b64decode(value["content"])
                entries[value["path"]] = Entry(
                    size=len(data), git_oid=git_blob_oid(data), content=data
                )
            elif key == "lfsFile":
                stored = self.lfs_path(repo_id, value["oid"])
                if not stored.is_file() or stored.stat().st_size != value["size"]:
                    return _error(
                        422, "BadRequest", f"LFS pointer {value['path']} names a missing object"
                    )
                entries[value["path"]] = self._lfs_entry(value["oid"], value["size"])
            elif key == "deletedFile":
                if entries.pop(value["path"], None) is None:
                    return _error(404, "EntryNotFound", "A file with this name doesn't exist")
            elif key == "deletedFolder":
                prefix = value["path"].rstrip("/") + "/"
                entries = {p: e for p, e in entries.items() if not p.startswith(prefix)}
            else:
                return _error(400, "BadRequest", f"unknown key {key}")
        oid = self._commit(repo_id, branch, entries, summary)
        return web.json_response(
            {
                "success": True,
                "commitOid": oid,
                "commitUrl": f"{self.url}/{repo_id}/commit/{oid}",
                "hookOutput": "",
            }
        )

    def _read(self, request: web.Request) -> tuple[str, Repo, str] | web.Response:
        """The repository and commit a read route names, or the Hub's error."""
        found = self._repo(request, write=False)
        if isinstance(found, web.Response):
            return found
        repo_id, repo = found
        commit = self._revision(repo, request.match_info.get("rev", "main"))
        if commit is None:
            return _error(404, "RevisionNotFound", "no such revision")
        return repo_id, repo, commit

    async def _info(self, request: web.Request) -> web.Response:
        found = self._read(request)
        if isinstance(found, web.Response):
            return found
        repo_id, repo, commit = found
        siblings = [{"rfilename": path} for path in sorted(repo.commits[commit])]
        return web.json_response(
            {
                "id": repo_id,
                "modelId": repo_id,
                "sha": commit,
                "private": repo.private,
                "siblings": siblings,
            }
        )

    async def _tree(self, request: web.Request) -> web.Response:
        found = self._read(request)
        if isinstance(found, web.Response):
            return found
        _, repo, commit = found
        base = request.match_info.get("path", "").strip("/")
        prefix = f"{base}/" if base else ""
        recursive = request.query.get("recursive", "False").lower() == "true"
        listing: dict[str, dict] = {}
        for path, entry in sorted(repo.commits[commit].items()):
            if not path.startswith(prefix):
                continue
            parts = path[len(prefix) :].split("/")
            for depth in range(1, len(parts)):
                folder = prefix + "/".join(parts[:depth])
                if recursive or depth == 1:
                    listing.setdefault(
                        folder, {"type": "directory", "oid": "0" * 40, "size": 0, "path": folder}
                    )
            if recursive or len(parts) == 1:
                item: dict = {
                    "type": "file",
                    "oid": entry.git_oid,
                    "size": entry.size,
                    "path": path,
                }
                if entry.sha256 is not None:
                    item["lfs"] = {
                        "oid": entry.sha256,
                        "size": entry.size,
                        "pointerSize": POINTER_SIZE,
                    }
                listing[path] = item
        return web.json_response(list(listing.values()))

    async def _resolve(self, request: web.Request) -> web.StreamResponse:
        found = self._read(request)
        if isinstance(found, web.Response):
            return found
        repo_id, repo, commit = found
        entry = repo.commits[commit].get(unquote(request.match_info["path"]))
        if entry is None:
            return _error(404, "EntryNotFound", "no such file")
        headers = {"X-Repo-Commit": commit}
        if entry.sha256 is not None:
            headers.update(
                {
                    "Location": f"{self.storage.url}/{repo_id}/{entry.sha256}",
                    "ETag": f'"{entry.sha256}"',
                    "X-Linked-Etag": f'"{entry.sha256}"',
                    "X-Linked-Size": str(entry.size),
                }
            )
            return web.Response(status=302, headers=headers)
        headers["ETag"] = f'"{entry.git_oid}"'
        assert entry.content is not None
        response = web.Response(body=entry.content, headers=headers)
        return response

    async def _cdn(self, request: web.Request) -> web.StreamResponse:
        path = self.lfs_path(self._repo_id(request), request.match_info["oid"])
        if not path.is_file():
            return web.Response(status=404)
        return web.FileResponse(path)
