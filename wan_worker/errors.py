"""The worker's exceptions, and the one place that turns any exception into a user-facing error.

Every failure a caller or an operator can see is a `WorkerError` with a stable `code` and a
message that says what went wrong and what to do about it. `error_result` is the only function
that builds the `{"error": ...}` dict the handler returns, so the wording, the redaction of
secrets and the `refresh_worker` decision live here and nowhere else.

What the caller receives is shaped by the runpod SDK: its job runner (`rp_job.run_job`) pops
`error` and `refresh_worker` from the handler's dict and sends the other keys as the job's
`output`, and its local API answers a failed job with `{"id", "status": "FAILED", "error"}`
alone. So the `error` string stands on its own and starts with the code
(`invalid_input: seed: must be an integer ...`); `error_code`, `field`, `fields`, `node_id`
and the other details stay in the dict, where the SDK keeps them.

The tree, with each class's `code` (* marks the ones that ask RunPod to replace the worker) and,
for the ones a boot or `python -m wan_worker.provision` ends with, its exit status:

    WorkerError                 worker_error             1
    ├── ConfigError             config_error             2  the endpoint's environment is wrong
    ├── InputError              invalid_input               a job input is wrong
    ├── ComfyUnavailable        comfyui_unavailable  *      ComfyUI is gone or not answering
    ├── ComfyRejected           workflow_rejected           /prompt refused the workflow
    ├── ComfyExecutionError     execution_error             a node failed
    │   ├── OutOfMemory         out_of_memory
    │   └── SageAttentionFailed execution_error             SageAttention would not load or run
    ├── JobTimeout              timeout                     the job's deadline passed
    ├── JobCancelled            cancelled                   the platform stopped the job
    ├── OutputError             output_error                no video to return
    │   └── DiskFull            disk_full
    ├── StorageError            storage_error               the upload failed
    ├── GpuNotReady             gpu_unavailable      *   1  boot: CUDA never became usable
    ├── ProvisionError          provision_failed     *   3  boot: a model could not be had
    │   ├── DiskSpaceError      no_disk_space        *   4  boot: the models do not fit
    │   ├── ClaimWaitTimeout    provision_failed     *   3  boot: another worker held a model's
    │   │                                                   download claim past the wait bound
    │   └── ProvisionSignal     (internal: never reaches a user, see below)
    │       ├── SourceFailed        this source cannot deliver the file: try the next one
    │       ├── RetryableError      one request failed, worth retrying: retry the range
    │       ├── NoRangeSupport      the server ignored Range: fetch the file in one stream
    │       └── ClaimLost           another worker took this file's download over: wait for it
    └── PublishError            publish_failed           5  bundle command: the Hub upload failed

`error_result` maps what is not a WorkerError: an `OSError` ENOSPC to `disk_full`, a
`MemoryError` to `out_of_memory`, anything else to `internal_error`. No other code reaches a
caller, and no other place turns an exception into one.

Jobs raise the first twelve; the boot (`wan_worker.boot`, and `python -m wan_worker.provision`)
raises GpuNotReady, ProvisionError and its subclasses, and ConfigError, and ends with their
`exit_status` (a job that waits for the models gets the boot's error). PublishError is raised
only by `python -m wan_worker.provision bundle`, which a person runs to build the models bundle.

The `ProvisionSignal` branch is how provisioning's parts tell one another what to do next
(`wan_worker.provision.transfer` and `.sources` raise the first three, `.claims` the last);
each is caught inside `wan_worker.provision`: a model that no source can deliver becomes a
ProvisionError naming every source tried, a lost claim means waiting for the file again. They
sit under ProvisionError so that one escaping by a bug still ends the boot as `provision_failed`
(exit status 3) rather than as an unexplained crash.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from typing import Any, ClassVar

# Environment variables whose values must never appear in logs, errors or outputs.
SECRET_ENV_VARS = (
    "HF_TOKEN",
    "HUGGING_FACE_HUB_TOKEN",
    "R2_ACCESS_KEY",
    "R2_SECRET_KEY",
    "R2_ACCESS_KEY_ID",
    "R2_SECRET_ACCESS_KEY",
    "BUCKET_ACCESS_KEY_ID",
    "BUCKET_SECRET_ACCESS_KEY",
    "RUNPOD_AI_API_KEY",
    "RUNPOD_API_KEY",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
)


class WorkerError(Exception):
    """A failure with a message meant for the caller."""

    code: ClassVar[str] = "worker_error"
    #: The exit status of a boot (or `python -m wan_worker.provision`) that ends with it.
    exit_status: ClassVar[int] = 1
    #: When True the worker asks RunPod to replace it after this job (it cannot recover).
    refresh_worker: bool = False

    def __init__(self, message: str, *, refresh_worker: bool | None = None, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        if refresh_worker is not None:
            self.refresh_worker = refresh_worker


class ConfigError(WorkerError):
    """The deployment's environment is wrong; the fix is in the endpoint's settings."""

    code = "config_error"
    exit_status = 2


@dataclass(frozen=True)
class FieldProblem:
    """One thing wrong with one input field, and what the caller should send instead."""

    field: str
    problem: str
    fix: str

    def __str__(self) -> str:
        return f"{self.field}: {self.problem}. {self.fix}"


class InputError(WorkerError):
    """One or more job inputs are invalid. Names each field and says how to fix it."""

    code = "invalid_input"

    def __init__(self, problems: FieldProblem | list[FieldProblem], note: str = "") -> None:
        """`note`: a sentence after the problems that names no bad field (what was left
        unchecked); `field` and `fields` name only the fields found bad."""
        listed = [problems] if isinstance(problems, FieldProblem) else list(problems)
        super().__init__(
            " ".join([*(str(p) for p in listed), *([note] if note else [])]),
            field=listed[0].field,
            fields=[p.field for p in listed],
        )
        self.problems = listed

    @classmethod
    def single(cls, field: str, problem: str, fix: str) -> InputError:
        return cls(FieldProblem(field, problem, fix))


class ComfyUnavailable(WorkerError):
    """ComfyUI is not running or not answering."""

    code = "comfyui_unavailable"
    refresh_worker = True


class ComfyRejected(WorkerError):
    """ComfyUI's /prompt refused the workflow (a 400 with node_errors)."""

    code = "workflow_rejected"


