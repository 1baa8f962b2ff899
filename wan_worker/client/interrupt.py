"""Ctrl-C while the client follows a job, remembered so that it cannot be lost.

Python raises KeyboardInterrupt wherever its main thread is when it handles SIGINT. When that is
inside a finalizer (a `__del__`: an HTTP response of the last poll being collected, say), the
exception is printed as "Exception ignored in ..." and dropped, and the client would go on
polling. `InterruptLatch` raises it as Python would and also remembers it; the poll loop calls
`check()` after each step, which raises it again there.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType, TracebackType


class InterruptLatch:
    """While entered, SIGINT raises KeyboardInterrupt and is remembered for `check()`.

    It takes over SIGINT only where Python's own handler is in place, in the main thread: a
    client started with SIGINT ignored (nohup, a background job of a shell) keeps ignoring it.
    """

    def __init__(self) -> None:
        self.interrupted = False
        self._previous: signal.Handlers | object | None = None

    def __enter__(self) -> InterruptLatch:
        if (
            threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler
        ):
            self._previous = signal.signal(signal.SIGINT, self._on_sigint)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)  # type: ignore[arg-type]
            self._previous = None

    def _on_sigint(self, signum: int, frame: FrameType | None) -> None:
        self.interrupted = True
        raise KeyboardInterrupt

    def check(self) -> None:
        """Raise KeyboardInterrupt if a Ctrl-C came, also one that was raised and dropped."""
        if self.interrupted:
            raise KeyboardInterrupt
