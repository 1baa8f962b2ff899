"""The boot's parts on their own: the readahead (order, budget, early stops, the page cache),
the boot's settings, and its events in the log. The gate the boot shares with jobs has
tests/test_worker_gate.py."""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from tests.boot_events import parse_events
from tests.page_cache import cached_since_drop, drop_from_cache, resident_bytes
from wan_worker import logs
from wan_worker.boot.readahead import (
    ModelUse,
    Readahead,
    ReadaheadReport,
    cgroup_headroom_bytes,
    first_use_order,
    mem_available_bytes,
    memory_for_readahead,
)
from wan_worker.boot.timeline import Timeline
from wan_worker.boot.warmup import WarmupPlan
from wan_worker.errors import ConfigError
from wan_worker.settings.boot import BootSettings
from wan_worker.settings.cuda import CudaWaitSettings
from wan_worker.settings.env import REMOVED, EnvVars, removed_still_set
from wan_worker.settings.worker import WorkerSettings
from wan_worker.worker_gate import WorkerGate
from wan_worker.workflow import STAGES, load_template

PROJECT = Path(__file__).resolve().parent.parent
GRAPH = load_template(PROJECT / "workflows" / "wan_flf_i2v_api.json").graph
TRANSCRIPT = PROJECT / "tests" / "data" / "comfyui_transcripts" / "success.json"


# -- the order of first use ------------------------------------------------------------------


def test_files_are_read_in_the_order_the_workflow_first_uses_them():
    assert [(u.stage, u.relpath) for u in first_use_order(GRAPH)] == [
        ("text_encode", "text_encoders/NSFW-Wan-UMT5-XXL_fp8_scaled.safetensors"),
        ("image_encode", "vae/wan2.1_vae.safetensors"),
        ("sample_high_noise", "diffusion_models/smoothMix_v2_WAN2.2_I2V_14B_High_fp8.safetensors"),
        ("sample_high_noise", "loras/WAN2.2_lightx2v_I2V_14B_480p_rank128_bf16.safetensors"),
        ("sample_low_noise", "diffusion_models/DaSiWa_v9_WAN2.2_I2V_14B_Low_fp8.safetensors"),
        ("interpolate", "rife/rife47.pth"),
    ]


def test_that_order_is_the_order_a_real_comfyui_ran_the_stages_in():
    """In a real ComfyUI 0.33.0 run of the workflow (recorded transcript), the stage that
    first uses each file began in the readahead's order."""
    messages = [
        m["message"] for m in json.loads(TRANSCRIPT.read_text())["ws_messages"] if "message" in m
    ]
    executed = [
        m["data"]["node"]
        for m in messages
        if m.get("type") == "executing" and m["data"].get("node")
    ]
    began = {}
    for index, node in enumerate(executed):
        if node in STAGES:
            began.setdefault(STAGES[node], index)
    order = [began[use.stage] for use in first_use_order(GRAPH)]
    assert order == sorted(order)


# -- reading -----------------------------------------------------------------------------------


