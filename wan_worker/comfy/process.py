"""The ComfyUI process beside the handler: is it alive, and if it died, why.

The boot, in the handler's process, starts ComfyUI (`wan_worker.comfy.launch`) and writes its
PID to COMFYUI_PID_FILE and its log to COMFYUI_LOG, so the handler is ComfyUI's parent. A dead
child stays a zombie until it is reaped, and `kill(pid, 0)` succeeds on a zombie, so liveness
is read from /proc and the child is reaped when it is ours.
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

_OOM_PATTERNS = (
    re.compile(r"torch\.OutOfMemoryError|CUDA out of memory|OutOfMemoryError", re.IGNORECASE),
    re.compile(r"Killed|MemoryError|Cannot allocate memory", re.IGNORECASE),
)
_LOG_TAIL_BYTES = 64 * 1024


@dataclass(frozen=True)
class ProcessState:
    alive: bool
    pid: int | None
    detail: str


def _read_pid(pid_file: Path) -> int | None:
    try:
        text = pid_file.read_text(encoding="ascii").strip()
    except (FileNotFoundError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None


def _proc_state(pid: int) -> str | None:
    """The one-letter state from /proc/<pid>/stat, or None if there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name is in parentheses and may itself contain spaces or parentheses.
    return stat.rpartition(")")[2].split()[0]


def _reap(pid: int) -> int | None:
    """Collect a dead child's exit status; None if it is not our child or still running."""
    try:
        done, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return None
    if done == 0:
        return None
    return os.waitstatus_to_exitcode(status)


class ComfyProcess:
    """Liveness and cause of death of the ComfyUI process named by a PID file."""

    def __init__(self, pid_file: Path, log_file: Path) -> None:
        self.pid_file = pid_file
        self.log_file = log_file
        self._exit_code: int | None = None

    def state(self) -> ProcessState:
        pid = _read_pid(self.pid_file)
        if pid is None:
            # No PID file: ComfyUI was started some other way; only HTTP can tell.
            return ProcessState(True, None, "no PID file")
        proc = _proc_state(pid)
        if proc is not None and proc not in ("Z", "X"):
            return ProcessState(True, pid, f"state {proc}")
        code = _reap(pid)
        if code is not None:
            self._exit_code = code
        how = (
            f"exited with status {self._exit_code}"
            if self._exit_code is not None and self._exit_code >= 0
            else f"was killed by signal {-self._exit_code}"
            if self._exit_code is not None
            else "is gone"
        )
        return ProcessState(False, pid, f"ComfyUI (pid {pid}) {how}")

    def log_tail(self, max_bytes: int = _LOG_TAIL_BYTES) -> str:
        with contextlib.suppress(OSError), self.log_file.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - max_bytes))
            return handle.read().decode("utf-8", errors="replace")
        return ""

    def death_cause(self) -> str:
        """A short reason from the log: out of memory, or the last error line."""
        tail = self.log_tail()
        if _OOM_PATTERNS[0].search(tail):
            return "the GPU ran out of memory"
        if self._exit_code == -9 or _OOM_PATTERNS[1].search(tail):
            return "it was killed, most likely for running out of host memory"
        for line in reversed(tail.splitlines()):
            stripped = line.strip()
            if stripped and ("Error" in stripped or "error" in stripped):
                return f"last error in its log: {stripped[:300]}"
        return "its log does not say why"
