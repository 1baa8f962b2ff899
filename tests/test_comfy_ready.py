"""How soon the worker notices ComfyUI's first answer.

ComfyUI listens only once its imports are done. Until then every readiness try is refused, and
every pause between tries is time that a job which arrived at boot, the readahead's held
experts and the warm-up wait past ComfyUI's answer. Here the ComfyUI double starts as its own
process only after the client has been refused a number of times, as ComfyUI does after its
imports, and the client must have paused no longer than `READY_POLL_S` between any two tries.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support import free_port
from wan_worker.comfy import client as comfy_client
from wan_worker.comfy.client import READY_POLL_S, ComfyClient
from wan_worker.errors import ComfyUnavailable

pytestmark = pytest.mark.integration  # the ComfyUI double in a subprocess

REPO_ROOT = Path(__file__).resolve().parents[1]
REFUSED_TRIES = 12  # well past the point where the old backoff reached its 1 s cap


def double_command(root: Path, port: int) -> list[str]:
    return [sys.executable, "-m", "tests.comfy_double", "--root", str(root), "--port", str(port)]


def record_pauses(
    monkeypatch: pytest.MonkeyPatch, on_pause: Callable[[int], None] = lambda _n: None
) -> list[float]:
    """Every pause the client takes (it still sleeps); `on_pause` hears how many so far."""
    pauses: list[float] = []
    real_sleep = time.sleep

    def recording_sleep(seconds: float) -> None:
        pauses.append(seconds)
        on_pause(len(pauses))
        real_sleep(seconds)

    monkeypatch.setattr(comfy_client.time, "sleep", recording_sleep)
    return pauses


@pytest.fixture
def late_double(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[str, list[float]]]:
    """A URL whose ComfyUI double is launched on the client's REFUSED_TRIES-th pause, and the
    list of every pause the client took."""
    port = free_port()
    started: list[subprocess.Popen[bytes]] = []

    def launch_at_the_last_refusal(count: int) -> None:
        if count == REFUSED_TRIES:
            started.append(
                subprocess.Popen(
                    double_command(tmp_path, port),
                    cwd=REPO_ROOT,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )

    pauses = record_pauses(monkeypatch, launch_at_the_last_refusal)
    try:
        yield f"http://127.0.0.1:{port}", pauses
    finally:
        for proc in started:
            proc.kill()
            proc.wait()


def test_the_first_answer_is_noticed_within_one_short_poll(
    late_double: tuple[str, list[float]],
) -> None:
    url, pauses = late_double

    client = ComfyClient(url)
    client.wait_ready(60.0)

    assert max(pauses) <= READY_POLL_S, f"a pause of {max(pauses)} s between readiness tries"
    assert len(pauses) > REFUSED_TRIES, "the double answered before it was started"
    assert READY_POLL_S <= 0.1
    # Ready is remembered: the next wait asks nothing and pauses nowhere.
    before = len(pauses)
    client.wait_ready(0.0)
    assert len(pauses) == before


def test_a_comfyui_that_never_listens_is_still_an_error_at_the_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    port = free_port()
    pauses = record_pauses(monkeypatch)

    with pytest.raises(ComfyUnavailable) as caught:
        ComfyClient(f"http://127.0.0.1:{port}").wait_ready(0.5)

    assert f"ComfyUI at http://127.0.0.1:{port} did not become ready within 0.5 s" in str(
        caught.value
    )
    assert caught.value.refresh_worker is True
    assert pauses and max(pauses) <= READY_POLL_S
    assert sum(pauses) <= 0.5 + 1e-6  # never sleeps past its deadline
