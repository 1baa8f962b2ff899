"""The files one job leaves in ComfyUI's input and output folders, removed when it ends.

Each job uploads its start image under a unique name and writes its video into its own
output subfolder, so removing them can never touch another job's files or a cached model.
Because the names are unique, they are removed from every folder that may be ComfyUI's: the
configured one (COMFYUI_DIR) and those ComfyUI itself reported (`ComfyClient.known_folders`,
handed in by the caller, so this module needs nothing of the ComfyUI client).
"""

from __future__ import annotations

import logging
import re
import shutil
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

log = logging.getLogger(__name__)

OUTPUT_ROOT = "wan-i2v"

#: ComfyUI's input folders and output folders, as far as it has reported them.
ReportedFolders = tuple[Sequence[Path], Sequence[Path]]


def safe_token(text: object, limit: int = 48) -> str:
    """A file-name-safe form of a job id."""
    token = re.sub(r"[^A-Za-z0-9_-]", "-", str(text))[:limit].strip("-")
    return token or "job"


class JobFiles:
    """Names for one job's files, and their removal (on success and on failure alike)."""

    def __init__(
        self,
        input_dir: Path,
        output_dir: Path,
        job_id: object,
        reported_folders: Callable[[], ReportedFolders] | None = None,
    ) -> None:
        self.input_dir = input_dir.resolve()
        self.output_dir = output_dir.resolve()
        #: ComfyUI's folders as it reports them, asked again at each cleanup.
        self.reported_folders = reported_folders
        self.token = f"{safe_token(job_id)}-{uuid.uuid4().hex[:8]}"
        self.image_name = f"wan-i2v-{self.token}.png"
        self.output_subfolder = f"{OUTPUT_ROOT}/{self.token}"
        self.output_prefix = f"{self.output_subfolder}/clip"
        self.uploaded_as: str | None = None
        #: Prompts this job queued; until ComfyUI has finished them they may still write here.
        self.prompt_ids: list[str] = []

    def new_prompt_id(self) -> str:
        prompt_id = str(uuid.uuid4())
        self.prompt_ids.append(prompt_id)
        return prompt_id

    @staticmethod
    def _inside(path: Path, root: Path) -> bool:
        return path.resolve().is_relative_to(root) and path.resolve() != root

    def roots(self) -> tuple[list[Path], list[Path]]:
        """Every input and output folder that may be ComfyUI's, each once."""
        reported = self.reported_folders
        reported_inputs, reported_outputs = reported() if reported is not None else ((), ())
        inputs = dict.fromkeys([self.input_dir, *(p.resolve() for p in reported_inputs)])
        outputs = dict.fromkeys([self.output_dir, *(p.resolve() for p in reported_outputs)])
        return list(inputs), list(outputs)

    def cleanup(self) -> list[Path]:
        """Remove this job's input image and output folder; return what was removed."""
        removed: list[Path] = []
        inputs, outputs = self.roots()
        targets = [(root / self.output_subfolder, root) for root in outputs]
        if self.uploaded_as:
            targets += [(root / self.uploaded_as, root) for root in inputs]
        for target, root in targets:
            if not self._inside(target, root):
                continue
            try:
                if target.is_dir():
                    shutil.rmtree(target)
                elif target.exists():
                    target.unlink()
                else:
                    continue
            except OSError as exc:
                log.warning("could not remove %s: %s", target, exc)
                continue
            removed.append(target)
        return removed
