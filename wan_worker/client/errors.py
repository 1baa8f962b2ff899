"""The client's exit statuses and its one exception tree, each class with the status it exits with.

`wan-i2v` exits with one of `ExitCode` (README "Client" lists the same table). A job that
ended gives the status of its final state (COMPLETED and saved, FAILED, CANCELLED, TIMED_OUT);
the client's own failures are a `ClientError`, and each class carries its `exit_code`:

    ClientError                          the client could not see the job through
    ├── UsageError             2 USAGE        bad arguments or environment, an unusable image
    │                                         or --out (raised before the job is submitted)
    ├── ApiError                              a call to the API failed
    │   ├── ApiHttpError       6 HTTP_ERROR   it answered with an error status, or not JSON
    │   └── ApiUnreachable     7 UNREACHABLE  it did not answer: DNS, refused, TLS, reset
    │       └── ApiNoAnswerInTime             connected, but no answer within the time-out
    └── ResultError            8 NOT_SAVED    the job completed; its video could not be saved

The client is a separate program from the worker: these are not the worker's errors
(`wan_worker.errors`), which reach the client only as a failed job's code and message.
"""

from __future__ import annotations

from enum import IntEnum
from typing import ClassVar


class ExitCode(IntEnum):
    """The client's exit status; README "Client" lists the same."""

    OK = 0
    FAILED = 1
    USAGE = 2
    CANCELLED = 3
    TIMED_OUT = 4
    GAVE_UP = 5
    HTTP_ERROR = 6
    UNREACHABLE = 7
    NOT_SAVED = 8
    INTERRUPTED = 130


EXIT_MEANINGS = {
    ExitCode.OK: "the video was saved",
    ExitCode.FAILED: "the job failed: its error code and message are printed",
    ExitCode.USAGE: "bad arguments, RUNPOD_ENDPOINT_ID or RUNPOD_API_KEY unset, image unreadable, "
    "--out unusable",
    ExitCode.CANCELLED: "the job was cancelled on RunPod",
    ExitCode.TIMED_OUT: "RunPod timed the job out (execution timeout, or TTL in the queue)",
    ExitCode.GAVE_UP: "--timeout passed; the job was cancelled (on RunPod)",
    ExitCode.HTTP_ERROR: "the API answered with an HTTP error, e.g. 401 for a bad API key",
    ExitCode.UNREACHABLE: "the API did not answer (DNS, connection refused, TLS, network)",
    ExitCode.NOT_SAVED: "the job completed, but its video could not be saved",
    ExitCode.INTERRUPTED: "interrupted with Ctrl-C; the job was cancelled (on RunPod)",
}


class ClientError(Exception):
    """A failure of the client itself; the message says what went wrong."""

    exit_code: ClassVar[ExitCode]


class UsageError(ClientError):
    """The command cannot run as given: its arguments, environment, image or `--out`."""

    exit_code = ExitCode.USAGE


class ApiError(ClientError):
    """A call to the API (`what`, e.g. "POST /run") failed."""

    def __init__(self, what: str, text: str) -> None:
        super().__init__(f"{what}: {text}")
        self.what = what


class ApiHttpError(ApiError):
    """The API answered, but not with a usable JSON object."""

    exit_code = ExitCode.HTTP_ERROR

    def __init__(self, what: str, status: int, detail: str) -> None:
        super().__init__(what, f"HTTP {status}: {detail}")
        self.status = status
        self.detail = detail


class ApiUnreachable(ApiError):
    """The API did not answer."""

    exit_code = ExitCode.UNREACHABLE

    def __init__(self, what: str, reason: str) -> None:
        super().__init__(what, reason)
        self.reason = reason


class ApiNoAnswerInTime(ApiUnreachable):
    """Connected, but the answer did not come within the read time-out."""


class ResultError(ClientError):
    """The job completed, but its video could not be saved."""

    exit_code = ExitCode.NOT_SAVED
