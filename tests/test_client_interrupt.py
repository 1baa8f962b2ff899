"""wan_worker/client/interrupt.py: a Ctrl-C is remembered even where Python drops it."""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator

import pytest

from wan_worker.client.interrupt import InterruptLatch


@pytest.fixture
def python_sigint() -> Iterator[None]:
    """Python's own SIGINT handler, as in a terminal (a background shell's child ignores it)."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before)


class SignalledWhileCollected:
    """An object whose finalizer receives SIGINT, as a poll's HTTP response can."""

    def __del__(self) -> None:
        signal.raise_signal(signal.SIGINT)  # the handler runs here, inside the finalizer


def test_a_ctrl_c_dropped_inside_a_finalizer_is_still_raised_by_check(
    python_sigint: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    dropped: list[type[BaseException] | None] = []
    monkeypatch.setattr(
        sys, "unraisablehook", lambda unraisable: dropped.append(unraisable.exc_type)
    )
    with InterruptLatch() as latch:
        SignalledWhileCollected()  # collected at once; its KeyboardInterrupt is dropped
        assert dropped == [KeyboardInterrupt]
        with pytest.raises(KeyboardInterrupt):
            latch.check()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_ctrl_c_elsewhere_raises_at_once(python_sigint: None) -> None:
    with InterruptLatch() as latch, pytest.raises(KeyboardInterrupt):
        signal.raise_signal(signal.SIGINT)
    assert latch.interrupted


def test_check_passes_without_a_ctrl_c(python_sigint: None) -> None:
    with InterruptLatch() as latch:
        latch.check()
        assert not latch.interrupted


def test_an_ignored_sigint_stays_ignored() -> None:
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with InterruptLatch() as latch:
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            signal.raise_signal(signal.SIGINT)  # ignored: nothing raised, nothing remembered
            latch.check()
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, before)
