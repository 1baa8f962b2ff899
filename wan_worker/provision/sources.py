"""Opening a manifest source: R2 through boto3, Hugging Face through huggingface_hub, or a URL.

`open_source` returns a `Remote` (size, published sha256, identity, range reader) or raises
`SourceFailed` with a one-line reason. Heavy libraries are imported here, lazily, so a warm
start that downloads nothing never loads them.
"""

from __future__ import annotations

import functools
import http.client
import ssl
import threading
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin, urlparse

from wan_worker.errors import NoRangeSupport, RetryableError, SourceFailed, redact
from wan_worker.provision.manifest import SHA256_RE, SourceSpec
from wan_worker.provision.transfer import OffsetWriter, Sink
from wan_worker.s3 import s3_client
from wan_worker.settings.provisioning import ProvisionSettings

if TYPE_CHECKING:
    import requests

READ_BLOCK = 4 * 1024 * 1024
_thread_local = threading.local()


def _session() -> requests.Session:
    import requests

    session = getattr(_thread_local, "session", None)
    if session is None:
        session = requests.Session()
        _thread_local.session = session
    return session


class HttpRemote:
    """A file behind a URL that honours Range (Hugging Face's CDN, any web server).

    Ranges are read with http.client straight into a reusable buffer (no per-block copies),
    over one kept-alive connection per thread and host: on a fast link the CPU, not the
    network, limits a Python downloader, and this is what keeps it level with aria2c.
    """

    def __init__(
        self,
        *,
        label: str,
        url: str,
        size: int,
        sha256: str | None,
        identity: str,
        headers: dict[str, str],
        timeout_s: float,
    ) -> None:
        self.label = label
        self.url = url
        self.size = size
        self.sha256 = sha256
        self.identity = identity
        self._headers = headers
        self._timeout = timeout_s

    def read_range(self, start: int, end: int, sink: Sink) -> None:
        headers = dict(self._headers)
        headers["Range"] = f"bytes={start}-{end - 1}"
        headers["Accept-Encoding"] = "identity"
        url = self.url
        try:
            for _ in range(5):  # redirects
                response = _request(url, headers, self._timeout)
                if response.status in {301, 302, 303, 307, 308}:
                    response.read()
                    url = urljoin(url, response.getheader("Location", ""))
                    continue
                try:
                    position = _read_body(response, start, end, sink)
                except BaseException:
                    _drop_connection(url)
                    raise
                if position < end or not response.isclosed() or response.will_close:
                    _drop_connection(url)  # cut short, or not reusable: start afresh next time
                return
            raise SourceFailed("too many redirects")
        except (OSError, http.client.HTTPException) as exc:
            raise RetryableError(_short(exc)) from exc


def _request(url: str, headers: dict[str, str], timeout: float) -> http.client.HTTPResponse:
    """GET on this thread's kept-alive connection; a connection the server has meanwhile
    closed is replaced once, without counting as a failed attempt."""
    for reused in (True, False):
        conn, target, fresh = _connection(url, timeout)
        try:
            conn.request("GET", target, headers=headers)
            return conn.getresponse()
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            _drop_connection(url)
            if fresh or not reused:
                raise
        except (OSError, http.client.HTTPException):
            _drop_connection(url)
            raise
    raise http.client.HTTPException("unreachable")  # pragma: no cover


def _read_body(response: http.client.HTTPResponse, start: int, end: int, sink: Sink) -> int:
    """Deliver the body to sink; returns the position reached."""
    if response.status == 200:
        if start != 0:
            response.close()
            raise NoRangeSupport("the server ignored Range")
    elif response.status != 206:
        response.read()
        _raise_for_http(response.status, response.reason)
    buffer = getattr(_thread_local, "buffer", None)
    if buffer is None:
        buffer = memoryview(bytearray(READ_BLOCK))
        _thread_local.buffer = buffer
    position = start
    while position < end:
        count = response.readinto(buffer[: min(READ_BLOCK, end - position)])
        if not count:
            break
        sink(position, buffer[:count])
        position += count
    if position >= end and response.status == 206:
        response.read()  # drain (normally empty) so the connection can be reused
    else:
        response.close()
    return position


