"""Time ComfyUI's start: from the process's start to the first 200 answer of GET /system_stats.

Each variant is a set of extra ComfyUI arguments on top of the image's defaults. Runs are
interleaved (run 1 of every variant, then run 2, ...) so a change in the machine's load hits
all variants alike; every run gets a fresh database file, as a new container does. For each
run it also reads ComfyUI's own log: the "Import times for custom nodes" and "Prestartup times"
lines. With ``--importtime`` one more run per variant is made under ``python -X importtime`` and
the slowest imports are listed (``importtime.txt`` per variant keeps the raw lines).

Built-in variants (``--variants``, comma-separated, default all three):

* ``all``: ComfyUI's default, every custom node pack under ``custom_nodes/``;
* ``workflow-packs``: only the packs the workflow uses (``wan_worker.node_packs``), through
  ``--disable-all-custom-nodes --whitelist-custom-nodes``;
* ``selection``: what ``wan_worker.node_packs`` gives the boot (the packs, plus
  ``--disable-api-nodes`` when the workflow uses no API node).

``--variant NAME=ARGS`` adds one more (ARGS appended to the image's defaults and ``--cpu`` or
not, as given by ``--base-args``). ``--clear-bytecode`` deletes ComfyUI's ``__pycache__``
folders before every run, as in a container whose ComfyUI sources were never compiled.
Run from the project root with ComfyUI's Python given as ``--python``::

    python scripts/bench_comfy_start.py --comfyui-dir COMFYUI --python VENV/bin/python \
        --runs 5 --out OUT [--base-args="--cpu ..."] [--importtime]

It writes ``OUT/bench_comfy_start.json`` and ``OUT/bench_comfy_start.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import requests

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from wan_worker.node_packs import selection_from_env  # noqa: E402

IMAGE_ARGS = "--fast fp16_accumulation --preview-method none --disable-auto-launch"
TIME_LINE = re.compile(r"^\S*\s*(\d+\.\d+) seconds(?: \((?:IMPORT|PRESTARTUP) FAILED\))?: (.+)$")
IMPORT_LINE = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)$")


@dataclass
class Run:
    variant: str
    seconds: float
    node_import_s: dict[str, float] = field(default_factory=dict)
    prestartup_s: dict[str, float] = field(default_factory=dict)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def clear_bytecode(comfyui_dir: Path) -> None:
    for cache in comfyui_dir.rglob("__pycache__"):
        shutil.rmtree(cache, ignore_errors=True)


def parse_times(log: str) -> tuple[dict[str, float], dict[str, float]]:
    """Per-pack seconds from ComfyUI's 'Import times' and 'Prestartup times' blocks."""
    imports: dict[str, float] = {}
    prestartup: dict[str, float] = {}
    target: dict[str, float] | None = None
    for raw in log.splitlines():
        line = re.sub(r"\x1b\[[0-9;]*m", "", raw).strip()
        if "Import times for custom nodes" in line:
            target = imports
        elif "Prestartup times for custom nodes" in line:
            target = prestartup
        elif target is not None:
            match = TIME_LINE.match(line)
            if match:
                target[Path(match.group(2)).name] = float(match.group(1))
            elif line and not line.endswith("[INFO]"):
                target = None
    return imports, prestartup


def start_once(
    python: str, comfyui_dir: Path, args: list[str], work: Path, importtime: bool = False
) -> tuple[float, str]:
    """Start ComfyUI, wait for /system_stats, stop it; the seconds to answer and its log."""
    port = free_port()
    database = work / "comfyui.db"
    database.unlink(missing_ok=True)
    log_path = work / "comfyui.log"
    command = [python, "-u", *(["-X", "importtime"] if importtime else []), "main.py"]
    command += ["--listen", "127.0.0.1", "--port", str(port), *args]
    if "--database-url" not in args:
        command += ["--database-url", f"sqlite:///{database}"]
    url = f"http://127.0.0.1:{port}/system_stats"
    with log_path.open("wb") as log_file:
        started = time.monotonic()
        proc = subprocess.Popen(command, cwd=comfyui_dir, stdout=log_file, stderr=subprocess.STDOUT)
        try:
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(
                        f"ComfyUI exited ({proc.returncode}): {log_path.read_text()[-3000:]}"
                    )
                try:
                    if requests.get(url, timeout=5).status_code == 200:
                        seconds = time.monotonic() - started
                        break
                except requests.ConnectionError:
                    pass
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=0.05)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    return seconds, log_path.read_text(errors="replace")


