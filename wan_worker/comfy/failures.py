"""ComfyUI's failures, said as the worker's errors: what went wrong, and what to do about it.

The client and the follower detect failures; every sentence a caller reads about one is built
here, from what ComfyUI answered (a /prompt 400 body, an `execution_error` message, a /history
status) or from what the worker saw (no answer, a dead process).
"""

from __future__ import annotations

from typing import Any

from wan_worker.errors import (
    ComfyExecutionError,
    ComfyRejected,
    ComfyUnavailable,
    DiskFull,
    JobTimeout,
    OutOfMemory,
    OutputError,
    WorkerError,
)
from wan_worker.workflow import COMFY_LISTED_MODEL_INPUTS


def process_died(detail: str, cause: str) -> ComfyUnavailable:
    """ComfyUI's process is gone (`detail` says how, `cause` why)."""
    return ComfyUnavailable(
        f"{detail}: {cause}. The job was not completed; the worker will be replaced.",
        refresh_worker=True,
    )


def unreachable(base_url: str, what: str, exc: BaseException) -> ComfyUnavailable:
    """ComfyUI's process lives but did not answer `what`."""
    return ComfyUnavailable(
        f"ComfyUI at {base_url} did not answer {what} ({type(exc).__name__}). "
        "The job was not completed; retry it.",
        refresh_worker=False,
    )


def not_ready(base_url: str, timeout_s: float, last: BaseException | None) -> ComfyUnavailable:
    return ComfyUnavailable(
        f"ComfyUI at {base_url} did not become ready within {timeout_s:g} s "
        f"(last answer: {last}). See the worker log for ComfyUI's start-up output.",
        refresh_worker=True,
    )


def upload_refused(status: int) -> ComfyUnavailable:
    return ComfyUnavailable(
        f"ComfyUI refused the start image upload (HTTP {status}). Retry the job.",
        refresh_worker=False,
    )


def prompt_refused(status: int, body: Any) -> ComfyUnavailable:
    """/prompt answered neither 200 nor 400."""
    return ComfyUnavailable(
        f"ComfyUI answered /prompt with HTTP {status}: {body}. Retry the job.",
        refresh_worker=False,
    )


def format_node_errors(body: dict[str, Any], prompt: dict[str, Any]) -> str:
    """One readable sentence per problem in a /prompt 400 body, naming node, class and input."""
    parts: list[str] = []
    hint = ""
    for node_id, entry in (body.get("node_errors") or {}).items():
        class_type = entry.get("class_type") or prompt.get(node_id, {}).get("class_type", "?")
        for err in entry.get("errors", []):
            input_name = (err.get("extra_info") or {}).get("input_name")
            where = f"node {node_id} ({class_type})" + (
                f" input {input_name}" if input_name else ""
            )
            parts.append(f"{where}: {err.get('message')}: {err.get('details')}")
            if (class_type, input_name) in COMFY_LISTED_MODEL_INPUTS and err.get("type") == (
                "value_not_in_list"
            ):
                hint = (
                    " A model file is missing: check the worker's boot log for the model "
                    "download step and the network volume's free space."
                )
    if not parts:
        error = body.get("error")
        if isinstance(error, dict):
            parts.append(f"{error.get('message')}: {error.get('details')}".rstrip(": "))
        else:
            parts.append(str(error or body))
    return "ComfyUI rejected the workflow: " + "; ".join(parts) + "." + hint


def rejected(body: dict[str, Any], prompt: dict[str, Any]) -> ComfyRejected:
    """/prompt answered 400: the workflow failed ComfyUI's validation."""
    return ComfyRejected(format_node_errors(body, prompt), node_errors=body.get("node_errors"))


def view_failed(filename: str, status: int) -> OutputError:
    return OutputError(
        f"ComfyUI could not serve the finished video {filename} (HTTP {status}); it may have "
        "been removed or the disk is full."
    )


def execution_error(data: dict[str, Any]) -> WorkerError:
    """The worker error for an `execution_error` message (socket or history)."""
    node_id = data.get("node_id", "?")
    node_type = data.get("node_type", "?")
    exc_type = str(data.get("exception_type", "")).rsplit(".", 1)[-1]
    message = str(data.get("exception_message", "")).strip()
    text = f"node {node_id} ({node_type}) failed: {exc_type}: {message}"
    if "No space left on device" in message or "Errno 28" in message:
        return DiskFull(
            f"ComfyUI's disk is full: {text[:600]}. The job was not completed; free space "
            "on the worker (or give it more container disk) and retry.",
            node_id=node_id,
            node_type=node_type,
        )
    if "OutOfMemory" in exc_type or "out of memory" in message.lower():
        return OutOfMemory(
            f"Out of memory in {text}. Lower width and height (for example 480x832), or use a "
            "GPU with more memory.",
            node_id=node_id,
            node_type=node_type,
        )
    return ComfyExecutionError(
        f"ComfyUI {text}", node_id=node_id, node_type=node_type, exception_type=exc_type
    )


def interrupted() -> JobTimeout:
    """ComfyUI reports the prompt interrupted, and the worker did not ask for it."""
    return JobTimeout(
        "ComfyUI interrupted the job before it finished (someone called /interrupt, or "
        "the worker is shutting down). Retry the job."
    )


def history_failure(status: dict[str, Any]) -> WorkerError | None:
    """The error a /history entry's status reports, if any."""
    for kind, data in status.get("messages") or []:
        if kind == "execution_error":
            return execution_error(data)
        if kind == "execution_interrupted":
            return interrupted()
    if status.get("status_str") == "error":
        return ComfyExecutionError("ComfyUI reported an error for the job without details.")
    return None


def no_history() -> OutputError:
    return OutputError(
        "ComfyUI reported the job finished but has no record of it in /history. Retry the job."
    )


def no_video(output_node: str) -> OutputError:
    return OutputError(
        f"ComfyUI finished the job but node {output_node} wrote no video. "
        "Check the worker log for ffmpeg errors."
    )


def deadline_passed(stage: str | None, *, stopped: bool) -> JobTimeout:
    """The job ran past its deadline; `stopped` says whether ComfyUI obeyed the interrupt."""
    where = f" during {stage}" if stage else ""
    if stopped:
        return JobTimeout(
            f"The job did not finish before its deadline{where}; ComfyUI was interrupted. "
            "Raise JOB_TIMEOUT_S, or lower width and height."
        )
    return JobTimeout(
        f"The job did not finish before its deadline{where}, and ComfyUI did not stop when "
        "interrupted; the worker will be replaced.",
        refresh_worker=True,
    )