def _connection(url: str, timeout: float) -> tuple[http.client.HTTPConnection, str, bool]:
    parts = urlparse(url)
    key = (parts.scheme, parts.netloc)
    pool = getattr(_thread_local, "connections", None)
    if pool is None:
        pool = _thread_local.connections = {}
    conn = pool.get(key)
    fresh = conn is None
    if conn is None:
        if parts.scheme == "https":
            conn = http.client.HTTPSConnection(
                parts.netloc, timeout=timeout, context=ssl.create_default_context()
            )
        else:
            conn = http.client.HTTPConnection(parts.netloc, timeout=timeout)
        pool[key] = conn
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    return conn, target, fresh


def _drop_connection(url: str) -> None:
    parts = urlparse(url)
    pool = getattr(_thread_local, "connections", {})
    conn = pool.pop((parts.scheme, parts.netloc), None)
    if conn is not None:
        conn.close()


def _raise_for_http(status: int, reason: str) -> None:
    if status == 429 or status >= 500:
        raise RetryableError(f"HTTP {status} {reason}")
    raise SourceFailed(f"HTTP {status} {reason}")


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    text = text.splitlines()[0] if text else text
    return redact(text[:300])


class S3Remote:
    """An object in R2 (S3 API): boto3 TransferConfig for a fresh download, Range to resume."""

    def __init__(
        self,
        *,
        label: str,
        client: Any,
        bucket: str,
        key: str,
        size: int,
        sha256: str | None,
        identity: str,
        connections: int,
        chunk_bytes: int,
    ) -> None:
        self.label = label
        self.size = size
        self.sha256 = sha256
        self.identity = identity
        self._client = client
        self._bucket = bucket
        self._key = key
        self._connections = connections
        self._chunk = chunk_bytes

    def fetch_whole(self, writer: OffsetWriter) -> None:
        from boto3.s3.transfer import TransferConfig
        from botocore.exceptions import BotoCoreError, ClientError

        config = TransferConfig(
            multipart_threshold=self._chunk,
            multipart_chunksize=self._chunk,
            max_concurrency=self._connections,
            use_threads=True,
        )
        try:
            self._client.download_fileobj(self._bucket, self._key, writer, Config=config)
        except (BotoCoreError, ClientError, OSError) as exc:
            raise RetryableError(_short(exc)) from exc

    def read_range(self, start: int, end: int, sink: Sink) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            response = self._client.get_object(
                Bucket=self._bucket, Key=self._key, Range=f"bytes={start}-{end - 1}"
            )
            body = response["Body"]
            position = start
            while position < end and (block := body.read(READ_BLOCK)):
                sink(position, block)
                position += len(block)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in {"NoSuchKey", "AccessDenied", "NoSuchBucket", "InvalidAccessKeyId"}:
                raise SourceFailed(_short(exc)) from exc
            raise RetryableError(_short(exc)) from exc
        except (BotoCoreError, OSError) as exc:
            raise RetryableError(_short(exc)) from exc


def r2_client(settings: ProvisionSettings) -> Any:
    """An S3 client for R2 (`wan_worker.s3`), its connection pool sized for the transfers."""
    return s3_client(
        endpoint_url=settings.r2.endpoint,
        access_key_id=settings.r2.access_key,
        secret_access_key=settings.r2.secret_key,
        region="auto",
        retries=settings.retries,
        connect_timeout_s=min(settings.timeout_s, 15),
        read_timeout_s=settings.timeout_s,
        max_pool_connections=settings.connections * settings.max_parallel_files + 4,
    )


_r2_lock = threading.Lock()


@functools.lru_cache(maxsize=4)
def _cached_r2_client(settings: ProvisionSettings) -> Any:
    return r2_client(settings)


def _shared_r2_client(settings: ProvisionSettings) -> Any:
    """One client, and so one connection pool, for every file of a run: keyed by the settings'
    value (equal settings, same client), built once even when files open in parallel."""
    with _r2_lock:
        return _cached_r2_client(settings)


