"""A progress bar on stderr fed by the job's states and the worker's progress updates.

The worker sends `{"stage", "step", "total", "percent"}` (wan_worker/job_progress.py); RunPod shows
the latest one as `output` of `/status` while the job is `IN_PROGRESS`. The bar's length is
that percent; its label the stage and, while sampling, step/total.
"""

from __future__ import annotations

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


class JobBar:
    """One job's bar; a no-op when disabled."""

    def __init__(self, stream: TextIO, enabled: bool = True) -> None:
        self.bar = tqdm(
            total=100,
            file=stream,
            disable=not enabled,
            mininterval=0,
            leave=True,
            dynamic_ncols=True,
            bar_format="{desc} {percentage:3.0f}%|{bar}| {elapsed}",
        )
        self.label = ""

    def _show(self, label: str, percent: float | None) -> None:
        if percent is not None:
            self.bar.n = max(0.0, min(100.0, percent))
        if label != self.label or percent is not None:
            self.label = label
            self.bar.set_description_str(label, refresh=False)
            self.bar.refresh()

    def state(self, status: str, progress: Any = None) -> None:
        """Show a status answer: the progress update when there is one, else the state."""
        if status == "IN_PROGRESS" and progress is not None:
            self._show(*progress_label(progress))
        else:
            self._show(WAITING_LABELS.get(status, status.lower()), None)

    def note(self, label: str) -> None:
        self._show(label, None)

    def close(self, done: bool) -> None:
        if done:
            self._show("done", 100.0)
        self.bar.close()
