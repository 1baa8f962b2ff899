"""The two APIs a job can be sent to: a RunPod endpoint, or the runpod SDK's local API.

Both take a job with `/run` and answer `/status/<id>`; they differ in the rest:

- RunPod (`https://api.runpod.ai/v2/<endpoint id>`): a bearer API key; `GET /status/<id>`
  answers at once with `IN_QUEUE`, `IN_PROGRESS` (and the worker's latest progress update in
  `output`) or a final state; `POST /cancel/<id>` stops a job.
- The local API of a worker started with `--rp_serve_api` (the SDK's `rp_fastapi.py`): no key
  and no endpoint id in the path; `POST /run` only stores the job, and `POST /status/<id>` runs
  it and answers once it has ended (`GET` is refused with 405). It has no cancel route and
  shows no progress.

The runpod SDK's endpoint client (`runpod.Endpoint`) is not used: its `Job.status()` returns only
the state string and `output()` nothing until the job ends, so the progress updates shown in
`/status` while a job runs are out of its public reach; it cannot speak to the local API (no
endpoint id in the path, `POST /status`); it retries only on `http://` URLs, not RunPod's
`https://`; and it would bring the whole worker SDK (FastAPI, uvicorn, boto3, ...) to the
caller's machine. requests with urllib3's Retry does the same calls in a few lines.

A failed call raises an `ApiError` (`wan_worker.client.errors`): `ApiHttpError` (the API
answered, with an error status or a body that is not a JSON object) or `ApiUnreachable` (no
answer: DNS, refused, TLS, reset, a time-out).
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from typing import Any, Protocol

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from wan_worker.client.errors import ApiHttpError, ApiNoAnswerInTime, ApiUnreachable

RUNPOD_API_BASE = "https://api.runpod.ai/v2"
# Connect and read time-outs of one request that should answer at once.
QUICK_TIMEOUT_S = (10.0, 60.0)
# Final job states on RunPod (runpod.endpoint.helpers.is_completed).
FINAL_STATES = frozenset({"COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"})


def make_session() -> requests.Session:
    """A session that retries what is safe to retry.

    Connection failures are retried for every method (nothing was sent yet); answers of 429,
    502, 503 and 504 only for GET (a repeated POST /run would start a second job), after the
    server's Retry-After when it gives one.
    """
    retry = Retry(
        total=5,
        connect=2,
        read=False,  # a read time-out is the caller's to handle, never repeated
        status=4,
        backoff_factor=0.5,
        status_forcelist=(429, 502, 503, 504),
        allowed_methods=frozenset({"GET"}),
        raise_on_status=False,
        respect_retry_after_header=True,
    )
    session = requests.Session()
    adapter = HTTPAdapter(max_retries=retry)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def describe_failure(exc: requests.RequestException) -> str:
    """A short reason for a request that got no answer, without the whole exception chain."""
    if isinstance(exc, requests.ConnectTimeout):
        return "timed out connecting"
    if isinstance(exc, requests.ReadTimeout):
        return "timed out waiting for the answer"
    if isinstance(exc, requests.exceptions.SSLError):
        return "TLS failed"
    errno_text = re.search(r"\[Errno -?\d+\] ([^'\")]+)", str(exc))
    if errno_text:
        return errno_text.group(1).strip()
    return "connection failed" if isinstance(exc, requests.ConnectionError) else type(exc).__name__


def request_json(
    session: requests.Session,
    method: str,
    url: str,
    what: str,
    *,
    headers: dict[str, str] | None = None,
    body: dict[str, Any] | None = None,
    timeout: tuple[float, float | None] = QUICK_TIMEOUT_S,
) -> dict[str, Any]:
    """One request whose answer must be a JSON object; errors as ApiHttpError/ApiUnreachable."""
    try:
        response = session.request(method, url, headers=headers, json=body, timeout=timeout)
    except requests.ReadTimeout as exc:
        raise ApiNoAnswerInTime(what, describe_failure(exc)) from exc
    except requests.RequestException as exc:
        raise ApiUnreachable(what, f"{describe_failure(exc)} ({url})") from exc
    if response.status_code >= 400:
        raise ApiHttpError(what, response.status_code, response.text.strip()[:300] or "(empty)")
    try:
        answer = response.json()
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        raise ApiHttpError(
            what, response.status_code, "not a JSON object: " + response.text.strip()[:300]
        )
    return answer


class JobApi(Protocol):
    """What the command line needs from an API."""

    can_cancel: bool
    shows_progress: bool

    @property
    def name(self) -> str: ...

    def submit(self, job_input: dict[str, Any]) -> dict[str, Any]: ...

    def status(self, job_id: str, wait_s: float) -> dict[str, Any]: ...

    def cancel(self, job_id: str) -> dict[str, Any]: ...


@dataclass
class RunPodApi:
    """A RunPod serverless endpoint."""

    endpoint_id: str
    api_key: str = field(repr=False)
    base_url: str = RUNPOD_API_BASE
    session: requests.Session = field(default_factory=make_session, repr=False)
    can_cancel: bool = True
    shows_progress: bool = True

    @property
    def name(self) -> str:
        return f"RunPod endpoint {self.endpoint_id}"

    def _call(self, method: str, route: str, what: str, **kwargs: Any) -> dict[str, Any]:
        url = f"{self.base_url.rstrip('/')}/{self.endpoint_id}/{route}"
        headers = {"Authorization": f"Bearer {self.api_key}"}
        return request_json(self.session, method, url, what, headers=headers, **kwargs)

    def submit(self, job_input: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", "run", "POST /run", body={"input": job_input})

    def status(self, job_id: str, wait_s: float) -> dict[str, Any]:
        """The job's state now; RunPod answers at once, so wait_s only bounds the request."""
        read_s = min(QUICK_TIMEOUT_S[1], max(wait_s, 1.0))
        return self._call(
            "GET", f"status/{job_id}", "GET /status", timeout=(QUICK_TIMEOUT_S[0], read_s)
        )

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self._call("POST", f"cancel/{job_id}", "POST /cancel")


