"""Real servers on loopback for the provisioning tests.

- `Nginx`: Debian's nginx with a throwaway config, serving files with Range (the CDN role).
- `HubStub`: an aiohttp app answering `/{repo}/resolve/{rev}/{path}` like the Hugging Face Hub:
  metadata headers (X-Repo-Commit, X-Linked-Etag, X-Linked-Size) and a 302 to the file host.
- `FlakyFileServer`: an aiohttp file server with Range that can cut the first response short,
  corrupt it, ignore Range, hold a range back until the others are served, hold every answer
  until a condition holds, or stall mid-body, recording every Range it was asked for.
All start synchronously (the listening socket exists when `start()` returns) and count requests.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from tests.support import POLL_S, free_port


class Nginx:
    def __init__(self, root: Path, workdir: Path) -> None:
        self.root = root
        self.workdir = workdir
        self.port = free_port()
        self.access_log = workdir / "access.log"
        self.conf = workdir / "nginx.conf"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        binary = shutil.which("nginx") or "/usr/sbin/nginx"
        user = "user root;\n" if os.geteuid() == 0 else ""
        w = self.workdir
        self.conf.write_text(
            f"""{user}worker_processes 2;
pid {w}/nginx.pid;
error_log {w}/error.log;
events {{ worker_connections 256; }}
http {{
  access_log off;
  log_format ranges '$request_method $uri $status "$http_range" $body_bytes_sent';
  client_body_temp_path {w}/body; proxy_temp_path {w}/proxy;
  fastcgi_temp_path {w}/fastcgi; uwsgi_temp_path {w}/uwsgi; scgi_temp_path {w}/scgi;
  sendfile on;
  server {{
    listen 127.0.0.1:{self.port};
    root {self.root};
    access_log {self.access_log} ranges;
  }}
}}
""",
            encoding="utf-8",
        )
        # With `daemon on` (the default) nginx binds its sockets before the launcher exits.
        subprocess.run(
            [binary, "-c", str(self.conf), "-p", str(w), "-e", str(w / "error.log")], check=True
        )

    def stop(self) -> None:
        binary = shutil.which("nginx") or "/usr/sbin/nginx"
        subprocess.run(
            [binary, "-c", str(self.conf), "-p", str(self.workdir), "-s", "stop"], check=False
        )

    def requests(self) -> list[tuple[str, str, int, str]]:
        """(method, uri, status, range) for every request served so far."""
        if not self.access_log.exists():
            return []
        rows = []
        for line in self.access_log.read_text(encoding="utf-8").splitlines():
            method, uri, status, rest = line.split(" ", 3)
            rng = rest.split('"')[1]
            rows.append((method, uri, int(status), rng))
        return rows


class _AioServer:
    """Runs an aiohttp app on its own loop in a thread; `start` returns once it listens."""

    def __init__(self) -> None:
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None

    def app(self) -> web.Application:  # pragma: no cover - overridden
        raise NotImplementedError

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._thread.start()

        async def up() -> int:
            self._runner = web.AppRunner(self.app())
            await self._runner.setup()
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            await site.start()
            return self._runner.addresses[0][1]

        self.port = asyncio.run_coroutine_threadsafe(up(), self._loop).result()

    def stop(self) -> None:
        async def down() -> None:
            if self._runner is not None:
                await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(down(), self._loop).result()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()


@dataclass
class HubFile:
    local: Path  # path under the file host's root
    sha256: str
    size: int
    commit: str = "c" * 40


class HubStub(_AioServer):
    """The Hub's resolve endpoint: metadata plus a redirect to the file host (nginx)."""

    def __init__(self, file_host: str) -> None:
        super().__init__()
        self.file_host = file_host
        self.files: dict[tuple[str, str, str], HubFile] = {}
        self.requests: list[tuple[str, str]] = []
        self.auth_headers: list[str | None] = []

    def add(
        self, repo: str, path: str, content_path: Path, root: Path, revision: str = "main"
    ) -> HubFile:
        data = content_path.read_bytes()
        entry = HubFile(
            local=content_path.relative_to(root),
            sha256=hashlib.sha256(data).hexdigest(),
            size=len(data),
        )
        self.files[(repo, revision, path)] = entry
        return entry

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{org}/{name}/resolve/{rev}/{path:.*}", self._resolve)
        return app

    async def _resolve(self, request: web.Request) -> web.Response:
        self.requests.append((request.method, request.path))
        self.auth_headers.append(request.headers.get("Authorization"))
        info = request.match_info
        key = (f"{info['org']}/{info['name']}", info["rev"], info["path"])
        entry = self.files.get(key)
        if entry is None:
            return web.Response(status=404, headers={"X-Error-Code": "EntryNotFound"})
        headers = {
            "Location": f"{self.file_host}/{entry.local.as_posix()}",
            "X-Repo-Commit": entry.commit,
            "X-Linked-Etag": f'"{entry.sha256}"',
            "X-Linked-Size": str(entry.size),
            "ETag": f'"{entry.sha256}"',
        }
        return web.Response(status=302, headers=headers)


