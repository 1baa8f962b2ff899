"""A job's progress on stderr, fed by its states and the worker's progress updates.

The worker sends `{"stage", "step", "total", "percent"}` (wan_worker/job_progress.py); RunPod shows
the latest one as `output` of `/status` while the job is `IN_PROGRESS`. The bar's length is
that percent; its label the stage and, while sampling, step/total. Where stderr is not a
terminal, the bar is not drawn: each stage is printed once, as a plain line.
"""

from __future__ import annotations

import time
from typing import Any, TextIO

from tqdm import tqdm

WAITING_LABELS = {
    "IN_QUEUE": "waiting for a worker",
    "IN_PROGRESS": "running",
}


def progress_label(progress: Any) -> tuple[str, float | None]:
    """The label and percent of one progress update; anything unexpected is shown as text."""
    if not isinstance(progress, dict) or "stage" not in progress:
        return str(progress)[:60], None
    label = str(progress["stage"])
    step, total = progress.get("step"), progress.get("total")
    if isinstance(step, int) and isinstance(total, int) and total > 0:
        label += f" {step}/{total}"
    percent = progress.get("percent")
    return label, float(percent) if isinstance(percent, int | float) else None


def is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or closed
        return False


class JobBar:
    """One job's progress on `stream`: a bar on a terminal, plain lines elsewhere, or nothing.

    Off a terminal (a pipe, a file, a CI log) a bar's redrawn frames would pile up as text,
    so each stage is one line instead, when it starts: `00:05 sample_high_noise 27%`.
    """

    def __init__(self, stream: TextIO, enabled: bool = True) -> None:
        self.stream = stream
        self.bar: tqdm[Any] | None = None
        self.lines = enabled and not is_terminal(stream)
        if enabled and not self.lines:
            self.bar = tqdm(
                total=100,
                file=stream,
                mininterval=0,
                leave=True,
                dynamic_ncols=True,
                bar_format="{desc} {percentage:3.0f}%|{bar}| {elapsed}",
            )
        self.started = time.monotonic()
        self.label = ""
        self.stage = ""

    def _show(self, label: str, percent: float | None, stage: str | None = None) -> None:
        """Show `label` (and `percent`); on lines, once per `stage` (default: the label)."""
        stage = label if stage is None else stage
        if self.lines and stage != self.stage:
            elapsed = tqdm.format_interval(time.monotonic() - self.started)
            shown = f" {percent:.0f}%" if percent is not None else ""
            print(f"{elapsed} {stage}{shown}", file=self.stream, flush=True)
        self.stage = stage
        if self.bar is None:
            return
        if percent is not None:
            self.bar.n = max(0.0, min(100.0, percent))
        if label != self.label or percent is not None:
            self.label = label
            self.bar.set_description_str(label, refresh=False)
            self.bar.refresh()

    def state(self, status: str, progress: Any = None) -> None:
        """Show a status answer: the progress update when there is one, else the state."""
        if status == "IN_PROGRESS" and progress is not None:
            label, percent = progress_label(progress)
            known = isinstance(progress, dict) and "stage" in progress
            stage = str(progress["stage"]) if known else label
            self._show(label, percent, stage)
        else:
            self._show(WAITING_LABELS.get(status, status.lower()), None)

    def note(self, label: str) -> None:
        self._show(label, None)

    def close(self, done: bool) -> None:
        if done:
            self._show("done", None if self.lines else 100.0)
        if self.bar is not None:
            self.bar.close()
