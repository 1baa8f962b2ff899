"""A stand-in for RunPod's serverless API: /v2/{endpoint}/run, /status/{job}, /cancel/{job}.

Each job submitted with /run replays a script: one answer per GET /status, the last repeated,
as RunPod shows them (`IN_QUEUE`, `IN_PROGRESS` with the worker's latest progress update in
`output`, then a final state). /cancel makes every later answer `CANCELLED`. Every request needs
`Authorization: Bearer <key>` (401 otherwise) and a known endpoint id (404 otherwise), and is
recorded. The same server serves files under /files/ as a bucket would serve presigned URLs:
they refuse a request that carries an Authorization header, as S3 does.

A script item `{"http": 503}` answers that status code instead, once.
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Job:
    id: str
    input: dict[str, Any]
    script: list[dict[str, Any]]
    polls: int = 0
    cancelled: bool = False


@dataclass
class Seen:
    method: str
    path: str
    authorization: str | None


@dataclass
class RunPodDouble:
    endpoint_id: str = "wan-ep-1"
    api_key: str = "rpa_TEST_SECRET_KEY_0123456789"
    scripts: list[list[dict[str, Any]]] = field(default_factory=list)
    files: dict[str, bytes] = field(default_factory=dict)
    jobs: dict[str, Job] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    polled: threading.Event = field(default_factory=threading.Event)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def add_script(self, *answers: dict[str, Any]) -> None:
        """The answers the next job's /status polls get, in order."""
        self.scripts.append(list(answers))

    def cancels(self) -> list[str]:
        return [s.path.rsplit("/", 1)[1] for s in self.seen if "/cancel/" in s.path]

    def _check(self, request: web.Request) -> web.Response | None:
        self.seen.append(Seen(request.method, request.path, request.headers.get("Authorization")))
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return web.Response(status=401, text="401 Unauthorized")
        if request.match_info["endpoint"] != self.endpoint_id:
            return web.json_response({"error": "endpoint not found"}, status=404)
        return None

    async def run(self, request: web.Request) -> web.Response:
        if (refused := self._check(request)) is not None:
            return refused
        body = await request.json()
        job = Job(f"job-{next(self._ids)}-u1", body["input"], self.scripts.pop(0))
        self.jobs[job.id] = job
        return web.json_response({"id": job.id, "status": "IN_QUEUE"})

    async def status(self, request: web.Request) -> web.Response:
        if (refused := self._check(request)) is not None:
            return refused
        job = self.jobs.get(request.match_info["job"])
        if job is None:
            return web.json_response({"error": "request does not exist"}, status=404)
        self.polled.set()
        if job.cancelled:
            return web.json_response({"id": job.id, "status": "CANCELLED"})
        answer = job.script[min(job.polls, len(job.script) - 1)]
        job.polls += 1
        if "http" in answer:
            return web.Response(status=answer["http"], text="upstream unavailable")
        return web.json_response({"id": job.id, **answer})

    async def cancel(self, request: web.Request) -> web.Response:
        if (refused := self._check(request)) is not None:
            return refused
        job = self.jobs.get(request.match_info["job"])
        if job is None:
            return web.json_response({"error": "request does not exist"}, status=404)
        job.cancelled = True
        return web.json_response({"id": job.id, "status": "CANCELLED"})

    async def file(self, request: web.Request) -> web.Response:
        self.seen.append(Seen(request.method, request.path, request.headers.get("Authorization")))
        if "Authorization" in request.headers:
            return web.Response(status=400, text="Only one auth mechanism allowed")
        data = self.files.get(request.match_info["name"])
        if data is None:
            return web.Response(status=404, text="NoSuchKey")
        return web.Response(body=data, content_type="video/mp4")

    def app(self) -> web.Application:
        app = web.Application(client_max_size=32 * 1024 * 1024)
        app.router.add_post("/v2/{endpoint}/run", self.run)
        app.router.add_get("/v2/{endpoint}/status/{job}", self.status)
        app.router.add_post("/v2/{endpoint}/cancel/{job}", self.cancel)
        app.router.add_get("/files/{name}", self.file)
        return app


def progress(stage: str, step: int, total: int, percent: int) -> dict[str, Any]:
    """A /status answer carrying one of the worker's progress updates."""
    return {
        "status": "IN_PROGRESS",
        "output": {"stage": stage, "step": step, "total": total, "percent": percent},
    }
