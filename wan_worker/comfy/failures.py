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
    JobCancelled,
    JobTimeout,
    OutOfMemory,
    OutputError,
    SageAttentionFailed,
    WorkerError,
)
from wan_worker.node_classes import (
    COMFY_LISTED_MODEL_INPUTS,
    SAGE_ATTENTION_PATCH,
    VIDEO_FORMAT_INPUT,
)

#: Traceback text that places a failure inside SageAttention: its package, or KJNodes' wrapper
#: around it (attention_sage -> sage_func -> sageattn...).
SAGE_FRAMES = ("/sageattention/", "sageattn", "attention_sage", "get_sage_func", "in sage_func")
#: Failures that say SageAttention cannot run on this GPU at all: no kernel built for it.
SAGE_LOAD_FAILURES = (
    "no kernel image is available",
    "kernel is not available",
    "Unsupported CUDA architecture",
    "invalid device function",
)
#: CUDA errors after which the process's CUDA context is unusable: every later CUDA call in
#: that ComfyUI fails, so neither a retry nor the next job can run there.
STICKY_CUDA_ERRORS = (
    "illegal memory access",
    "unspecified launch failure",
    "misaligned address",
    "illegal instruction",
    "device-side assert triggered",
    "hardware stack error",
    "uncorrectable ECC error",
)


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


def refused(base_url: str, when: str) -> ComfyUnavailable:
    """Nothing listens at ComfyUI's address any more: its process has ended. `when`: "for
    the image upload", "while the job ran"."""
    return ComfyUnavailable(
        f"ComfyUI at {base_url} refused the connection {when}: nothing listens there, "
        "so ComfyUI is no longer running (it exited or was killed). The job was not "
        "completed; start ComfyUI again and retry it (on RunPod the worker is replaced).",
        refresh_worker=True,
    )


def stopped_answering(base_url: str, silent_s: float, process: str | None) -> ComfyUnavailable:
    """ComfyUI accepts connections but has sent nothing for `silent_s` seconds."""
    if process is not None and process.endswith(("state T", "state t")):
        how = f"its process is stopped ({process}), as by SIGSTOP"
    elif process is not None:
        how = f"its process lives ({process}) but does not answer: it hangs"
    else:
        how = (
            "it accepts connections but answers nothing, as a stopped (SIGSTOP) or hung "
            "process does"
        )
    return ComfyUnavailable(
        f"ComfyUI at {base_url} stopped answering: nothing on its websocket and no answer to "
        f"HTTP for {silent_s:.0f} s; {how}. The job was not completed; the worker will be "
        "replaced (in local mode, restart ComfyUI).",
        refresh_worker=True,
    )


def not_comfyui(base_url: str, answer: str, server: str | None) -> ComfyUnavailable:
    """Something answers at COMFYUI_URL, but not as ComfyUI does."""
    who = f" from a server that calls itself {server!r}" if server else ""
    return ComfyUnavailable(
        f"Something answers at COMFYUI_URL ({base_url}) but it is not ComfyUI: GET "
        f"/system_stats got {answer}{who}. Another program may hold the port: stop it, or "
        "run ComfyUI on a free port and set COMFYUI_URL to it.",
        refresh_worker=True,
    )


def not_ready(base_url: str, timeout_s: float, last: str, *, launched: bool) -> ComfyUnavailable:
    """ComfyUI did not answer within `timeout_s`; `launched`: this worker started it."""
    where = (
        "See the worker log for ComfyUI's start-up output."
        if launched
        else "Start ComfyUI there, or set COMFYUI_URL to where it runs."
    )
    return ComfyUnavailable(
        f"ComfyUI at {base_url} did not become ready within {timeout_s:g} s "
        f"(last answer: {last}). {where}",
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
            if err.get("type") != "value_not_in_list":
                continue
            if (class_type, input_name) in COMFY_LISTED_MODEL_INPUTS:
                hint = (
                    " A model file is missing: check the worker's boot log for the model "
                    "download step and the network volume's free space."
                )
            elif (class_type, input_name) == VIDEO_FORMAT_INPUT:
                hint = (
                    " This ComfyUI lacks the workflow's MP4 format: start it with the worker's "
                    "extra_model_paths.yaml (--extra-model-paths-config), which adds "
                    "workflows/video_formats/."
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


def _sage_failure(
    data: dict[str, Any], node_id: str, node_type: str, exc_type: str, message: str
) -> SageAttentionFailed | None:
    """The SageAttention failure an `execution_error` reports, if it is one."""
    trace = "".join(str(line) for line in data.get("traceback") or [])
    if node_type != SAGE_ATTENTION_PATCH and not any(mark in trace for mark in SAGE_FRAMES):
        return None
    first_line = message.splitlines()[0] if message else ""
    load = node_type == SAGE_ATTENTION_PATCH or exc_type in ("ImportError", "ModuleNotFoundError")
    load = load or any(mark in message for mark in SAGE_LOAD_FAILURES)
    sticky = any(mark in message for mark in STICKY_CUDA_ERRORS)
    what = "could not load" if load else "failed in its kernel"
    reason = f"SageAttention {what} (node {node_id} {node_type}: {exc_type}: {first_line})"
    if sticky:
        return SageAttentionFailed(
            f"{reason}. The CUDA error leaves this worker's GPU unusable, so the job cannot "
            "run again here; the worker will be replaced. Retry the job; set ATTENTION=sdpa if "
            "it repeats.",
            reason=reason,
            load_failure=False,
            refresh_worker=True,
            node_id=node_id,
            node_type=node_type,
            exception_type=exc_type,
        )
    return SageAttentionFailed(
        f"{reason}. Set ATTENTION=sdpa, or ATTENTION_FALLBACK=1 to run such jobs again with "
        "PyTorch attention.",
        reason=reason,
        load_failure=load,
        node_id=node_id,
        node_type=node_type,
        exception_type=exc_type,
    )


def execution_error(data: dict[str, Any]) -> WorkerError:
    """The worker error for an `execution_error` message (socket or history)."""
    node_id = str(data.get("node_id", "?"))
    node_type = str(data.get("node_type", "?"))
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
    sage = _sage_failure(data, node_id, node_type, exc_type, message)
    if sage is not None:
        return sage
    if "CUDA error" in message and any(mark in message for mark in STICKY_CUDA_ERRORS):
        return ComfyExecutionError(
            f"ComfyUI {text[:600]}. This CUDA error leaves the worker's GPU unusable; the worker "
            "will be replaced. Retry the job.",
            refresh_worker=True,
            node_id=node_id,
            node_type=node_type,
            exception_type=exc_type,
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


def cancelled_waiting() -> JobCancelled:
    """The job was stopped before ComfyUI first answered: it never reached ComfyUI."""
    return JobCancelled(
        "The job was stopped while it waited for ComfyUI to answer; nothing was left running."
    )


def cancelled(stage: str | None, *, stopped: bool) -> JobCancelled:
    """The run was stopped from outside (RunPod stopped the job, or a job preempted the
    warm-up); `stopped` says whether ComfyUI obeyed the interrupt."""
    where = f" during {stage}" if stage else ""
    if stopped:
        return JobCancelled(f"The job was stopped{where}; ComfyUI was interrupted.")
    return JobCancelled(
        f"The job was stopped{where}, and ComfyUI did not stop when interrupted; the worker "
        "will be replaced.",
        refresh_worker=True,
    )
