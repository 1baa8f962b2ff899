"""The readahead's first pass over the experts: their small tensors (scales, biases, norms),
which ComfyUI reads when it builds the models, found from the safetensors header and read into
the page cache one range at a time, before the wait for ComfyUI's answer."""

from __future__ import annotations

import json
import os
import shutil
import struct
from pathlib import Path

import pytest

from tests.page_cache import cached_since_drop, drop_from_cache
from wan_worker.boot.readahead import BeforeAnswer, ModelUse, Readahead, ReadaheadReport
from wan_worker.boot.small_tensors import read_ranges, small_tensors
from wan_worker.settings.boot import BootSettings
from wan_worker.settings.worker import WorkerSettings

BIG = 4 << 20  # an fp8 weight's stand-in: larger than SMALL_TENSOR_BYTES


def write_safetensors(path: Path, tensors: list[tuple[str, int]]) -> dict[str, tuple[int, bytes]]:
    """A safetensors file with tensors of these sizes in this order (random bytes); returns
    each tensor's absolute offset in the file and its bytes."""
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, size in tensors:
        header[name] = {"dtype": "U8", "shape": [size], "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    data_start = 8 + len(raw)
    written: dict[str, tuple[int, bytes]] = {}
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as handle:
        handle.write(struct.pack("<Q", len(raw)) + raw)
        at = data_start
        for name, size in tensors:
            blob = os.urandom(size)
            handle.write(blob)
            written[name] = (at, blob)
            at += size
    return written


def expert_layout(blocks: int) -> list[tuple[str, int]]:
    """Like a Wan expert: per linear a big fp8 weight, then its scale and bias; norms between."""
    tensors: list[tuple[str, int]] = [("patch_embedding.bias", 512)]
    for block in range(blocks):
        for linear in ("q", "k"):
            prefix = f"blocks.{block}.self_attn.{linear}"
            tensors += [(f"{prefix}.weight", BIG), (f"{prefix}.scale_weight", 4)]
            tensors += [(f"{prefix}.bias", 1024)]
        tensors += [(f"blocks.{block}.norm3.weight", 1024)]
    return tensors


def test_the_small_tensors_are_found_merged_and_in_file_order(tmp_path):
    path = tmp_path / "expert.safetensors"
    written = write_safetensors(path, expert_layout(2))
    found = small_tensors(path)
    # Every small tensor lies inside one range, and no big weight does.
    for name, (offset, blob) in written.items():
        inside = [r for r in found.ranges if r[0] <= offset and offset + len(blob) <= sum(r)]
        assert len(inside) == (1 if len(blob) < BIG else 0), name
    # A scale and its bias are adjacent: one range. Per block: the q pair (with what precedes
    # it when that is small), then the k pair with the norm after it; 4 MiB weights between.
    assert len(found.ranges) == 1 + 2 + 2
    assert list(found.ranges) == sorted(found.ranges)
    assert found.bytes == sum(size for _name, size in expert_layout(2) if size < BIG)


def test_ranges_closer_than_the_gap_are_read_as_one(tmp_path):
    path = tmp_path / "m.safetensors"
    write_safetensors(path, [("a", 100), ("filler", 30_000), ("b", 100), ("big", BIG), ("c", 4)])
    found = small_tensors(path)
    # "filler" (30 KB) is itself small, so a, filler and b are one range; c is past the big one.
    assert len(found.ranges) == 2
    assert found.ranges[0][1] == 100 + 30_000 + 100
    assert small_tensors(path, max_bytes=20_000, gap=0).ranges[0][1] == 100  # a alone


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"abc", "too short"),
        (struct.pack("<Q", 1 << 40) + b"{}", "no safetensors header"),
        (struct.pack("<Q", 5) + b"nope!", "no safetensors header"),
        (struct.pack("<Q", 2) + b"[]", "no safetensors header"),
        (struct.pack("<Q", 16) + b'{"t": {"a": 1}} ', "no data_offsets"),
    ],
)
def test_a_file_that_is_no_safetensors_file_says_so(tmp_path, content, expected):
    path = tmp_path / "x.safetensors"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=expected):
        small_tensors(path)


@pytest.mark.skipif(shutil.which("fincore") is None, reason="needs util-linux fincore")
def test_only_the_small_tensors_are_read_into_the_page_cache(tmp_path):
    path = tmp_path / "expert.safetensors"
    write_safetensors(path, expert_layout(3))
    drop_from_cache(path)
    found = small_tensors(path)  # reads the header's first page or two
    header_pages = cached_since_drop(path)
    assert read_ranges(path, found.ranges) == found.bytes
    brought_in = cached_since_drop(path) - header_pages
    # Each range brings in its own pages (a folio of up to 64 KiB on some kernels), no more:
    # the 24 MiB of weights stay on disk.
    assert found.bytes <= brought_in <= len(found.ranges) * 2 * (64 << 10)
    assert path.stat().st_size > 24 << 20


