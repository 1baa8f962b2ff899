"""The whole boot in serverless mode, start.sh's first line to the first job's result, on the
ComfyUI double with RunPod's queue on loopback (tests/runpod_queue.py). Not timed: these check
the order of the boot's events (its timeline, read from its log) and what they left behind.
Where the order depends on when ComfyUI answers, the stand-in ComfyUI answers only once the test
has seen what must come first (`hold_comfyui`): the tests wait on events, never on delays.

- ComfyUI is started before the models are verified, and a download still runs after it;
- no job reaches ComfyUI before "models verified", and the queue is not read before it;
- the model files already on the volume are read ahead, in the order a job uses them, and
  end up in the page cache (cachestat(2) and util-linux `fincore` say so);
- the warm-up runs when the worker is idle, a job that arrives meanwhile stops it (ComfyUI
  interrupts its prompt) and runs next; a job in hand at boot means no warm-up at all;
- a worker that cannot get its models takes no job: it stays queued for another worker.
"""

from __future__ import annotations

import base64
import hashlib
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.boot_harness import BootRun, boot_env, hold_comfyui
from tests.page_cache import cached_since_drop, drop_from_cache, resident_bytes
from tests.provision_servers import FlakyFileServer, make_blob, running, write_manifest
from tests.runpod_queue import RunPodQueue
from tests.support import make_png, wait_for
from wan_worker.boot.readahead import first_use_order
from wan_worker.workflow import load_template

# The whole boot: start.sh, the handler, the double, loopback servers.
pytestmark = pytest.mark.integration

PROJECT = Path(__file__).resolve().parent.parent
WORKFLOW = PROJECT / "workflows" / "wan_flf_i2v_api.json"
#: The workflow's model files, in the order a job uses them, with a small stand-in size each.
USES = first_use_order(load_template(WORKFLOW).graph)
DOWNLOADED_AT_BOOT = "vae/wan2.1_vae.safetensors"


def job_input(seed: int = 1) -> dict:
    image = "data:image/png;base64," + base64.b64encode(make_png(200, 120)).decode()
    return {"start_image": image, "prompt": "waves", "width": 176, "height": 128, "seed": seed}


@pytest.fixture
def volume(tmp_path: Path) -> Iterator[tuple[dict, FlakyFileServer]]:
    """A boot environment whose manifest lists the workflow's six files, served from loopback.
    Five are on the volume already, verified by an earlier boot (their markers written by the
    real provisioner) and out of the page cache; the VAE is not, so this boot downloads it,
    while ComfyUI starts: the file server answers only once the stand-in ComfyUI runs, so a
    boot that waited for its models before starting ComfyUI would never get the VAE."""
    if shutil.which("fincore") is None:
        pytest.skip("needs util-linux fincore")
    env = boot_env(tmp_path)
    cdn = tmp_path / "cdn"
    entries = []
    for index, use in enumerate(USES):
        data = make_blob(cdn / use.relpath, 1_000_000 + index * 100_000, seed=index + 1)
        entries.append(
            {
                "folder": use.folder,
                "filename": use.filename,
                "size": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
                "sources": [{"type": "url", "url": f"URL/{use.relpath}"}],
            }
        )
    with running(FlakyFileServer(cdn)) as server:
        for entry in entries:
            entry["sources"][0]["url"] = entry["sources"][0]["url"].replace("URL", server.url)
        earlier = [e for e in entries if f"{e['folder']}/{e['filename']}" != DOWNLOADED_AT_BOOT]
        env["MODELS_MANIFEST"] = str(write_manifest(tmp_path / "earlier.json", earlier))
        root = tmp_path / "volume" / "models"  # the network volume, as the boot resolves it
        subprocess.run(
            [sys.executable, "-m", "wan_worker.provision"],
            env={**env, "MODELS_ROOT": str(root)},
            cwd=PROJECT,
            check=True,
        )
        env["MODELS_MANIFEST"] = str(write_manifest(tmp_path / "models.json", entries))
        comfyui_runs = Path(env["FAKE_COMFY_RECORD"])  # written by the stand-in as it starts
        server.fault.hold_until = comfyui_runs.exists
        for use in USES:
            if use.relpath != DOWNLOADED_AT_BOOT:
                drop_from_cache(root / use.relpath)
                assert resident_bytes(root / use.relpath) == 0
        yield env, server  # type: ignore[misc]


