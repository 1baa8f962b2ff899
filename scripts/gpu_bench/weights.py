"""The benchmark's model files: synthetic weights of the real shapes, written when missing,
one process per file (scripts/make_synthetic_weights.py)."""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from scripts.gpu_bench import BenchError

REPO_ROOT = Path(__file__).resolve().parents[2]
SYNTH_SCRIPT = REPO_ROOT / "scripts" / "make_synthetic_weights.py"
MANIFEST = REPO_ROOT / "workflows" / "models.json"


def split_manifest(manifest: dict[str, Any], folder: Path) -> list[Path]:
    """One manifest file per model, so each model can be written by its own process."""
    paths = []
    for index, entry in enumerate(manifest["models"]):
        path = folder / f"manifest-{index}.json"
        path.write_text(json.dumps({"models": [entry]}), encoding="utf-8")
        paths.append(path)
    return paths


def ensure_weights(
    python: str, size: str, models_root: Path, comfyui_dir: Path, out: Path
) -> float:
    """Write missing synthetic model files, one process per file; return the seconds taken."""
    started = time.monotonic()
    manifest = json.loads(MANIFEST.read_text(encoding="utf-8"))
    log_path = out / "weights.log"
    with tempfile.TemporaryDirectory() as tmp, log_path.open("ab") as log:
        procs = []
        for path in split_manifest(manifest, Path(tmp)):
            command = [
                python, str(SYNTH_SCRIPT), "--size", size,
                "--models-root", str(models_root), "--comfyui-dir", str(comfyui_dir),
                "--manifest", str(path),
            ]  # fmt: skip
            procs.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT))
        failed = [p.args for p in procs if p.wait() != 0]
    if failed:
        raise BenchError(f"writing synthetic weights failed; see {log_path}")
    return round(time.monotonic() - started, 1)
