"""The worker's one exception tree (wan_worker/errors.py) is the tree its docstring draws: every
class in it, with its parent, code, exit status and whether it asks for a new worker; and the
errors that provisioning keeps to itself still read as `provision_failed` if one escaped."""

from __future__ import annotations

import inspect
import re

import pytest

from wan_worker import errors
from wan_worker.errors import (
    ClaimLost,
    ClaimWaitTimeout,
    NoRangeSupport,
    ProvisionError,
    ProvisionSignal,
    RetryableError,
    SourceFailed,
    WorkerError,
    error_result,
)

#: `├── Name   code  *  3  words` in the docstring's drawing, the depth read from the indent.
ROW = re.compile(
    r"^    ((?:[│ ]   )*)(?:[├└]── )?([A-Z]\w+)(?:\s+(\(internal|[a-z_]+))?(\s+\*)?(\s+\d)?"
)


def drawn() -> dict[str, tuple[str | None, str | None, bool, int | None]]:
    """Name -> (parent, code, replaces the worker, exit status), as the docstring draws them."""
    assert errors.__doc__ is not None
    rows: dict[str, tuple[str | None, str | None, bool, int | None]] = {}
    parents: list[str] = []
    for line in errors.__doc__.splitlines():
        found = ROW.match(line)
        if found is None or not line.startswith("    ") or found.group(2) not in vars(errors):
            continue
        depth = len(found.group(1)) // 4 + (0 if found.group(2) == "WorkerError" else 1)
        del parents[depth:]
        code = found.group(3)
        status = found.group(5)
        rows[found.group(2)] = (
            parents[-1] if parents else None,
            None if code is None or code.startswith("(") else code,
            found.group(4) is not None,
            int(status) if status else None,
        )
        parents.append(found.group(2))
    return rows


def worker_errors() -> list[type[WorkerError]]:
    return [
        cls
        for cls in vars(errors).values()
        if inspect.isclass(cls)
        and issubclass(cls, WorkerError)
        and cls.__module__ == errors.__name__
    ]


def test_every_exception_of_the_worker_is_in_the_drawn_tree_as_defined():
    tree = drawn()
    classes = worker_errors()
    assert sorted(tree) == sorted(cls.__name__ for cls in classes)
    for cls in classes:
        parent, code, replaces, status = tree[cls.__name__]
        base = cls.__mro__[1]
        assert parent == (None if cls is WorkerError else base.__name__), cls
        if issubclass(cls, ProvisionSignal):
            continue  # internal: drawn with what it tells the caller to do, not with a code
        assert code == cls.code, cls
        assert replaces is cls.refresh_worker, cls
        if status is not None:
            assert status == cls.exit_status, cls
    # Nothing in the module raises outside the tree: every exception class is a WorkerError.
    loose = [
        name
        for name, cls in vars(errors).items()
        if inspect.isclass(cls)
        and issubclass(cls, BaseException)
        and cls.__module__ == errors.__name__
        and not issubclass(cls, WorkerError)
    ]
    assert loose == []


@pytest.mark.parametrize(
    "signal", [SourceFailed, RetryableError, NoRangeSupport, ClaimLost], ids=lambda c: c.__name__
)
def test_provisionings_own_signals_read_as_provision_failed_if_one_escaped(signal):
    assert issubclass(signal, ProvisionSignal) and issubclass(signal, ProvisionError)
    result = error_result(signal("vae/a.safetensors: HTTP 404 Not Found"))
    assert result["error"] == "provision_failed: vae/a.safetensors: HTTP 404 Not Found"
    assert result["error_code"] == "provision_failed" and result["refresh_worker"] is True
    assert signal.exit_status == 3


def test_a_wait_past_the_bound_is_a_provisioning_failure_as_before():
    timeout = ClaimWaitTimeout("vae/a.safetensors: waited 1801s")
    assert isinstance(timeout, ProvisionError) and not isinstance(timeout, ProvisionSignal)
    assert error_result(timeout)["error"] == "provision_failed: vae/a.safetensors: waited 1801s"
    assert timeout.exit_status == 3