@pytest.fixture
def queue() -> Iterator[RunPodQueue]:
    with RunPodQueue() as server:
        yield server


def serverless(env: dict, queue: RunPodQueue, **extra: str) -> dict:
    return {**env, **queue.env(), **extra}


def test_boot_order_with_a_job_waiting_at_boot(tmp_path, volume, queue):
    env, _server = volume
    job_id = queue.submit(job_input())
    # ComfyUI's imports take 15-30 s, during which the job is taken and the readahead runs: the
    # stand-in answers once both have happened.
    run = BootRun(hold_comfyui(serverless(env, queue), tmp_path), tmp_path)
    try:
        run.wait_event("job_reaches_comfyui")
        run.wait_event("readahead_done")
        run.let_comfyui_answer()
        job = queue.wait(job_id, timeout_s=120)
    finally:
        run.stop()
    assert job.state == "COMPLETED", run.output[-3000:]
    names = run.names()
    at = {name: names.index(name) for name in names}

    # ComfyUI started first; the models were verified after (the VAE's download is answered
    # only once ComfyUI runs), while ComfyUI was already running.
    assert at["boot_started"] < at["models_root"] < at["comfyui_launched"] < at["models_verified"]
    comfy_started = Path(env["FAKE_COMFY_RECORD"]).stat().st_mtime
    assert comfy_started < run.event("models_verified")["t"]
    assert run.event("models_verified")["downloaded"] == 1
    # The queue opened, and the job reached ComfyUI, only once the models were verified.
    assert at["models_verified"] < at["jobs_open"] < at["job_reaches_comfyui"]
    assert at["comfyui_answers"] < names.index("warmup_skipped")
    # The job was in hand before ComfyUI answered: no warm-up.
    assert run.event("warmup_skipped")["reason"] == "a job reached ComfyUI first"
    assert "warmup_started" not in names

    # Readahead: the files already on the volume, in the order a job uses them, into the
    # page cache; the VAE, just downloaded and hashed, was not read again.
    read = [e for e in run.events() if e["event"] == "readahead_file"]
    expected = [u.relpath for u in USES if u.relpath != DOWNLOADED_AT_BOOT]
    assert [e["file"] for e in read] == expected
    assert all(e["outcome"] == "read" for e in read)
    assert at["models_verified"] < at["readahead_started"] < at["readahead_done"]
    root = tmp_path / "volume" / "models"
    for relpath in expected:
        # Each file was read into the page cache whole (some of it may have been reclaimed
        # since: tests/page_cache.py). Before the readahead, none of it was there.
        size = (root / relpath).stat().st_size
        assert cached_since_drop(root / relpath) >= size, relpath


def double_stats(url: str) -> dict:
    return requests.get(f"{url}/__double__/stats", timeout=5).json()


def clear_faults(url: str) -> None:
    requests.post(f"{url}/__double__/fault", json={}, timeout=5).raise_for_status()


def wait_until_sampling(url: str, timeout_s: float = 30) -> None:
    """Until the double runs a prompt (its non-sampling nodes take no time, so it samples)."""
    wait_for(
        lambda: requests.get(f"{url}/queue", timeout=5).json()["queue_running"] or None,
        "the warm-up's prompt running",
        timeout_s=timeout_s,
    )


