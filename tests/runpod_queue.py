"""RunPod's job queue as a worker sees it, on loopback: drives a real `rp_handler.py` process
through the runpod SDK's own job loop, as in a deployed serverless worker.

The SDK (1.12) is given four URLs in the environment (`RunPodQueue.env()`), and this server
answers them as RunPod does:

- `RUNPOD_WEBHOOK_GET_JOB` (`.../job-take/$ID?...`, GET, the SDK adds `&job_in_progress=`): the
  next job as `{"id", "input"}`, or 204 when none came within `hold_s` (a long poll);
- the stop channel the SDK derives from it (`.../job-stop/$ID?...`, GET, long poll):
  `{"jobsToStop": [ids]}`, or 204. A job is stopped when the test cancels it, or when it has
  been in progress longer than its `execution_timeout_s` (the endpoint's execution timeout,
  or the request's `policy.executionTimeout`): it is then TIMED_OUT, as on RunPod;
- `RUNPOD_WEBHOOK_POST_OUTPUT` (`.../job-done/$RUNPOD_POD_ID/$ID?...&isStream=false`, POST, a
  JSON body sent as a form): progress updates (`"status": "IN_PROGRESS"`) and the result,
  `{"output": ...}` or `{"error": ..., "output": ..., "stopPod": true}`;
- `RUNPOD_WEBHOOK_PING` (`.../ping/$RUNPOD_POD_ID?job_id=...`, GET): the heartbeat.

Every request must carry the worker's API key (`Authorization`), as RunPod requires. The
server runs in its own thread; the test thread submits jobs and waits for their end.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

API_KEY = "rp-test-key-0123456789"
ENDPOINT = "ep-test"
WORKER_ID = "worker-test"
TERMINAL = ("COMPLETED", "FAILED", "TIMED_OUT", "CANCELLED")


@dataclass
class QueuedJob:
    id: str
    input: dict[str, Any]
    execution_timeout_s: float | None = None
    state: str = "IN_QUEUE"
    submitted_at: float = field(default_factory=time.monotonic)
    taken_at: float | None = None
    ended_at: float | None = None
    progress: list[Any] = field(default_factory=list)
    result: dict[str, Any] | None = None
    #: What the worker posted for the job after RunPod had already ended it.
    late: list[dict[str, Any]] = field(default_factory=list)


class RunPodQueue:
    def __init__(self, hold_s: float = 2.0, max_result_bytes: int = 20 * 1024**2) -> None:
        #: The largest result it takes (RunPod's /runsync limit, 20 MB, by default).
        self.max_result_bytes = max_result_bytes
        self.hold_s = hold_s
        self.base = ""  # http://127.0.0.1:PORT once started
        self.jobs: dict[str, QueuedJob] = {}
        self.waiting: list[str] = []
        self.to_stop: list[str] = []
        self.pings: list[dict[str, str]] = []
        self.takes = 0
        #: When the worker first asked for a job (`time.monotonic()`): its queue was open.
        self.first_poll_at: float | None = None
        self._cond = threading.Condition()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._runner: web.AppRunner | None = None

    # -- the test's side ----------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        """The variables RunPod gives a serverless worker, pointing at this server."""
        root = f"{self.base}/v2/{ENDPOINT}"
        return {
            "RUNPOD_WEBHOOK_GET_JOB": f"{root}/job-take/$ID?gpu=TEST",
            "RUNPOD_WEBHOOK_POST_OUTPUT": f"{root}/job-done/$RUNPOD_POD_ID/$ID?gpu=TEST",
            "RUNPOD_WEBHOOK_POST_STREAM": f"{root}/job-stream/$RUNPOD_POD_ID/$ID?gpu=TEST",
            "RUNPOD_WEBHOOK_PING": f"{root}/ping/$RUNPOD_POD_ID?gpu=TEST",
            "RUNPOD_PING_INTERVAL": "1000",
            "RUNPOD_POD_ID": WORKER_ID,
            "RUNPOD_ENDPOINT_ID": ENDPOINT,
            "RUNPOD_AI_API_KEY": API_KEY,
            # The SDK's own fitness checks dial 8.8.8.8 and look for a GPU: not here.
            "RUNPOD_SKIP_AUTO_SYSTEM_CHECKS": "true",
            "RUNPOD_SKIP_GPU_CHECK": "true",
        }

    def submit(
        self,
        job_input: dict[str, Any],
        *,
        execution_timeout_s: float | None = None,
        job_id: str | None = None,
    ) -> str:
        job = QueuedJob(job_id or f"job-{uuid.uuid4().hex[:8]}", job_input, execution_timeout_s)
        with self._cond:
            self.jobs[job.id] = job
            self.waiting.append(job.id)
            self._cond.notify_all()
        return job.id

    def cancel(self, job_id: str) -> None:
        """The caller's /cancel: the job ends as CANCELLED and the worker is told to stop it."""
        with self._cond:
            self._end(self.jobs[job_id], "CANCELLED")

    def wait(self, job_id: str, timeout_s: float = 60.0) -> QueuedJob:
        """The job once RunPod considers it over (completed, failed, timed out, cancelled)."""
        with self._cond:
            job = self.jobs[job_id]
            if not self._cond.wait_for(lambda: job.state in TERMINAL, timeout=timeout_s):
                raise TimeoutError(f"{job_id} still {job.state} after {timeout_s} s")
            return job

    def wait_taken(self, job_id: str, timeout_s: float = 60.0) -> None:
        with self._cond:
            job = self.jobs[job_id]
            if not self._cond.wait_for(lambda: job.taken_at is not None, timeout=timeout_s):
                raise TimeoutError(f"{job_id} was not taken within {timeout_s} s")

    def __enter__(self) -> RunPodQueue:
        self._thread = threading.Thread(target=self._serve, name="runpod-queue", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the RunPod queue did not start")
        return self

    def __exit__(self, *_exc: object) -> None:
        if self._loop is not None:
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    # -- RunPod's side ------------------------------------------------------------------------

    def _end(self, job: QueuedJob, state: str) -> None:
        """Under the lock: end a job; a job in progress is sent on the stop channel."""
        if job.state in TERMINAL:
            return
        if job.state == "IN_PROGRESS" and state in ("TIMED_OUT", "CANCELLED"):
            self.to_stop.append(job.id)
        if job.id in self.waiting:
            self.waiting.remove(job.id)
        job.state = state
        job.ended_at = time.monotonic()
        self._cond.notify_all()

    def _expire(self) -> None:
        """Under the lock: jobs past their execution timeout are TIMED_OUT."""
        now = time.monotonic()
        for job in self.jobs.values():
            if (
                job.state == "IN_PROGRESS"
                and job.execution_timeout_s is not None
                and job.taken_at is not None
                and now - job.taken_at >= job.execution_timeout_s
            ):
                self._end(job, "TIMED_OUT")

    async def _long_poll(self, ready: Any) -> Any:
        """Whatever `ready()` returns once it is truthy, or None after `hold_s`."""
        end = time.monotonic() + self.hold_s
        while True:
            with self._cond:
                self._expire()
                found = ready()
            if found or time.monotonic() >= end:
                return found
            await asyncio.sleep(0.05)

    def _authorized(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == API_KEY

    async def _job_take(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return web.Response(status=401)
        with self._cond:
            if self.first_poll_at is None:
                self.first_poll_at = time.monotonic()

        def take() -> QueuedJob | None:
            if not self.waiting:
                return None
            job = self.jobs[self.waiting.pop(0)]
            job.state, job.taken_at = "IN_PROGRESS", time.monotonic()
            self.takes += 1
            self._cond.notify_all()
            return job

        job = await self._long_poll(take)
        if job is None:
            return web.Response(status=204)
        return web.json_response({"id": job.id, "input": job.input})

    async def _job_stop(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return web.Response(status=401)

        def stops() -> list[str]:
            found, self.to_stop[:] = list(self.to_stop), []
            return found

        found = await self._long_poll(stops)
        if not found:
            return web.Response(status=204)
        return web.json_response({"jobsToStop": found})

    async def _job_done(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return web.Response(status=401)
        body = json.loads(await request.text())
        job_id = request.match_info["job_id"]
        with self._cond:
            job = self.jobs.get(job_id)
            if job is None:
                return web.Response(status=404)
            if body.get("status") == "IN_PROGRESS":
                job.progress.append(body.get("output"))
            elif job.state in TERMINAL:
                job.late.append(body)
            else:
                job.result = body
                self._end(job, "FAILED" if "error" in body else "COMPLETED")
            self._cond.notify_all()
        return web.Response(status=200)

    async def _ping(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return web.Response(status=401)
        with self._cond:
            self.pings.append(dict(request.rel_url.query))
        return web.Response(status=200)

    def _serve(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        app = web.Application(client_max_size=self.max_result_bytes)
        app.router.add_get("/v2/{endpoint}/job-take/{worker}", self._job_take)
        app.router.add_get("/v2/{endpoint}/job-stop/{worker}", self._job_stop)
        app.router.add_post("/v2/{endpoint}/job-done/{worker}/{job_id}", self._job_done)
        app.router.add_post("/v2/{endpoint}/job-stream/{worker}/{job_id}", self._job_done)
        app.router.add_get("/v2/{endpoint}/ping/{worker}", self._ping)
        self._runner = web.AppRunner(app, access_log=None)
        loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        loop.run_until_complete(site.start())
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base = f"http://127.0.0.1:{port}"
        expiry = loop.create_task(self._keep_time())
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            expiry.cancel()
            with contextlib.suppress(Exception):
                loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _keep_time(self) -> None:
        """RunPod's clock: jobs time out whether or not the worker is polling."""
        while True:
            with self._cond:
                self._expire()
            await asyncio.sleep(0.05)

    async def _shutdown(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
