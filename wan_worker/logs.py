"""The worker's logging: set up once per process, with secrets taken out of every record.

Each of the worker's processes calls `configure()` first: the handler (rp_handler.py, which
also runs the boot) and the provisioning CLI (`python -m wan_worker.provision`). It gives the
root logger one handler on stderr, and runs the `RedactSecrets` filter on every record as
the record is made, so every record of the process,
the worker's own or a library's (boto3, huggingface_hub, urllib3, the runpod SDK's uvicorn,
whatever handler writes it), carries the values of the secret variables
(`errors.SECRET_ENV_VARS`) replaced: in its message, its arguments and its formatted
traceback. An exception nothing caught, in the main thread or any other, is logged the same
way instead of printed raw by Python.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any

from wan_worker.errors import redact

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_TRACEBACKS = logging.Formatter()
log = logging.getLogger("wan_worker")


class RedactSecrets(logging.Filter):
    """Rewrites each record with every secret's value replaced by `[redacted]`."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # arguments that do not fit the format
            message = f"{record.msg} {record.args!r}"
        redacted = redact(message)
        if redacted != message:  # otherwise msg and args stay as they are, for formatters
            record.msg, record.args = redacted, None
        if record.exc_info and not record.exc_text:
            record.exc_text = _TRACEBACKS.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def configure(level: int = logging.INFO) -> None:
    """One handler on stderr for the whole process, every record redacted, uncaught
    exceptions logged."""
    logging.basicConfig(level=level, format=FORMAT, force=True)
    make_record = logging.getLogRecordFactory()
    if not isinstance(make_record, _RedactingFactory):
        logging.setLogRecordFactory(_RedactingFactory(make_record))
    sys.excepthook = _uncaught
    threading.excepthook = _uncaught_in_thread


class _RedactingFactory:
    """The process's log record factory, with RedactSecrets applied to each record it makes."""

    def __init__(self, make_record: Callable[..., logging.LogRecord]) -> None:
        self._make_record = make_record
        self._redact = RedactSecrets()

    def __call__(self, *args: Any, **kwargs: Any) -> logging.LogRecord:
        record = self._make_record(*args, **kwargs)
        self._redact.filter(record)
        return record


def _uncaught(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, exc, tb)
        return
    log.critical("uncaught exception", exc_info=(kind, exc, tb))


def _uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_value is None or issubclass(args.exc_type, SystemExit):
        return
    name = args.thread.name if args.thread is not None else "?"
    log.critical(
        "uncaught exception in thread %s",
        name,
        exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
    )
