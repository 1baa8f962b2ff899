"""The client prints the result fields README documents as facts, and only unknown ones as they
come. The known fields are wan_worker.client.outcome.OUTPUT_FIELDS, held here to README's
Output section (its examples, and the fields its text names), so the two cannot drift."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.runpod_double import RunPodDouble
from tests.test_client import completed, image, mp4, run_client, runpod  # noqa: F401
from wan_worker.client import ExitCode
from wan_worker.client.outcome import KNOWN_OUTPUT_KEYS, OUTPUT_FIELDS, summary

pytestmark = pytest.mark.integration  # the client against RunPod's API double

PROJECT = Path(__file__).resolve().parent.parent


def readme_output_section() -> str:
    """README's section headed "Output", up to the next heading of its level or above."""
    text = (PROJECT / "docs" / "api.md").read_text()
    head = re.search(r"^(#+) Output\s*$", text, re.M)
    assert head, "docs/api.md has no Output section"
    level = len(head.group(1))
    end = re.compile(rf"^#{{1,{level}}} ", re.M).search(text, head.end())
    return text[head.end() : end.start() if end else len(text)]


def readme_output_examples() -> list[dict[str, Any]]:
    """The JSON examples of the Output section, as objects."""
    blocks = re.findall(r"^```json\n(.*?)^```", readme_output_section(), re.M | re.S)
    assert blocks, "docs/api.md's Output section has no JSON example"
    return [json.loads(block) for block in blocks]


def test_the_known_fields_are_the_ones_readme_documents() -> None:
    section = readme_output_section()
    in_examples = {key for example in readme_output_examples() for key in example}
    named = set(re.findall(r"`([a-z][a-z0-9_]*)`", section))
    assert in_examples - KNOWN_OUTPUT_KEYS == set(), "README shows fields the client lacks"
    assert KNOWN_OUTPUT_KEYS - (in_examples | named) == set(), "README lacks fields it knows"
    assert all(OUTPUT_FIELDS.values())


def known_field_lines(out: str) -> list[str]:
    """Lines printed as `name: value` for a field the client knows (as if it did not)."""
    return [line for line in out.splitlines() if line.split(": ", 1)[0] in KNOWN_OUTPUT_KEYS]


def test_readmes_output_example_prints_as_facts_with_no_field_lines(
    runpod: tuple[RunPodDouble, str],  # noqa: F811
    image: Path,  # noqa: F811
    mp4: bytes,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    double, _ = runpod
    example = readme_output_examples()[0]
    assert example["fp16_accumulation"] is True
    assert example["attention_fallback_reason"] is None
    double.add_script(completed({**example, "video": base64.b64encode(mp4).decode()}))
    out_path = tmp_path / "v.mp4"
    code, out, err = run_client(capsys, str(image), "p", "--out", str(out_path))

    assert code == ExitCode.OK, err
    assert out_path.read_bytes() == mp4
    timings = example["timings"]
    assert out.splitlines() == [
        f"saved {out_path} ({len(mp4):,} bytes, from inline base64)",
        f"seed {example['seed']}, {example['width']}x{example['height']}, "
        f"{example['frames']} frames at {example['fps']:g} fps, "
        f"attention {example['attention']} with fp16 accumulation",
        f"time: worker {timings['total_s']:.1f} s, inference {timings['inference_s']:.1f} s",
    ]


def test_readmes_reencode_example_prints_its_note_once(
    runpod: tuple[RunPodDouble, str],  # noqa: F811
    image: Path,  # noqa: F811
    mp4: bytes,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    double, _ = runpod
    first, reencoded = readme_output_examples()[:2]
    assert reencoded["reencoded"] is True
    result = {**first, **reencoded, "video": base64.b64encode(mp4).decode()}
    double.add_script(completed(result))
    code, out, err = run_client(capsys, str(image), "p", "--out", str(tmp_path / "v.mp4"))

    assert code == ExitCode.OK, err
    assert f"re-encoded: {reencoded['reencode_note']}" in out.splitlines()
    assert known_field_lines(out) == []
    assert out.count(str(reencoded["original_bytes"])) == 1  # in the note only


def test_a_fallback_reads_as_one_and_says_why() -> None:
    output = {
        "seed": 5,
        "attention": "sdpa",
        "fp16_accumulation": False,
        "attention_fallback": True,
        "attention_fallback_reason": "the video was black or flat (81 of 81 frames) with sage "
        "attention and fp16 accumulation, so the job ran again with PyTorch attention and "
        "without fp16 accumulation",
        "upload_error": "s3: AccessDenied",
        "format": "mp4",
        "bytes": 3,
    }
    lines = summary(output, {}, Path("v.mp4"), 3, "inline base64")
    assert lines == [
        "saved v.mp4 (3 bytes, from inline base64)",
        "seed 5, attention sdpa without fp16 accumulation (fallback)",
        f"fallback: {output['attention_fallback_reason']}",
        "upload failed: s3: AccessDenied",
    ]


def test_fields_the_client_does_not_know_are_still_printed() -> None:
    output = {"seed": 5, "fitted": True, "gpu": {"name": "H100"}, "note": None}
    lines = summary(output, {}, Path("v.mp4"), 3, "inline base64")
    assert lines[2:] == ["fitted: true", 'gpu: {"name":"H100"}', "note: null"]
