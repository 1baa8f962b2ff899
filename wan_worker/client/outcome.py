"""What a finished job gives the user: the saved MP4 and its facts, or the error, in words.

A completed job's `output` carries the video as base64 (`video`) or as a presigned URL
(`video_url`, with output storage), and facts about it (seed, size, frames, attention,
timings): `OUTPUT_FIELDS` lists the fields README documents. Fields this client does not know
are printed as they come, so results from a newer worker still read well. A failed job has
`error` (a string that starts with its code, e.g. `invalid_input: seed: ...`) and, through the
runpod SDK's job runner, the worker's other error fields (`error_code`, `field`, `fields`,
`node_id`, ...) in `output`.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import os
import re
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import requests

from wan_worker.client.api import describe_failure
from wan_worker.client.errors import ResultError
from wan_worker.errors import INTERNAL_ERROR_CODE, WorkerError

DOWNLOAD_TIMEOUT_S = (10.0, 120.0)
# Every result field README's Output section documents, and where the summary shows it: this
# is the one list of them (tests/test_client_output.py holds it to README). Any other field is
# printed as `name: value`, so results from a newer worker still read well.
OUTPUT_FIELDS: dict[str, str] = {
    "video": "the source on the `saved` line (inline base64)",
    "video_url": "the source on the `saved` line (downloaded from it)",
    "video_key": "the `stored:` line",
    "url_expires_in_s": "the `stored:` line",
    "format": "not shown: always mp4, the file saved",
    "bytes": "not shown: the `saved` line has the size written",
    "seed": "the facts line",
    "width": "the facts line",
    "height": "the facts line",
    "frames": "the facts line",
    "fps": "the facts line",
    "attention": "the facts line",
    "fp16_accumulation": "the facts line, after the attention",
    "attention_fallback": "the facts line: `(fallback)` after the attention",
    "attention_fallback_reason": "the `fallback:` line; not shown when null",
    "timings": "the `time:` line (total_s and inference_s)",
    "reencoded": "the `re-encoded:` line",
    "original_bytes": "the `re-encoded:` line",
    "reencode_note": "the `re-encoded:` line",
    "upload_error": "the `upload failed:` line",
}
KNOWN_OUTPUT_KEYS = frozenset(OUTPUT_FIELDS)
# The worker's error codes (docs/api.md, "Errors"): every WorkerError's, and internal_error for the
# unforeseen. An `error` that starts with one of them and ": " carries its code; a field name
# ("seed: ...") is not a code.


def _error_codes(cls: type[WorkerError]) -> set[str]:
    codes = set()
    for sub in cls.__subclasses__():
        codes |= {sub.code} | _error_codes(sub)
    return codes


ERROR_CODES = frozenset(_error_codes(WorkerError) | {INTERNAL_ERROR_CODE})
ERROR_CODE_PREFIX = re.compile(r"^([a-z]+(?:_[a-z]+)*): ")
MAX_FIELD_TEXT = 200


@contextlib.contextmanager
def replacing(out: Path) -> Iterator[IO[bytes]]:
    """A new file beside `out` that replaces it once written; removed on any failure.

    Created like any file the user writes (permissions from the umask), under a unique name.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    part = out.with_name(f".{out.name}.{secrets.token_hex(6)}.part")
    try:
        with part.open("xb") as handle:
            yield handle
        os.replace(part, out)
    except BaseException:
        part.unlink(missing_ok=True)
        raise