def test_warmup_runs_while_idle_and_a_job_that_arrives_stops_it(tmp_path, volume, queue):
    env, _server = volume
    # Slow sampling steps (a minute for the warm-up's six): it is mid-sampling when the job
    # comes. ComfyUI's interrupt ends a step at once, and the job's steps are fast again.
    fault = '{"step_delay_s": 10.0}'
    env = serverless(env, queue, COMFYUI_EXTRA_ARGS=f"--fault '{fault}'")
    run = BootRun(env, tmp_path)
    try:
        run.wait_event("warmup_started")
        wait_until_sampling(env["COMFYUI_URL"])
        job_id = queue.submit(job_input())
        run.wait_event("job_reaches_comfyui")
        clear_faults(env["COMFYUI_URL"])
        job = queue.wait(job_id, timeout_s=120)
        preempted = run.wait_event("warmup_preempted")
        stats = double_stats(env["COMFYUI_URL"])
    finally:
        run.stop()
    assert job.state == "COMPLETED", run.output[-3000:]
    names = run.names()
    reached = run.event("job_reaches_comfyui")
    assert reached["preempts_warmup"] is True
    assert names.index("warmup_started") < names.index("job_reaches_comfyui")
    assert names.index("job_reaches_comfyui") < names.index("warmup_preempted")
    assert "warmup_done" not in names
    assert "ComfyUI was interrupted" in preempted["detail"]
    # ComfyUI interrupted the warm-up's prompt, then ran the job's.
    assert stats["prompts_received"] == 2 and len(stats["interrupted"]) == 1
    # Nothing of the warm-up's or the job's stays in ComfyUI's folders.
    comfy = Path(env["COMFYUI_DIR"])
    left = [p for p in (comfy / "input").rglob("*") if p.is_file()]
    left += [p for p in (comfy / "output").rglob("*") if p.is_file()]
    assert left == []


def test_warmup_finishes_when_no_job_comes_and_the_next_job_runs(tmp_path, volume, queue):
    env, _server = volume
    run = BootRun(env | queue.env(), tmp_path)
    try:
        done = run.wait_event("warmup_done")
        job = queue.wait(queue.submit(job_input()), timeout_s=120)
        stats = double_stats(env["COMFYUI_URL"])
    finally:
        run.stop()
    assert job.state == "COMPLETED", run.output[-3000:]
    assert set(done["stages"]) >= {"text_encode", "sample_high_noise", "sample_low_noise"}
    assert run.event("job_reaches_comfyui")["preempts_warmup"] is False
    assert stats["prompts_received"] == 2 and stats["interrupted"] == []
    comfy = Path(env["COMFYUI_DIR"])
    assert [p for p in (comfy / "output").rglob("*") if p.is_file()] == []


def test_warmup_is_off_with_its_setting(tmp_path, volume, queue):
    env, _server = volume
    run = BootRun(serverless(env, queue, WARMUP="0"), tmp_path)
    try:
        run.wait_event("comfyui_answers")
        job = queue.wait(queue.submit(job_input()), timeout_s=120)
    finally:
        run.stop()
    assert job.state == "COMPLETED", run.output[-3000:]
    assert not [n for n in run.names() if n.startswith("warmup")]


def test_readahead_past_its_cap_waits_for_comfyuis_answer(tmp_path, volume, queue):
    """READAHEAD_BEFORE_ANSWER_MB=1: the text encoder's 1.0 MB stand-in is read while ComfyUI
    imports, then the readahead holds; ComfyUI answers once the test has seen the hold, and
    the readahead goes on from there."""
    env = serverless(volume[0], queue, WARMUP="0", READAHEAD_BEFORE_ANSWER_MB="1")
    run = BootRun(hold_comfyui(env, tmp_path), tmp_path)
    try:
        run.wait_event("readahead_held")
        assert "readahead_done" not in run.names()  # held, not finished
        run.let_comfyui_answer()
        run.wait_event("readahead_done")
    finally:
        run.stop()
    names = run.names()
    read = [e["file"] for e in run.events() if e["event"] == "readahead_file"]
    assert read[0] == USES[0].relpath
    assert names.index("readahead_held") < names.index("comfyui_answers")
    assert names.index("comfyui_answers") <= names.index("readahead_resumed")
    before = names[: names.index("readahead_held")]
    assert before.count("readahead_file") == 1  # only the text encoder before the answer
    assert run.event("readahead_held")["mb"] == 1.0
    # The files after the hold were read too, the VAE excepted (just downloaded and hashed).
    assert read == [u.relpath for u in USES if u.relpath != DOWNLOADED_AT_BOOT]


def test_a_worker_without_its_models_takes_no_job(tmp_path, volume, queue):
    env, server = volume
    server.fault.status = 404  # the VAE cannot be downloaded
    job_id = queue.submit(job_input())
    run = BootRun(serverless(env, queue), tmp_path)
    try:
        status = run.wait(timeout_s=120)
    finally:
        run.stop()
    assert status == 3
    assert "vae/wan2.1_vae.safetensors could not be downloaded" in run.stderr
    assert queue.takes == 0 and queue.jobs[job_id].state == "IN_QUEUE"
    assert "jobs_open" not in run.names()
