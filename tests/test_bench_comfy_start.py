"""scripts/bench_comfy_start.py against a stand-in main.py that serves /system_stats.

The stand-in logs ComfyUI's "Import times for custom nodes" block (with its colour codes) and
records the arguments it was started with, so the test checks what the benchmark passes,
times and parses, without ComfyUI.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration  # stand-in ComfyUI processes

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "bench_comfy_start.py"
_spec = importlib.util.spec_from_file_location("bench_comfy_start", SCRIPT)
assert _spec is not None and _spec.loader is not None
bench_comfy_start = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = bench_comfy_start  # dataclasses resolve annotations through it
_spec.loader.exec_module(bench_comfy_start)

FAKE_MAIN = r"""
import argparse, json, os, sys
from http.server import BaseHTTPRequestHandler, HTTPServer

parser = argparse.ArgumentParser()
parser.add_argument("--port", type=int)
parser.add_argument("--listen")
args, _ = parser.parse_known_args()
with open(os.environ["FAKE_ARGS_LOG"], "a") as log:
    log.write(json.dumps(sys.argv[1:]) + "\n")
print("\x1b[32m[INFO]\x1b[0m \nImport times for custom nodes:", flush=True)
print("\x1b[32m[INFO]\x1b[0m    1.2 seconds: /x/custom_nodes/PackA", flush=True)
print("\x1b[32m[INFO]\x1b[0m    0.1 seconds (IMPORT FAILED): /x/custom_nodes/PackB", flush=True)
print("\x1b[32m[INFO]\x1b[0m ", flush=True)
print("\x1b[32m[INFO]\x1b[0m Starting server", flush=True)


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/system_stats" else 404)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


HTTPServer(("127.0.0.1", args.port), Handler).serve_forever()
"""


@pytest.fixture
def fake_comfyui(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "ComfyUI"
    for pack in ("ComfyUI-Frame-Interpolation", "ComfyUI-KJNodes", "ComfyUI-VideoHelperSuite"):
        (root / "custom_nodes" / pack).mkdir(parents=True)
    (root / "main.py").write_text(FAKE_MAIN)
    (root / "comfy" / "__pycache__").mkdir(parents=True)
    monkeypatch.setenv("FAKE_ARGS_LOG", str(tmp_path / "args.jsonl"))
    return root


def test_runs_every_variant_interleaved_and_reports_spreads(fake_comfyui: Path, tmp_path: Path):
    out = tmp_path / "out"
    status = bench_comfy_start.main([
        "--comfyui-dir", str(fake_comfyui), "--python", sys.executable, "--runs", "2",
        "--out", str(out), "--base-args=--cpu", "--variants", "all,selection",
        "--variant", "quiet=--verbose WARNING", "--clear-bytecode", "--importtime",
    ])  # fmt: skip
    assert status == 0
    started = [json.loads(line) for line in (tmp_path / "args.jsonl").read_text().splitlines()]
    # two timed rounds of three variants, then one importtime run each
    assert len(started) == 9
    first_round = [args[args.index("--cpu") :] for args in started[:3]]
    assert first_round[0][:1] == ["--cpu"] and "--disable-all-custom-nodes" not in first_round[0]
    assert first_round[1][:5] == [
        "--cpu", "--disable-all-custom-nodes", "--whitelist-custom-nodes",
        "ComfyUI-Frame-Interpolation", "ComfyUI-KJNodes",
    ]  # fmt: skip
    assert "--disable-api-nodes" in first_round[1]
    assert first_round[2][:3] == ["--cpu", "--verbose", "WARNING"]
    assert all("--database-url" in args for args in started)
    assert not (fake_comfyui / "comfy" / "__pycache__").exists()

    report = json.loads((out / "bench_comfy_start.json").read_text())
    assert list(report["summary"]) == ["all", "selection", "quiet"]
    for stats in report["summary"].values():
        assert stats["n"] == 2 and 0 < stats["min"] <= stats["median"] <= stats["max"] < 60
    assert report["runs"][0]["node_import_s"] == {"PackA": 1.2, "PackB": 0.1}
    assert any(row["module"] == "http.server" for row in report["slowest_imports"]["all"])
    assert (out / "importtime-selection.txt").read_text().count("import time:") > 10
    table = (out / "bench_comfy_start.md").read_text()
    assert table.splitlines()[2].startswith("| all | 2 |")
    assert "| +0.00 |" in table.splitlines()[2]


def test_a_comfyui_that_exits_fails_with_its_log(fake_comfyui: Path, tmp_path: Path):
    (fake_comfyui / "main.py").write_text("print('bad flag'); raise SystemExit(2)\n")
    with pytest.raises(RuntimeError, match=r"ComfyUI exited \(2\): bad flag"):
        bench_comfy_start.main([
            "--comfyui-dir", str(fake_comfyui), "--python", sys.executable, "--runs", "1",
            "--out", str(tmp_path / "out"), "--variants", "all",
        ])  # fmt: skip