def _open_r2(spec: SourceSpec, settings: ProvisionSettings) -> S3Remote:
    from botocore.exceptions import BotoCoreError, ClientError

    label = spec.label(settings.r2.bucket)
    if not settings.r2.configured:
        raise SourceFailed(
            f"skipped: R2 is not configured ({', '.join(settings.r2.missing())} unset)"
        )
    client = _shared_r2_client(settings)
    try:
        head = client.head_object(Bucket=settings.r2.bucket, Key=spec.key)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code in {"404", "NoSuchKey", "NotFound"}:
            raise SourceFailed(f"no such object in bucket {settings.r2.bucket!r}") from exc
        raise SourceFailed(_short(exc)) from exc
    except BotoCoreError as exc:
        raise SourceFailed(_short(exc)) from exc
    meta = {k.lower(): v for k, v in head.get("Metadata", {}).items()}
    published = meta.get("sha256", "").lower()
    return S3Remote(
        label=label,
        client=client,
        bucket=settings.r2.bucket,
        key=spec.key,
        size=int(head["ContentLength"]),
        sha256=published if SHA256_RE.match(published) else None,
        identity=str(head.get("ETag", "")).strip('"'),
        connections=settings.connections,
        chunk_bytes=settings.chunk_bytes,
    )


def _open_hf(spec: SourceSpec, settings: ProvisionSettings) -> HttpRemote:
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.utils import build_hf_headers

    label = spec.label()
    if settings.hf_offline:
        raise SourceFailed("skipped: HF_HUB_OFFLINE is set")
    revision = spec.revision or "main"
    url = hf_hub_url(spec.repo, spec.path, revision=revision, endpoint=settings.hf_endpoint)
    token = settings.hf_token or False
    try:
        meta = get_hf_file_metadata(
            url, token=token, timeout=settings.timeout_s, endpoint=settings.hf_endpoint
        )
    except Exception as exc:  # huggingface_hub raises many types; all mean "not here"
        raise SourceFailed(_short(exc)) from exc
    if meta.size is None:
        raise SourceFailed("the Hub did not report the file's size")
    etag = (meta.etag or "").lower()
    headers: dict[str, str] = {}
    location = meta.location or url
    if urlparse(location).netloc == urlparse(settings.hf_endpoint).netloc:
        headers = build_hf_headers(token=token)  # the token never leaves the Hub's host
    if spec.revision is None and meta.commit_hash:
        label = f"{label} -> {meta.commit_hash}"
    return HttpRemote(
        label=label,
        url=location,
        size=meta.size,
        sha256=etag if SHA256_RE.match(etag) else None,
        identity=etag or (meta.commit_hash or ""),
        headers=headers,
        timeout_s=settings.timeout_s,
    )


def _open_url(spec: SourceSpec, settings: ProvisionSettings) -> HttpRemote:
    import requests

    try:
        response = _session().head(
            spec.url,
            allow_redirects=True,
            timeout=settings.timeout_s,
            headers={"Accept-Encoding": "identity"},
        )
    except requests.RequestException as exc:
        raise SourceFailed(_short(exc)) from exc
    if response.status_code != 200:
        raise SourceFailed(f"HTTP {response.status_code} {response.reason}")
    length = response.headers.get("Content-Length")
    if length is None or not length.isdigit():
        raise SourceFailed("the server did not report the file's size")
    return HttpRemote(
        label=spec.url,
        url=response.url,
        size=int(length),
        sha256=None,
        identity=response.headers.get("ETag", "") or response.headers.get("Last-Modified", ""),
        headers={},
        timeout_s=settings.timeout_s,
    )


def open_source(spec: SourceSpec, settings: ProvisionSettings) -> HttpRemote | S3Remote:
    if spec.type == "r2":
        return _open_r2(spec, settings)
    if spec.type == "hf":
        return _open_hf(spec, settings)
    return _open_url(spec, settings)