class ComfyExecutionError(WorkerError):
    """A node failed while the workflow ran."""

    code = "execution_error"


class OutOfMemory(ComfyExecutionError):
    """The GPU (or host) ran out of memory during the job."""

    code = "out_of_memory"


class SageAttentionFailed(ComfyExecutionError):
    """SageAttention failed to load (not installed, no kernel for this GPU) or failed in its
    kernel. The job can run again with PyTorch attention; after a load failure this worker
    stops asking for SageAttention."""

    def __init__(self, message: str, *, reason: str, load_failure: bool, **details: Any) -> None:
        super().__init__(message, **details)
        #: One line for the result and the log: what failed, where.
        self.reason = reason
        #: True when SageAttention cannot load on this worker at all, so retrying it is useless.
        self.load_failure = load_failure


class JobTimeout(WorkerError):
    """The job ran past its deadline; ComfyUI was interrupted."""

    code = "timeout"


class JobCancelled(WorkerError):
    """RunPod stopped the job (cancelled, or past the endpoint's execution timeout) while it
    ran; ComfyUI was interrupted. Nobody receives this result: it is for the worker's log."""

    code = "cancelled"


class OutputError(WorkerError):
    """The video could not be produced, read or delivered."""

    code = "output_error"


class DiskFull(OutputError):
    """A disk filled up while the job wrote its files."""

    code = "disk_full"


class StorageError(WorkerError):
    """The upload to S3-compatible storage failed."""

    code = "storage_error"


class GpuNotReady(WorkerError):
    """At boot: CUDA did not become usable in time, or PyTorch cannot use it at all."""

    code = "gpu_unavailable"
    refresh_worker = True


class ProvisionError(WorkerError):
    """At boot: a model could not be made available; the worker cannot start without it."""

    code = "provision_failed"
    exit_status = 3
    refresh_worker = True


class DiskSpaceError(ProvisionError):
    """At boot: the models still to download do not fit on the models' disk."""

    code = "no_disk_space"
    exit_status = 4


class ClaimWaitTimeout(ProvisionError):
    """At boot: another worker held a model file's download claim, its heartbeat alive, for
    longer than a worker waits for one file (`wan_worker.provision.claims`)."""


class ProvisionSignal(ProvisionError):
    """Internal to `wan_worker.provision`: what one of its parts tells another to do next.
    Always caught there; never shown to a user (see the module's docstring)."""


class SourceFailed(ProvisionSignal):
    """This source cannot deliver the file (after retries, or for a reason retries won't fix):
    the next source is tried."""


class RetryableError(ProvisionSignal):
    """A transient failure of one request (connection, timeout, 5xx, short read): the range is
    retried, and after the last attempt it becomes SourceFailed."""


class NoRangeSupport(ProvisionSignal):
    """The server ignored a Range request: the file is fetched in one stream instead."""


class ClaimLost(ProvisionSignal):
    """This process's claim on a file was taken over by another worker: it stops writing that
    file and waits for it like the other workers."""


class PublishError(WorkerError):
    """Building the models bundle: the Hugging Face Hub refused or the upload failed."""

    code = "publish_failed"
    exit_status = 5


#: The code of a failure nothing foresaw: any exception that is not a WorkerError.
INTERNAL_ERROR_CODE = "internal_error"


def secret_values(env: dict[str, str] | None = None) -> list[str]:
    """The current values of every secret variable, longest first, ignoring trivial ones."""
    env = dict(os.environ) if env is None else env
    values = {env[name] for name in SECRET_ENV_VARS if len(env.get(name, "")) >= 4}
    return sorted(values, key=len, reverse=True)


def redact(text: str, env: dict[str, str] | None = None) -> str:
    """Replace every secret's value in `text` with a placeholder."""
    for value in secret_values(env):
        text = text.replace(value, "[redacted]")
    return text


def _coded(code: str, message: str) -> dict[str, Any]:
    """`error` (the code, then the message: it must stand on its own) and `error_code`."""
    return {"error": f"{code}: {redact(message)}", "error_code": code}


def error_result(exc: BaseException) -> dict[str, Any]:
    """The handler's `{"error": ...}` result for any exception, secrets removed."""
    if isinstance(exc, WorkerError):
        result = _coded(exc.code, exc.message)
        for key, value in exc.details.items():
            result[key] = redact(value) if isinstance(value, str) else value
        if exc.refresh_worker:
            result["refresh_worker"] = True
        return result
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return _coded(
            DiskFull.code,
            f"The worker's disk is full ({exc}). The job was not completed; retry it, and "
            "give the worker more container disk if it repeats.",
        )
    if isinstance(exc, MemoryError):
        return _coded(
            OutOfMemory.code,
            "The worker ran out of host memory while handling the job. Use a smaller "
            "start_image or output size, or a worker with more RAM.",
        )
    return _coded(
        INTERNAL_ERROR_CODE,
        f"Internal error ({type(exc).__name__}: {exc}). The job was not completed; retry it, "
        "and report the error if it repeats.",
    )