@dataclass
class Fault:
    truncate_after: int | None = None  # first GET: send this many bytes, then drop the link
    corrupt: bool = False  # every GET: flip the bytes' first byte
    corrupt_gets: int = 0  # the first this many GETs: flip the bytes' first byte
    status: int | None = None  # every request: answer with this status
    # every GET: held until this says so (it reads state another process writes), or stop()
    hold_until: Callable[[], bool] | None = None
    ignore_range: bool = False  # every GET: the whole file with 200, whatever Range says
    hold_first_range: int = 0  # the GET for bytes=0-...: held until this many others are served
    stall_after: int | None = None  # first GET: send this many bytes, then hang until stop()
    rate: int | None = None  # every GET: send at most this many bytes a second


async def write_throttled(response: web.StreamResponse, body: bytes, rate: int | None) -> None:
    """Send `body` in 64 KiB pieces, at most `rate` bytes a second (all at once if None)."""
    if rate is None:
        await response.write(body)
        return
    piece = 64 * 1024
    for start in range(0, len(body), piece):
        await response.write(body[start : start + piece])
        await asyncio.sleep(min(piece, len(body) - start) / rate)


def client_port(request: web.Request) -> int:
    """The port a request came from: which of a client's connections sent it."""
    assert request.transport is not None
    return int(request.transport.get_extra_info("peername")[1])


class FlakyFileServer(_AioServer):
    def __init__(self, root: Path, fault: Fault | None = None) -> None:
        super().__init__()
        self.root = root
        self.fault = fault or Fault()
        self.ranges: list[str | None] = []
        self.methods: list[str] = []
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, Range)
        self.ports: list[int] = []  # each request's client port, in the same order
        self._truncated = False
        self._stalled = False
        self._served = 0  # complete GET bodies sent
        self._progress: asyncio.Condition | None = None
        self._release: asyncio.Event | None = None

    def stop(self) -> None:
        release = self._release
        if release is not None:
            self._loop.call_soon_threadsafe(release.set)
        super().stop()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{path:.*}", self._serve)
        return app

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        self.methods.append(request.method)
        self.ports.append(client_port(request))
        self.requests.append((request.method, request.path, request.headers.get("Range")))
        if self.fault.status is not None:
            return web.Response(status=self.fault.status)
        data = (self.root / request.match_info["path"]).read_bytes()
        size = len(data)
        if request.method == "HEAD":
            return web.Response(headers={"Content-Length": str(size), "ETag": '"v1"'})
        rng = request.headers.get("Range")
        self.ranges.append(rng)
        if self._progress is None:
            self._progress = asyncio.Condition()
            self._release = asyncio.Event()
        if self.fault.hold_until is not None:
            await self._held(self.fault.hold_until)
        start, end = 0, size - 1
        status = 200
        if self.fault.hold_first_range and rng and rng.startswith("bytes=0-"):
            async with self._progress:
                await self._progress.wait_for(lambda: self._served >= self.fault.hold_first_range)
        if rng and not self.fault.ignore_range:
            first, last = rng.removeprefix("bytes=").split("-")
            start, end = int(first), int(last) if last else size - 1
            status = 206
        body = data[start : end + 1]
        gets = len(self.ranges)
        if (self.fault.corrupt or gets <= self.fault.corrupt_gets) and body:
            body = bytes([body[0] ^ 0xFF]) + body[1:]
        response = web.StreamResponse(status=status)
        response.content_length = len(body)
        if status == 206:
            response.headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        await response.prepare(request)
        if self.fault.truncate_after is not None and not self._truncated:
            self._truncated = True
            await response.write(body[: self.fault.truncate_after])
            assert request.transport is not None
            request.transport.abort()  # the connection drops mid-body
            return response
        if self.fault.stall_after is not None and not self._stalled:
            self._stalled = True
            await response.write(body[: self.fault.stall_after])
            assert self._release is not None
            await self._release.wait()  # the client sees a live connection that sends nothing
            return response
        await write_throttled(response, body, self.fault.rate)
        await response.write_eof()
        async with self._progress:
            self._served += 1
            self._progress.notify_all()
        return response

    async def _held(self, until: Callable[[], bool]) -> None:
        assert self._release is not None
        while not until() and not self._release.is_set():
            await asyncio.sleep(POLL_S)