USES = [
    ModelUse("text_encode", "text_encoders", "te.safetensors"),
    ModelUse("sample_high_noise", "diffusion_models", "high.safetensors"),
    ModelUse("sample_high_noise", "loras", "lora.safetensors"),  # random bytes
    ModelUse("sample_low_noise", "diffusion_models", "low.safetensors"),
]


def volume(tmp_path: Path) -> list[Path]:
    paths = [tmp_path / use.relpath for use in USES]
    paths[0].parent.mkdir(parents=True)
    paths[0].write_bytes(os.urandom(1_000_000))
    write_safetensors(paths[1], expert_layout(2))
    paths[2].parent.mkdir(parents=True)
    paths[2].write_bytes(os.urandom(100_000))  # named so, but no safetensors file
    write_safetensors(paths[3], expert_layout(2))
    for path in paths:
        drop_from_cache(path)
    return paths


def held_run(
    tmp_path: Path,
    started=lambda _stage: False,
    wait_for_answer=lambda _timeout: True,
    small_tensors_first: bool = True,
) -> tuple[ReadaheadReport, list[tuple[str, dict]]]:
    """The readahead over `volume`: the text encoder within the allowance, then the hold."""
    events: list[tuple[str, dict]] = []
    report = Readahead(
        USES,
        tmp_path,
        budget=10**9,
        started=started,
        mark=lambda name, **kw: events.append((name, kw)),
        before_answer=BeforeAnswer(1_500_000, share=0, wait_for_answer=wait_for_answer),
        small_tensors_first=small_tensors_first,
    ).run()
    return report, events


@pytest.mark.skipif(shutil.which("fincore") is None, reason="needs util-linux fincore")
def test_before_waiting_for_comfyui_the_readahead_reads_the_experts_small_tensors(tmp_path):
    paths = volume(tmp_path)
    at_hold: list[int] = []

    def comfyui_answers(_timeout: float | None) -> bool:
        at_hold.extend(cached_since_drop(p) for p in paths)
        return True

    report, events = held_run(tmp_path, wait_for_answer=comfyui_answers)
    names = [name for name, _ in events]
    assert names[:5] == [
        "readahead_started", "readahead_file", "readahead_small_tensors_skipped",
        "readahead_small_tensors", "readahead_held",
    ]  # fmt: skip
    skipped = events[2][1]
    assert skipped["file"] == "loras/lora.safetensors" and "no safetensors header" in skipped["why"]
    done = events[3][1]
    high, low = small_tensors(paths[1]), small_tensors(paths[3])
    assert (done["files"], done["ranges"]) == (2, len(high.ranges) + len(low.ranges))
    # While the readahead held, each expert had its small tensors in the page cache and not
    # its weights (16 MiB each).
    for index, found in ((1, high), (3, low)):
        assert found.bytes <= at_hold[index] < 1 << 20
    assert [f.outcome for f in report.files] == ["read"] * 4  # then everything, after the answer


def test_an_expert_whose_stage_began_is_not_read_for_its_small_tensors(tmp_path):
    volume(tmp_path)
    _report, events = held_run(tmp_path, started=lambda stage: stage == "sample_high_noise")
    done = dict(events)["readahead_small_tensors"]
    assert done["files"] == 1  # the low-noise expert only
    assert "readahead_small_tensors_skipped" not in dict(events)  # the LoRA's stage had begun


def test_once_comfyui_builds_the_models_the_pass_is_left_out(tmp_path):
    """On a slow disk ComfyUI answers, and a job begins loading the models, before the text
    encoder has been read: reading the small tensors then would only delay the stream."""
    volume(tmp_path)
    report, events = held_run(tmp_path, started=lambda stage: stage == "load_models")
    assert dict(events)["readahead_small_tensors"] == {
        "files": 0,
        "why": "ComfyUI began load_models",
    }
    assert [f.outcome for f in report.files] == ["read"] * 4


@pytest.mark.parametrize("setting", [{"READAHEAD_SMALL_TENSORS": "0"}, {}])
def test_the_small_tensors_pass_has_a_setting(tmp_path, setting):
    volume(tmp_path)
    boot = BootSettings.from_env(WorkerSettings(), setting)
    _report, events = held_run(tmp_path, small_tensors_first=boot.readahead_small_tensors)
    assert ("readahead_small_tensors" in dict(events)) is (setting == {})
