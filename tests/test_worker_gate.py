"""The worker's gate (`wan_worker.worker_gate`), shared by jobs, the warm-up and the readahead:
the models' state and the boot's failure, the jobs in hand, the warm-up's start and stop,
ComfyUI's first answer."""

from __future__ import annotations

import threading

import pytest

from wan_worker.errors import JobTimeout, ProvisionError
from wan_worker.worker_gate import WorkerGate


def test_the_gate_says_whether_comfyui_has_answered():
    gate = WorkerGate(booting=True)
    assert gate.wait_for_comfyui(0) is False
    assert gate.wait_for_comfyui(0.01) is False
    gate.comfyui_answered()
    assert gate.wait_for_comfyui(0) is True and gate.wait_for_comfyui(None) is True
    failed = WorkerGate(booting=True)
    failed.fail(ProvisionError("no models"))
    assert failed.wait_for_comfyui(None) is True  # nothing left to wait for


def test_a_job_waits_for_the_models_and_gets_the_boots_failure():
    gate = WorkerGate(booting=True)
    with pytest.raises(JobTimeout, match=r"still verifying its models 0\.05 s"):
        gate.wait_models(0.05)
    waiter_error: list[BaseException] = []

    def job() -> None:
        try:
            gate.wait_models(30)
        except ProvisionError as exc:
            waiter_error.append(exc)

    thread = threading.Thread(target=job)
    thread.start()
    gate.fail(ProvisionError("vae could not be downloaded"))
    thread.join(10)
    assert [e.message for e in waiter_error] == ["vae could not be downloaded"]  # type: ignore[attr-defined]
    assert waiter_error[0].refresh_worker  # type: ignore[attr-defined]
    assert gate.wait_settled() is gate.failure


def test_the_warmup_waits_for_jobs_in_hand_and_a_job_reaching_comfyui_stops_it():
    gate = WorkerGate(booting=True)
    gate.models_verified()
    gate.job_arrived()  # a job in hand (validating its input)
    began: list[threading.Event | None] = []
    thread = threading.Thread(target=lambda: began.append(gate.begin_warmup(30)))
    thread.start()
    gate.job_left()  # it failed validation without using ComfyUI: the warm-up may run
    thread.join(10)
    cancel = began[0]
    assert cancel is not None and not cancel.is_set()
    gate.job_arrived()
    gate.reach_comfyui("job-1")
    assert cancel.is_set()
    gate.end_warmup()
    assert gate.begin_warmup(0.01) is None
    assert gate.why_no_warmup() == "a job reached ComfyUI first"


def test_no_warmup_after_the_boot_failed():
    gate = WorkerGate(booting=True)
    gate.fail(ProvisionError("no models"))
    assert gate.begin_warmup(5) is None
    assert gate.why_no_warmup() == "the boot failed"
