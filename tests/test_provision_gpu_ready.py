"""The CUDA readiness gate, with a stand-in `torch` package whose CUDA state the test controls.

Each probe is a real child interpreter, as in the image; the stand-in reads its behaviour from
FAKE_CUDA and counts probes in FAKE_CUDA_COUNTER.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

FAKE_TORCH = """
import os
__version__ = "0.0-test"
class version:
    cuda = "12.8"
"""

FAKE_CUDA = """
import os
from pathlib import Path

def _attempt():
    counter = Path(os.environ["FAKE_CUDA_COUNTER"])
    n = int(counter.read_text()) + 1 if counter.exists() else 1
    counter.write_text(str(n))
    return n

def is_available():
    mode = os.environ.get("FAKE_CUDA", "ok")
    n = _attempt()
    if mode.startswith("after:"):
        return n >= int(mode.split(":")[1])
    if mode == "raise":
        raise RuntimeError("CUDA driver initialization failed")
    return mode == "ok"

def current_device():
    return 0

def get_device_name(index):
    return "Fake RTX 5090"

def get_device_capability(index):
    return (12, 0)

def device_count():
    return 1

def synchronize():
    pass
"""

FAKE_ZEROS = """
class _T:
    def add_(self, x):
        return self

def zeros(*args, **kwargs):
    return _T()
"""


@pytest.fixture
def fake_torch(tmp_path: Path) -> Path:
    pkg = tmp_path / "fake" / "torch"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(FAKE_TORCH + FAKE_ZEROS + "from torch import cuda\n")
    (pkg / "cuda.py").write_text(FAKE_CUDA)
    return pkg.parent


def gate(fake: Path | None, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("GPU_", "FAKE_"))}
    full["PYTHONPATH"] = os.pathsep.join(p for p in (str(fake) if fake else "", str(ROOT)) if p)
    full["FAKE_CUDA_COUNTER"] = str(tmp_path / "probes")
    full.update(env)
    return subprocess.run(
        [sys.executable, "-m", "wan_worker.gpu_ready"],
        capture_output=True,
        text=True,
        env=full,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )


def probes(tmp_path: Path) -> int:
    return int((tmp_path / "probes").read_text())


def test_ready_gpu_passes_at_once(fake_torch, tmp_path):
    done = gate(fake_torch, tmp_path, FAKE_CUDA="ok")
    assert done.returncode == 0, done.stderr
    assert "[gpu] ready after 1 probe(s)" in done.stdout
    assert "Fake RTX 5090 (compute capability 12.0, 1 device(s))" in done.stdout
    assert probes(tmp_path) == 1


def test_late_gpu_is_waited_for_in_fresh_processes(fake_torch, tmp_path):
    done = gate(fake_torch, tmp_path, FAKE_CUDA="after:3")
    assert done.returncode == 0, done.stderr
    assert "ready after 3 probe(s)" in done.stdout
    assert done.stdout.count("not ready yet") == 2
    assert probes(tmp_path) == 3


def test_gpu_that_never_comes_fails_clearly_within_the_bound(fake_torch, tmp_path):
    done = gate(fake_torch, tmp_path, FAKE_CUDA="raise", GPU_READY_TIMEOUT_S="0")
    assert done.returncode == 1
    assert "[gpu] FAILED: CUDA did not become ready within 0s (1 probes)" in done.stderr
    assert "CUDA driver initialization failed" in done.stderr
    assert "GPU_READY_TIMEOUT_S" in done.stderr
    assert probes(tmp_path) == 1


def test_missing_torch_fails_at_once(tmp_path):
    broken = tmp_path / "broken" / "torch"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text("raise ImportError('libcudart.so.12: cannot open')\n")
    done = gate(broken.parent, tmp_path, GPU_READY_TIMEOUT_S="30")
    assert done.returncode == 1
    assert "PyTorch cannot be imported (libcudart.so.12: cannot open)" in done.stderr
    assert "SKIP_GPU_CHECK=1" in done.stderr


def test_bad_timeout_names_the_variable(fake_torch, tmp_path):
    done = gate(fake_torch, tmp_path, GPU_READY_TIMEOUT_S="soon")
    assert done.returncode == 1
    assert "GPU_READY_TIMEOUT_S='soon' is not a number of seconds" in done.stderr
