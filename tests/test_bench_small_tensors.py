"""scripts/bench_small_tensors.py on a small file: both arms run, and the report names the
file's small tensors and ranges as the boot's pass finds them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.test_boot_small_tensors import expert_layout, write_safetensors
from wan_worker.boot.small_tensors import small_tensors

PROJECT = Path(__file__).resolve().parent.parent


def test_the_bench_times_both_arms_and_reports_the_ranges(tmp_path):
    path = tmp_path / "expert.safetensors"
    write_safetensors(path, expert_layout(2))
    out = tmp_path / "runs.json"
    done = subprocess.run(
        [sys.executable, "scripts/bench_small_tensors.py", "--file", str(path), "--runs", "2",
         "--out", str(out)],
        cwd=PROJECT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    found = small_tensors(path)
    small = sum(1 for _name, size in expert_layout(2) if size < 1 << 20)
    assert f"{small} small tensors in {len(found.ranges)} ranges" in done.stdout
    assert "- stream first: touching the small tensors " in done.stdout
    assert "- small first: touching the small tensors " in done.stdout
    assert "; the pass itself " in done.stdout
    report = json.loads(out.read_text())
    assert report["ranges"] == len(found.ranges) and report["bytes"] == path.stat().st_size
    assert [len(report["runs"][arm]) for arm in ("stream first", "small first")] == [2, 2]
    assert all("pass_s" in run for run in report["runs"]["small first"])
    assert not any("pass_s" in run for run in report["runs"]["stream first"])
