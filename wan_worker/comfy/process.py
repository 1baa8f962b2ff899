"""The ComfyUI process beside the handler: is it alive, and if it died, why.

The boot, in the handler's process, starts ComfyUI (`wan_worker.comfy.launch`) and writes its
PID to COMFYUI_PID_FILE and its log to COMFYUI_LOG, so the handler is ComfyUI's parent. A dead
child stays a zombie until it is reaped, and `kill(pid, 0)` succeeds on a zombie, so liveness
is read from /proc and the child is reaped when it is ours.

A PID file can outlive its ComfyUI: one left in /tmp by an earlier run, read by a worker started
outside the image (local mode). A file that names a process which is not running, that this
worker never saw running, and that was written before this worker's process started is such a
left-over: it is ignored, with a warning naming it, and ComfyUI is followed over HTTP alone.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

_OOM_PATTERNS = (
    re.compile(r"torch\.OutOfMemoryError|CUDA out of memory|OutOfMemoryError", re.IGNORECASE),
    re.compile(r"Killed|MemoryError|Cannot allocate memory", re.IGNORECASE),
)
_LOG_TAIL_BYTES = 64 * 1024

log = logging.getLogger(__name__)


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


def _stat_fields(pid: int | str) -> list[str]:
    """The fields of /proc/<pid>/stat after the command name, from field 3 (the state) on;
    none if there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except (FileNotFoundError, ProcessLookupError):
        return []
    # The command name is in parentheses and may itself contain spaces or parentheses.
    return stat.rpartition(")")[2].split()


@functools.cache
def process_started_at() -> float:
    """When this process started, in seconds since the epoch (from /proc: its start in clock
    ticks after the host's boot, and the boot's time)."""
    ticks = int(_stat_fields("self")[22 - 3])  # field 22, starttime
    boot = next(
        int(line.split()[1])
        for line in Path("/proc/stat").read_text(encoding="ascii").splitlines()
        if line.startswith("btime ")
    )
    return boot + ticks / os.sysconf("SC_CLK_TCK")


def _proc_state(pid: int) -> str | None:
    """The one-letter state from /proc/<pid>/stat, or None if there is no such process."""
    fields = _stat_fields(pid)
    return fields[0] if fields else None


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
        self._seen_running: set[int] = set()
        self._left_over: tuple[int, float] | None = None  # (pid, mtime) of one warned about

    def state(self) -> ProcessState:
        pid = _read_pid(self.pid_file)
        if pid is None:
            # No PID file: ComfyUI was started some other way; only HTTP can tell.
            return ProcessState(True, None, "no PID file")
        proc = _proc_state(pid)
        if proc is not None and proc not in ("Z", "X"):
            self._seen_running.add(pid)
            return ProcessState(True, pid, f"state {proc}")
        code = _reap(pid)
        if code is not None:
            self._exit_code = code
        elif self._exit_code is None and self._left_over_file(pid):
            return ProcessState(True, None, f"a left-over PID file ({self.pid_file}) ignored")
        how = (
            f"exited with status {self._exit_code}"
            if self._exit_code is not None and self._exit_code >= 0
            else f"was killed by signal {-self._exit_code}"
            if self._exit_code is not None
            else "is gone"
        )
        return ProcessState(False, pid, f"ComfyUI (pid {pid}, from {self.pid_file}) {how}")

    def _left_over_file(self, pid: int) -> bool:
        """Whether the PID file, naming `pid` (not running, not this process's child), is left
        over from before this worker: warned about once per file."""
        if pid in self._seen_running:
            return False
        try:
            written = self.pid_file.stat().st_mtime
        except OSError:
            return False
        if written >= process_started_at():
            return False
        if self._left_over != (pid, written):
            self._left_over = (pid, written)
            log.warning(
                "COMFYUI_PID_FILE (%s) names pid %d, which is not running, and was written "
                "before this worker started: it is left over from an earlier run, so it is "
                "ignored and ComfyUI at COMFYUI_URL is followed over HTTP alone. Delete the "
                "file, or set COMFYUI_PID_FILE to the file your ComfyUI's launcher writes.",
                self.pid_file,
                pid,
            )
        return True

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