def out_of_cache(path: Path, size: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(os.urandom(size))
    drop_from_cache(path)
    return path


USES = [
    ModelUse("text_encode", "text_encoders", "te.safetensors"),
    ModelUse("image_encode", "vae", "vae.safetensors"),
    ModelUse("sample_high_noise", "diffusion_models", "high.safetensors"),
]


def recorded_run(
    root: Path, uses: list[ModelUse] = USES, **options: object
) -> tuple[ReadaheadReport, list[tuple[str, dict]]]:
    """One readahead over `uses` under `root` (nothing begun by ComfyUI, budget to spare), with
    the events it marked."""
    events: list[tuple[str, dict]] = []
    settings: dict[str, Any] = {"budget": 10**9, "stage_begun": lambda _stage: False, **options}
    report = Readahead(
        uses, root, mark=lambda name, **kw: events.append((name, kw)), **settings
    ).run()
    return report, events


@pytest.mark.integration
@pytest.mark.skipif(shutil.which("fincore") is None, reason="needs util-linux fincore")
def test_readahead_puts_the_files_in_the_page_cache_in_order(tmp_path):
    paths = [out_of_cache(tmp_path / u.relpath, 3_000_000) for u in USES]
    assert [resident_bytes(p) for p in paths] == [0, 0, 0]
    report, events = recorded_run(tmp_path, chunk_bytes=1 << 20)
    assert [f.outcome for f in report.files] == ["read", "read", "read"]
    assert report.read == 9_000_000 and report.stopped == "every file read"
    assert all(cached_since_drop(p) >= 3_000_000 for p in paths)
    assert [kw["file"] for name, kw in events if name == "readahead_file"] == [
        u.relpath for u in USES
    ]


@pytest.mark.integration
@pytest.mark.skipif(shutil.which("fincore") is None, reason="needs util-linux fincore")
def test_readahead_holds_past_its_allowance_until_comfyui_answers(tmp_path):
    """READAHEAD_BEFORE_ANSWER_MB: the text encoder and the VAE are read while ComfyUI imports;
    the expert only once ComfyUI has answered, so the imports do not queue behind it."""
    paths = [out_of_cache(tmp_path / u.relpath, 1_000_000) for u in USES]
    at_hold: list[int] = []

    def comfyui_answers() -> None:  # the page cache at the hold
        at_hold.extend(cached_since_drop(p) for p in paths[:2])
        at_hold.append(resident_bytes(paths[2]))

    report, events = recorded_run(
        tmp_path, cap_before_answer=2_500_000, wait_for_answer=comfyui_answers
    )
    assert at_hold[0] >= 1_000_000 and at_hold[1] >= 1_000_000
    assert at_hold[2] == 0  # the expert waited for ComfyUI's answer
    assert [f.outcome for f in report.files] == ["read", "read", "read"]
    names = [name for name, _ in events]
    assert names.index("readahead_held") == names.index("readahead_resumed") - 1
    held = names.index("readahead_held")
    assert [kw["file"] for name, kw in events[:held] if name == "readahead_file"] == [
        USES[0].relpath,
        USES[1].relpath,
    ]
    assert events[held][1]["mb"] == round(2_000_000 / 2**20, 1)


def test_a_file_whose_stage_began_while_the_readahead_held_is_left(tmp_path):
    for use in USES:
        out_of_cache(tmp_path / use.relpath, 1_000_000)
    begun: set[str] = set()
    report = Readahead(
        USES,
        tmp_path,
        budget=10**9,
        stage_begun=lambda stage: stage in begun,
        # ComfyUI answered, and a job went straight to the VAE's stage meanwhile.
        cap_before_answer=1_000_000,
        wait_for_answer=lambda: begun.add("image_encode"),
    ).run()
    assert [f.outcome for f in report.files] == [
        "read",
        "skipped: ComfyUI began image_encode",
        "read",
    ]


@pytest.mark.parametrize("cap", [None, 10**9])
def test_within_its_cap_the_readahead_never_waits(tmp_path, cap):
    for use in USES:
        out_of_cache(tmp_path / use.relpath, 1_000)
    waited: list[bool] = []
    report = Readahead(
        USES,
        tmp_path,
        budget=10**9,
        stage_begun=lambda _s: False,
        cap_before_answer=cap,
        wait_for_answer=lambda: waited.append(True),
    ).run()
    assert waited == [] and [f.outcome for f in report.files] == ["read"] * 3


def test_comfyui_building_the_models_does_not_stop_the_readahead(tmp_path):
    """`load_models` is no file's stage: once ComfyUI has begun it (a job or the warm-up, after
    the answer), every file is still read, the held ones included."""
    for use in USES:
        out_of_cache(tmp_path / use.relpath, 1_000)
    report, events = recorded_run(
        tmp_path,
        stage_begun=lambda stage: stage == "load_models",
        cap_before_answer=1_500,
        wait_for_answer=lambda: None,
    )
    assert [f.outcome for f in report.files] == ["read"] * 3
    assert "readahead_held" in [name for name, _ in events]


def test_readahead_stops_at_the_first_file_over_budget(tmp_path):
    for use, size in zip(USES, (1_000_000, 1_000_000, 5_000_000), strict=True):
        out_of_cache(tmp_path / use.relpath, size)
    report = Readahead(USES, tmp_path, budget=3_000_000, stage_begun=lambda _s: False).run()
    assert [f.outcome for f in report.files] == ["read", "read", "skipped: over budget"]
    assert report.read == 2_000_000
    assert "the budget is spent" in report.stopped


def test_readahead_leaves_a_file_comfyui_has_begun_and_skips_what_it_needs_no_more(tmp_path):
    for use in USES:
        out_of_cache(tmp_path / use.relpath, 4_000_000)
    gate = WorkerGate()
    reads = {"n": 0}

    def started(stage: str) -> bool:
        # ComfyUI begins text_encode while the first file is half read.
        reads["n"] += 1
        if reads["n"] > 3:
            gate.stage_started("text_encode")
        return gate.stage_begun(stage)

    report = Readahead(
        USES, tmp_path, budget=10**9, stage_begun=started, already_cached={"vae/vae.safetensors"},
        chunk_bytes=1 << 20,
    ).run()  # fmt: skip
    te, vae, high = report.files
    assert te.outcome == "left: ComfyUI began text_encode" and 0 < te.read < te.size
    assert vae.outcome == "skipped: read by verification at this boot" and vae.read == 0
    assert high.outcome == "read" and high.read == high.size


def test_readahead_ends_once_comfyui_has_begun_every_stage(tmp_path):
    for use in USES:
        out_of_cache(tmp_path / use.relpath, 100_000)
    report = Readahead(USES, tmp_path, budget=10**9, stage_begun=lambda _s: True).run()
    assert report.read == 0 and report.stopped == "ComfyUI has begun every stage"


def test_mem_available_is_read_from_meminfo(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       24684084 kB\nMemAvailable:   23815392 kB\n")
    assert mem_available_bytes(meminfo) == 23815392 * 1024
    assert mem_available_bytes(tmp_path / "none") is None


def write_files(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


MEMINFO = "MemTotal:       263000000 kB\nMemAvailable:   250000000 kB\n"  # a big host


def test_in_a_container_with_a_memory_limit_the_budget_is_the_limits_headroom(tmp_path):
    """/proc/meminfo shows the host; the container's cgroup may charge only up to its limit,
    so past it the readahead would evict what it read itself."""
    meminfo = write_files(tmp_path, {"meminfo": MEMINFO}) / "meminfo"
    v2 = write_files(
        tmp_path / "v2", {"memory.max": "49392123904\n", "memory.current": "3221225472\n"}
    )
    assert cgroup_headroom_bytes(v2) == 49392123904 - 3221225472
    assert memory_for_readahead(meminfo, v2) == (
        49392123904 - 3221225472,
        "the container's memory limit",
    )
    v1 = write_files(
        tmp_path / "v1",
        {"memory/memory.limit_in_bytes": "32212254720\n", "memory/memory.usage_in_bytes": "1000\n"},
    )
    assert memory_for_readahead(meminfo, v1) == (32212254720 - 1000, "the container's memory limit")


@pytest.mark.parametrize(
    "files",
    [
        {"memory.max": "max\n", "memory.current": "3221225472\n"},  # v2, no limit
        {  # v1, no limit: the kernel's largest page-rounded value
            "memory/memory.limit_in_bytes": "9223372036854771712\n",
            "memory/memory.usage_in_bytes": "1000\n",
        },
        {},  # no memory controller to read
        {"memory.max": "1000\n"},  # half of it
    ],
)
def test_without_a_container_limit_the_budget_is_memavailable(tmp_path, files):
    meminfo = write_files(tmp_path, {"meminfo": MEMINFO}) / "meminfo"
    cgroup = write_files(tmp_path / "cg", files)
    assert cgroup_headroom_bytes(cgroup) is None
    assert memory_for_readahead(meminfo, cgroup) == (250000000 * 1024, "MemAvailable")


def test_a_limit_above_memavailable_leaves_memavailable_the_budget(tmp_path):
    meminfo = write_files(tmp_path, {"meminfo": MEMINFO}) / "meminfo"
    cgroup = write_files(tmp_path / "cg", {"memory.max": str(1 << 40), "memory.current": "0"})
    assert memory_for_readahead(meminfo, cgroup) == (250000000 * 1024, "MemAvailable")
    # Neither readable: no readahead at all.
    assert memory_for_readahead(tmp_path / "none", tmp_path / "none") is None
    # Only the cgroup readable: its headroom.
    assert memory_for_readahead(tmp_path / "none", cgroup) == (
        1 << 40,
        "the container's memory limit",
    )


# -- settings ----------------------------------------------------------------------------------


def test_boot_settings_defaults_and_overrides():
    settings = WorkerSettings()
    boot = BootSettings.from_env(settings, {"RUNPOD_ENDPOINT_ID": "e1"})
    assert boot.launch.port == 8188 and boot.warmup is True
    assert (WarmupPlan().width, WarmupPlan().height, WarmupPlan().frames) == (480, 832, 9)
    assert boot.launch.args == ("--preview-method", "none", "--disable-auto-launch")
    elsewhere = WorkerSettings.from_env({"COMFYUI_URL": "http://127.0.0.1:9999"})
    assert BootSettings.from_env(elsewhere, {}).launch.port == 9999  # ComfyUI where it is asked
    local = BootSettings.from_env(settings, {"COMFYUI_EXTRA_ARGS": "--a 'b c'", "WARMUP": ""})
    assert local.warmup is False and local.launch.extra_args == ("--a", "b c")
    pod = BootSettings.from_env(settings, {"RUNPOD_POD_ID": "p", "WARMUP": "1"})
    assert pod.warmup is True
    # The text encoder and the VAE before ComfyUI answers, the experts after (measured best).
    assert boot.readahead_before_answer_bytes == 6800 << 20
    everything = BootSettings.from_env(settings, {"READAHEAD_BEFORE_ANSWER_MB": "100000"})
    assert everything.readahead_before_answer_bytes == 100000 << 20
    cuda = BootSettings.from_env(settings, {"GPU_READY_TIMEOUT_S": "300"}).cuda_check
    assert cuda == CudaWaitSettings(timeout_s=300, interval_s=2, probe_timeout_s=60)
    assert BootSettings.from_env(settings, {"SKIP_GPU_CHECK": "1"}).cuda_check is None


#: Every variable the boot read before issue 23 and no longer reads.
BOOT_VARIABLES_REMOVED = (
    "READAHEAD_SHARE_BEFORE_ANSWER", "READAHEAD_SMALL_TENSORS", "COMFYUI_WAIT_READY",
    "BOOT_EVENTS_FILE", "COMFYUI_PORT", "COMFYUI_ARGS", "EXTRA_MODEL_PATHS", "READAHEAD",
    "WARMUP_SIZE", "WARMUP_FRAMES", "GPU_READY_INTERVAL_S", "GPU_PROBE_TIMEOUT_S",
)  # fmt: skip


@pytest.mark.parametrize("name", BOOT_VARIABLES_REMOVED)
def test_a_removed_boot_variable_is_not_read_and_a_set_one_is_warned_about(name):
    var = EnvVars({})
    BootSettings.from_env(WorkerSettings(), var)
    assert name not in var.kinds
    (warning,) = removed_still_set({name: "1"})
    assert warning.startswith(f"{name} is set but no longer read: ")
    assert len(REMOVED[name]) > 40  # a sentence that says what to do instead


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("WARMUP", "maybe"),
        ("COMFYUI_EXTRA_ARGS", "'x"),
        ("READAHEAD_BEFORE_ANSWER_MB", "-1"),
        ("READAHEAD_BEFORE_ANSWER_MB", "lots"),
        ("GPU_READY_TIMEOUT_S", "soon"),
    ],
)
def test_bad_boot_settings_name_the_variable(name, value):
    with pytest.raises(ConfigError, match=name):
        BootSettings.from_env(WorkerSettings(), {name: value})


# -- the boot's events in its log --------------------------------------------------------------


def test_every_event_reads_back_from_the_log_with_its_values(caplog):
    """The timeline's lines, formatted as the worker's log formats them, read back into the
    values they were written with: texts with spaces, quotes and newlines, texts that look like
    numbers, paths, numbers, flags, dicts."""
    values = {
        "file": "text_encoders/te.safetensors",
        "outcome": "left: ComfyUI began text_encode",
        "error": 'line one\nline "two"\ttabbed',
        "seed": "7",
        "flag_text": "true",
        "empty": "",
        "root": Path("/runpod-volume/models"),
        "mb": 6419.6,
        "files": 5,
        "preempts_warmup": True,
        "nothing": None,
        "stages": {"text_encode": 2.1, "sample high": 3.0},
        "argv": "--listen 127.0.0.1 --port 8188",
    }
    formatter = logging.Formatter(logs.FORMAT)
    caplog.set_level(logging.INFO, logger="wan_worker.boot")
    before = time.time()
    timeline = Timeline()
    timeline.mark("readahead_file", **values)
    timeline.mark("jobs_open")
    text = "".join(formatter.format(record) + "\n" for record in caplog.records)
    text += "2025-01-01 00:00:00,000 INFO other: [boot] +1.0s not_an_event_line"  # unfinished
    first, second = parse_events(text)
    assert first["event"] == "readahead_file" and second == {
        "event": "jobs_open",
        "t": second["t"],
        "elapsed_s": second["elapsed_s"],
    }
    assert {k: v for k, v in first.items() if k not in ("event", "t", "elapsed_s")} == {
        **values,
        "root": "/runpod-volume/models",
    }
    assert before - 1 <= first["t"] <= time.time()  # the log's timestamp, to the millisecond
    # Still plain to read:
    assert 'file=text_encoders/te.safetensors outcome="left: ComfyUI began text_encode"' in text
    assert " mb=6419.6 files=5 preempts_warmup=true " in text