def save_video(output: dict[str, Any], out: Path, session: requests.Session) -> tuple[int, str]:
    """Write the job's MP4 to `out`; return its size and where it came from."""
    video = output.get("video")
    url = output.get("video_url")
    if isinstance(video, str) and video:
        try:
            data = base64.b64decode(video, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ResultError(f"the result's video is not valid base64 ({exc})") from exc
        try:
            with replacing(out) as handle:
                handle.write(data)
        except OSError as exc:
            raise ResultError(f"cannot write {out}: {exc.strerror or exc}") from exc
        return len(data), "inline base64"
    if isinstance(url, str) and url:
        return download(url, out, session), "video_url"
    raise ResultError(
        "the result has neither video nor video_url"
        + (f" (upload_error: {output['upload_error']})" if output.get("upload_error") else "")
    )


def download(url: str, out: Path, session: requests.Session) -> int:
    """Stream a presigned URL to `out` (with no credentials: the URL carries its own)."""
    shown = url.split("?", 1)[0]
    try:
        with session.get(url, stream=True, timeout=DOWNLOAD_TIMEOUT_S) as response:
            if response.status_code >= 400:
                hint = (
                    " (presigned URLs expire: see url_expires_in_s)"
                    if response.status_code == 403
                    else ""
                )
                raise ResultError(f"downloading {shown} failed: HTTP {response.status_code}{hint}")
            written = 0
            with replacing(out) as handle:
                for chunk in response.iter_content(chunk_size=1 << 20):
                    handle.write(chunk)
                    written += len(chunk)
            return written
    except requests.RequestException as exc:
        raise ResultError(f"downloading {shown} failed: {describe_failure(exc)}") from exc
    except OSError as exc:
        raise ResultError(f"cannot write {out}: {exc.strerror or exc}") from exc


def field_text(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    return text if len(text) <= MAX_FIELD_TEXT else text[:MAX_FIELD_TEXT] + "..."


def extra_fields(output: dict[str, Any], known: Iterable[str]) -> list[str]:
    known = set(known)
    return [f"{key}: {field_text(value)}" for key, value in output.items() if key not in known]


def seconds(value: Any) -> str:
    return f"{value:.1f} s" if isinstance(value, int | float) else "?"


def summary(
    output: dict[str, Any], answer: dict[str, Any], out: Path, size: int, source: str
) -> list[str]:
    """The lines printed after a video was saved."""
    lines = [f"saved {out} ({size:,} bytes, from {source})"]
    facts = []
    if "seed" in output:
        facts.append(f"seed {output['seed']}")
    if "width" in output and "height" in output:
        facts.append(f"{output['width']}x{output['height']}")
    if "frames" in output:
        fps = output.get("fps")
        facts.append(
            f"{output['frames']} frames"
            + (f" at {fps:g} fps" if isinstance(fps, int | float) else "")
        )
    if "attention" in output:
        facts.append(f"attention {output['attention']}" + attention_detail(output))
    if facts:
        lines.append(", ".join(facts))
    times = []
    timings = output.get("timings")
    if isinstance(timings, dict) and "total_s" in timings:
        times.append(f"worker {seconds(timings['total_s'])}")
        if "inference_s" in timings:
            times.append(f"inference {seconds(timings['inference_s'])}")
    for key, label in (("delayTime", "queue"), ("executionTime", "execution")):
        if isinstance(answer.get(key), int | float):
            times.append(f"{label} {answer[key] / 1000:.1f} s")
    if times:
        lines.append("time: " + ", ".join(times))
    if output.get("video_key"):
        expiry = output.get("url_expires_in_s")
        lines.append(
            f"stored: {output['video_key']}"
            + (f" (URL valid {expiry} s)" if isinstance(expiry, int | float) else "")
        )
    reason = output.get("attention_fallback_reason")
    if reason:
        lines.append(f"fallback: {reason}")
    if output.get("reencoded"):
        note, original = output.get("reencode_note"), output.get("original_bytes")
        if note:
            lines.append(f"re-encoded: {note}")
        else:
            lines.append(
                "re-encoded: to fit inline"
                + (f", from {original:,} bytes" if isinstance(original, int) else "")
            )
    if output.get("upload_error"):
        lines.append(f"upload failed: {output['upload_error']}")
    lines += extra_fields(output, KNOWN_OUTPUT_KEYS)
    return lines


def attention_detail(output: dict[str, Any]) -> str:
    """What follows `attention <mode>`: fp16 accumulation on or off, and a fallback."""
    detail = ""
    fp16 = output.get("fp16_accumulation")
    if isinstance(fp16, bool):
        detail += " with fp16 accumulation" if fp16 else " without fp16 accumulation"
    if output.get("attention_fallback"):
        detail += " (fallback)"
    return detail


@dataclass
class Failure:
    """A failed job in words: its error code (when one is known), message and other fields."""

    code: str | None
    message: str
    details: list[str] = field(default_factory=list)

    def lines(self, job_id: str, status: str) -> list[str]:
        head = f"job {job_id} {status}: " + (f"{self.code}: " if self.code else "") + self.message
        return [head] + [f"  {line}" for line in self.details]


def failure(answer: dict[str, Any]) -> Failure:
    """Read a FAILED (or CANCELLED, TIMED_OUT) answer of /status."""
    error = answer.get("error")
    raw_output = answer.get("output")
    output: dict[str, Any] = raw_output if isinstance(raw_output, dict) else {}
    code = output.get("error_code") if isinstance(output.get("error_code"), str) else None
    if isinstance(error, str):
        try:
            parsed = json.loads(error)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            error = parsed
    if isinstance(error, dict):
        if "error_message" in error:  # the SDK's report of an exception raised by the handler
            kind = str(error.get("error_type", "exception"))
            kind = re.sub(r"^<class '(?:[\w.]+\.)?(\w+)'>$", r"\1", kind)
            message = f"{kind}: {error['error_message']}"
        else:
            code = code or error.get("error_code")
            message = str(error.get("error") or error.get("message") or field_text(error))
    elif error:
        message = str(error)
    else:
        message = "(no error message)"
    prefix = ERROR_CODE_PREFIX.match(message)
    if prefix and prefix.group(1) in (ERROR_CODES | {code}):
        code = code or prefix.group(1)
        if prefix.group(1) == code:
            message = message[prefix.end() :]
    details = extra_fields(output, {"error_code"})
    return Failure(code=code, message=message, details=details)