class S3Proxy(_AioServer):
    """A reverse proxy in front of an S3 API server (moto) that throttles every response body
    and records each request, as (method, path, Range), and the client port it came from."""

    def __init__(self, upstream: str, rate: int | None = None) -> None:
        super().__init__()
        self.upstream = upstream.rstrip("/")
        self.rate = rate
        self.requests: list[tuple[str, str, str | None]] = []
        self.ports: list[int] = []  # each request's client port, in the same order

    def app(self) -> web.Application:
        app = web.Application(client_max_size=1 << 30)
        app.router.add_route("*", "/{path:.*}", self._forward)
        return app

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        import aiohttp

        self.ports.append(client_port(request))
        self.requests.append((request.method, request.path, request.headers.get("Range")))
        headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
        body = await request.read()
        async with (
            aiohttp.ClientSession(auto_decompress=False) as session,
            session.request(
                request.method,
                self.upstream + request.path_qs,
                headers=headers,
                data=body,
                allow_redirects=False,
            ) as upstream,
        ):
            data = await upstream.read()
            response = web.StreamResponse(status=upstream.status)
            for key, value in upstream.headers.items():
                if key.lower() not in {"content-length", "transfer-encoding", "connection"}:
                    response.headers[key] = value
            length = upstream.headers.get("Content-Length", "0")
            response.content_length = int(length) if request.method == "HEAD" else len(data)
            await response.prepare(request)
            if request.method != "HEAD":
                await write_throttled(response, data, self.rate)
            await response.write_eof()
            return response


def partial_of(dest: Path) -> Path:
    """The one partial download of `dest` (named by its owner's token) that a run left."""
    [partial] = dest.parent.glob(f".{dest.name}.*.partial")
    return partial


def url_model(folder: str, filename: str, data: bytes, url: str, *, pin_sha: bool = True) -> dict:
    """A manifest entry for `data` downloaded from `url`: its size pinned, its sha256 too
    unless `pin_sha` is false."""
    return {
        "folder": folder,
        "filename": filename,
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest() if pin_sha else None,
        "sources": [{"type": "url", "url": url}],
    }


def write_manifest(path: Path, models: list[dict]) -> Path:
    path.write_text(json.dumps({"models": models}), encoding="utf-8")
    return path


def make_blob(path: Path, size: int, seed: int = 1) -> bytes:
    """Deterministic bytes of the given size, different per seed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    block = bytes((i * 31 + seed * 7) % 251 for i in range(65_521))
    data = (block * (size // len(block) + 1))[:size]
    path.write_bytes(data)
    return data


@contextmanager
def nginx_server(tmp_path: Path, root: Path) -> Iterator[Nginx]:
    """nginx serving `root`; the temp dirs are opened up so its workers can read them."""
    work = tmp_path / "nginx"
    work.mkdir()
    for p in (tmp_path, root):
        p.chmod(0o755)
    server = Nginx(root, work)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def running(server: _AioServer) -> Iterator[_AioServer]:
    server.start()
    try:
        yield server
    finally:
        server.stop()
