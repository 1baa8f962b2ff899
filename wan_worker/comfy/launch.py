"""Start the ComfyUI process the worker runs beside it.

The command is `COMFYUI_PYTHON -u COMFYUI_MAIN --listen ... --port ... --extra-model-paths-config
extra_model_paths.yaml`, then the worker's own flags (`settings.boot.COMFYUI_ARGS`), the
custom-node arguments (`node_args`), then COMFYUI_EXTRA_ARGS (so the operator's extra flags come
last and win). ComfyUI runs in COMFYUI_DIR with MODELS_ROOT in its environment
(extra_model_paths.yaml reads `${MODELS_ROOT}`);
its PID goes to COMFYUI_PID_FILE and its output, through `tee`, both to COMFYUI_LOG (read by
`wan_worker.comfy.process` to say why it died) and to the container's log. `tee` is a process
of its own, so ComfyUI's output keeps flowing whatever the worker's Python is doing.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path

from wan_worker.settings.boot import ComfyLaunchSettings


def comfyui_command(spec: ComfyLaunchSettings, node_args: tuple[str, ...] = ()) -> list[str]:
    """ComfyUI's command line: the launch settings' arguments, then `node_args`, then the
    operator's COMFYUI_EXTRA_ARGS (last, so they win)."""
    return [
        spec.python, "-u", str(spec.main), "--listen", spec.listen, "--port", str(spec.port),
        "--extra-model-paths-config", str(spec.extra_model_paths),
        *spec.args, *node_args, *spec.extra_args,
    ]  # fmt: skip


class LaunchedComfy:
    """The ComfyUI process (and its `tee`) started by `launch`."""

    def __init__(self, proc: subprocess.Popen[bytes], tee: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.tee = tee

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self, timeout_s: float = 15.0) -> None:
        """Terminate ComfyUI (then kill it if it lingers); its `tee` ends with its output."""
        for proc in (self.proc, self.tee):
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.terminate()
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def launch(
    spec: ComfyLaunchSettings, models_root: Path, node_args: tuple[str, ...] = ()
) -> LaunchedComfy:
    """Start ComfyUI now; return without waiting for it to answer."""
    for path in (spec.log_file, spec.pid_file):
        path.parent.mkdir(parents=True, exist_ok=True)
    spec.log_file.write_bytes(b"")
    spec.pid_file.unlink(missing_ok=True)
    tee = subprocess.Popen(["tee", "-a", str(spec.log_file)], stdin=subprocess.PIPE)
    assert tee.stdin is not None  # noqa: S101 - stdin=PIPE always gives one
    env = {**os.environ, "MODELS_ROOT": str(models_root)}
    try:
        proc = subprocess.Popen(
            comfyui_command(spec, node_args),
            cwd=spec.comfyui_dir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=tee.stdin,
            stderr=subprocess.STDOUT,
        )
    finally:
        tee.stdin.close()  # ComfyUI holds the pipe now; tee ends when ComfyUI's output does
    spec.pid_file.write_text(str(proc.pid), encoding="ascii")
    return LaunchedComfy(proc, tee)
