"""The boot's CUDA check (`wan_worker.boot.cuda_check`), with a stand-in `torch` package whose
CUDA state the test controls.

Each probe is a real child interpreter, as in the image; the stand-in reads its behaviour from
FAKE_CUDA and counts probes in FAKE_CUDA_COUNTER (the child inherits this process's
environment). The boot's use of it, beside ComfyUI's launch, is in tests/test_start_sh.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from wan_worker.boot.cuda_check import BackgroundProbe, probe_once, wait_for_gpu
from wan_worker.errors import ConfigError, GpuNotReady
from wan_worker.settings.cuda import CudaWaitSettings

pytestmark = pytest.mark.integration  # probe processes

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


def on_path(
    monkeypatch: pytest.MonkeyPatch, torch_root: Path, tmp_path: Path, mode: str = "ok"
) -> None:
    """The probes' interpreters import the torch under `torch_root`, in CUDA `mode`."""
    monkeypatch.setenv("PYTHONPATH", str(torch_root))
    monkeypatch.setenv("FAKE_CUDA", mode)
    monkeypatch.setenv("FAKE_CUDA_COUNTER", str(tmp_path / "probes"))


def probes(tmp_path: Path) -> int:
    return int((tmp_path / "probes").read_text())


#: No pause between probes: the tests count probes, not seconds.
NO_PAUSE = CudaWaitSettings(timeout_s=60, interval_s=0)


def test_ready_gpu_passes_at_once(fake_torch, tmp_path, monkeypatch):
    on_path(monkeypatch, fake_torch, tmp_path, "ok")
    lines: list[str] = []
    detail = wait_for_gpu(NO_PAUSE, log=lines.append)
    assert detail == (
        "Fake RTX 5090 (compute capability 12.0, 1 device(s)), torch 0.0-test, CUDA 12.8"
    )
    assert len(lines) == 1 and lines[0].startswith("[gpu] ready after 1 probe(s)")
    assert probes(tmp_path) == 1


def test_late_gpu_is_waited_for_in_fresh_processes(fake_torch, tmp_path, monkeypatch):
    on_path(monkeypatch, fake_torch, tmp_path, "after:3")
    lines: list[str] = []
    wait_for_gpu(NO_PAUSE, log=lines.append)
    assert lines[-1].startswith("[gpu] ready after 3 probe(s)")
    assert sum("not ready yet" in line for line in lines) == 2
    assert probes(tmp_path) == 3


def test_gpu_that_never_comes_fails_clearly_within_the_bound(fake_torch, tmp_path, monkeypatch):
    on_path(monkeypatch, fake_torch, tmp_path, "raise")
    with pytest.raises(GpuNotReady) as caught:
        wait_for_gpu(CudaWaitSettings(timeout_s=0, interval_s=0), log=lambda _line: None)
    message = caught.value.message
    assert message.startswith("CUDA did not become ready within 0s (1 probes)")
    assert "CUDA driver initialization failed" in message
    assert "GPU_READY_TIMEOUT_S" in message
    assert probes(tmp_path) == 1


def test_missing_torch_fails_at_once(tmp_path, monkeypatch):
    broken = tmp_path / "broken" / "torch"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text("raise ImportError('libcudart.so.12: cannot open')\n")
    on_path(monkeypatch, broken.parent, tmp_path)
    with pytest.raises(GpuNotReady) as caught:
        wait_for_gpu(CudaWaitSettings(timeout_s=30, interval_s=0), log=lambda _line: None)
    assert "PyTorch cannot be imported (libcudart.so.12: cannot open)" in caught.value.message
    assert "SKIP_GPU_CHECK=1" in caught.value.message
    result = probe_once(60)
    assert (result.ok, result.fatal) == (False, True)


def test_the_probe_beside_comfyuis_launch_runs_in_a_thread(fake_torch, tmp_path, monkeypatch):
    on_path(monkeypatch, fake_torch, tmp_path, "no")
    result = BackgroundProbe(NO_PAUSE).result()
    assert not result.ok and not result.fatal and result.seconds > 0
    assert result.detail.startswith("torch.cuda.is_available() is False (torch 0.0-test")


def test_bad_timeout_names_the_variable():
    with pytest.raises(ConfigError) as caught:
        CudaWaitSettings.from_env({"GPU_READY_TIMEOUT_S": "soon"})
    assert caught.value.message.startswith("GPU_READY_TIMEOUT_S='soon' is not a number of seconds")