@dataclass
class LocalApi:
    """The runpod SDK's local API (`rp_handler.py --rp_serve_api`)."""

    url: str
    session: requests.Session = field(default_factory=make_session, repr=False)
    can_cancel: bool = False
    shows_progress: bool = False

    @property
    def name(self) -> str:
        return f"local API {self.url}"

    def submit(self, job_input: dict[str, Any]) -> dict[str, Any]:
        url = f"{self.url.rstrip('/')}/run"
        return request_json(self.session, "POST", url, "POST /run", body={"input": job_input})

    def status(self, job_id: str, wait_s: float) -> dict[str, Any]:
        """Runs the job (the local API runs it inside this request) and waits up to wait_s."""
        url = f"{self.url.rstrip('/')}/status/{job_id}"
        timeout = (QUICK_TIMEOUT_S[0], max(wait_s, 0.001) if math.isfinite(wait_s) else None)
        return request_json(self.session, "POST", url, "POST /status", timeout=timeout)

    def cancel(self, job_id: str) -> dict[str, Any]:
        raise NotImplementedError("the SDK's local API has no cancel route")


def runpod_from_env(
    endpoint_id: str | None, env: dict[str, str] | None = None
) -> tuple[RunPodApi | None, str]:
    """A RunPodApi from RUNPOD_ENDPOINT_ID / RUNPOD_API_KEY, or None and what is missing.

    RUNPOD_ENDPOINT_BASE_URL moves the API elsewhere, as it does for the runpod SDK.
    """
    env = dict(os.environ) if env is None else env
    endpoint_id = endpoint_id or env.get("RUNPOD_ENDPOINT_ID", "").strip()
    api_key = env.get("RUNPOD_API_KEY", "").strip()
    missing = [
        name
        for name, value in (
            ("RUNPOD_ENDPOINT_ID (or --endpoint)", endpoint_id),
            ("RUNPOD_API_KEY", api_key),
        )
        if not value
    ]
    if missing:
        return None, " and ".join(missing)
    base = env.get("RUNPOD_ENDPOINT_BASE_URL", "").strip() or RUNPOD_API_BASE
    return RunPodApi(endpoint_id=endpoint_id, api_key=api_key, base_url=base), ""