def slowest_imports(log: str, top: int) -> list[dict[str, object]]:
    """The `top` imports with the largest cumulative time, from `-X importtime` output."""
    rows = []
    for line in log.splitlines():
        match = IMPORT_LINE.match(line)
        if match:
            depth = (len(match.group(3)) - 1) // 2
            rows.append(
                {
                    "module": match.group(4),
                    "cumulative_s": int(match.group(2)) / 1e6,
                    "depth": depth,
                }
            )
    rows.sort(key=lambda row: -float(row["cumulative_s"]))  # type: ignore[arg-type]
    return rows[:top]


def spread(values: list[float]) -> dict[str, float]:
    return {
        "min": min(values),
        "median": statistics.median(values),
        "max": max(values),
        "n": len(values),
    }


def variants(args: argparse.Namespace) -> dict[str, list[str]]:
    base = shlex.split(args.base_args)
    selection = selection_from_env(
        {"COMFYUI_NODE_PACKS": "workflow"}, args.comfyui_dir
    ).comfyui_args()
    packs_only = [arg for arg in selection if arg != "--disable-api-nodes"]
    builtin = {"all": base, "workflow-packs": base + packs_only, "selection": base + selection}
    chosen = {name: builtin[name] for name in args.variants.split(",") if name}
    for spec in args.variant:
        name, _, extra = spec.partition("=")
        chosen[name] = base + shlex.split(extra)
    return chosen


def markdown(summary: dict[str, dict[str, float]]) -> str:
    lines = [
        "| variant | runs | min s | median s | max s | median vs first |",
        "|---|---|---|---|---|---|",
    ]
    first = None
    for name, stats in summary.items():
        first = stats["median"] if first is None else first
        delta = stats["median"] - first
        lines.append(
            f"| {name} | {stats['n']} | {stats['min']:.2f} | {stats['median']:.2f} | "
            f"{stats['max']:.2f} | {delta:+.2f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--comfyui-dir", type=Path, required=True)
    parser.add_argument("--python", required=True, help="the Python that runs ComfyUI")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--base-args", default=f"--cpu {IMAGE_ARGS}")
    parser.add_argument("--variants", default="all,workflow-packs,selection")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=ARGS")
    parser.add_argument("--clear-bytecode", action="store_true")
    parser.add_argument("--importtime", action="store_true")
    parser.add_argument("--top", type=int, default=30, help="imports listed per variant")
    args = parser.parse_args(argv)
    chosen = variants(args)
    args.out.mkdir(parents=True, exist_ok=True)
    runs: list[Run] = []
    imports: dict[str, list[dict[str, object]]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-comfy-start-") as tmp:
        work = Path(tmp)
        for index in range(args.runs):
            for name, comfy_args in chosen.items():
                if args.clear_bytecode:
                    clear_bytecode(args.comfyui_dir)
                seconds, log = start_once(args.python, args.comfyui_dir, comfy_args, work)
                node_s, pre_s = parse_times(log)
                runs.append(Run(name, seconds, node_s, pre_s))
                print(f"run {index + 1} {name}: {seconds:.2f} s", file=sys.stderr, flush=True)
        if args.importtime:
            for name, comfy_args in chosen.items():
                if args.clear_bytecode:
                    clear_bytecode(args.comfyui_dir)
                _, log = start_once(args.python, args.comfyui_dir, comfy_args, work, True)
                (args.out / f"importtime-{name}.txt").write_text(log)
                imports[name] = slowest_imports(log, args.top)
    summary = {
        name: spread([run.seconds for run in runs if run.variant == name]) for name in chosen
    }
    report = {
        "comfyui_dir": str(args.comfyui_dir),
        "python": args.python,
        "cpus": os.cpu_count(),
        "clear_bytecode": args.clear_bytecode,
        "variants": {name: shlex.join(comfy_args) for name, comfy_args in chosen.items()},
        "summary": summary,
        "runs": [asdict(run) for run in runs],
        "slowest_imports": imports,
    }
    (args.out / "bench_comfy_start.json").write_text(json.dumps(report, indent=1) + "\n")
    table = markdown(summary)
    (args.out / "bench_comfy_start.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
