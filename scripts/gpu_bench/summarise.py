"""Spreads over several benchmark runs: min / median / max of every figure, per group of runs.

An A/B on one host is several runs of ``scripts/bench_gpu.py`` in turn (e.g. B C C B); this
reads their ``bench_gpu.json`` files and gives, per group and size, the warm jobs' figures
(whole job, seconds per step, the steps, each sampler's setup, every stage outside them) and
the cold jobs' and ComfyUI starts, each as ``min / median / max`` over all runs of the group::

    python scripts/gpu_bench/summarise.py --group B OUT-B1 OUT-B2 --group C OUT-C1 OUT-C2

(a run is its ``--out`` folder or its ``bench_gpu.json``). ``--json FILE`` writes the numbers.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `scripts.gpu_bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from scripts.gpu_bench.analysis import ConfigRecord, JobRecord
from scripts.gpu_bench.report import load_report

PARTS = (
    ("steps", "steps"),
    ("high setup", "sample_high_noise.setup"),
    ("low setup", "sample_low_noise.setup"),
    ("text_encode", "text_encode"),
    ("image_encode", "image_encode"),
    ("vae_decode", "vae_decode"),
    ("interpolate", "interpolate"),
    ("encode_mp4", "encode_mp4"),
    ("other", "other"),
)


def spread(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {
        "n": len(values),
        "min": round(min(values), 3),
        "median": round(statistics.median(values), 3),
        "max": round(max(values), 3),
    }


def cell(value: dict[str, float] | None, digits: int = 1) -> str:
    if value is None:
        return ""
    if value["n"] == 1:
        return f"{value['min']:.{digits}f}"
    return f"{value['min']:.{digits}f} / {value['median']:.{digits}f} / {value['max']:.{digits}f}"


def part(job: JobRecord, key: str) -> float | None:
    if key == "steps":
        return sum(v for k, v in job.parts.items() if k.endswith(".steps"))
    return job.parts.get(key)


def summarise(configs: list[ConfigRecord]) -> dict[str, Any]:
    """One group's runs of one size: every figure's spread."""
    warm = [j for c in configs for j in c.jobs if j.ok and j.kind == "warm"]
    cold = [j for c in configs for j in c.jobs if j.ok and j.kind == "cold"]
    out: dict[str, Any] = {
        "runs": len(configs),
        "failed_jobs": [j.error[:200] for c in configs for j in c.jobs if not j.ok],
        "warm_job_s": spread([j.total_s for j in warm]),
        "s_per_step": spread([j.s_per_step for j in warm if j.s_per_step is not None]),
        "cold_job_s": spread([j.total_s for j in cold]),
        "cold_s_per_step": spread([j.s_per_step for j in cold if j.s_per_step is not None]),
        "comfyui_start_s": spread([c.comfyui_start_s for c in configs]),
        "peak_vram_mib": spread([float(c.peak_vram_mib) for c in configs if c.peak_vram_mib]),
        "warm_parts": {},
        "cold_parts": {},
    }
    for name, key in PARTS:
        values = [v for j in warm if (v := part(j, key)) is not None]
        out["warm_parts"][name] = spread(values)
        values = [v for j in cold if (v := part(j, key)) is not None]
        out["cold_parts"][name] = spread(values)
    return out


def load_group(runs: list[Path]) -> dict[str, list[ConfigRecord]]:
    """A group's configurations by size and attention ("720x1280 sage")."""
    by_config: dict[str, list[ConfigRecord]] = {}
    for run in runs:
        path = run / "bench_gpu.json" if run.is_dir() else run
        _, configs = load_report(path)
        for config in configs:
            by_config.setdefault(f"{config.size} {config.attention}", []).append(config)
    return by_config


def markdown(table: dict[str, dict[str, dict[str, Any]]]) -> str:
    head = ["group", "config", "runs", "warm job s", "s/step", *[n for n, _ in PARTS]]
    head += ["cold job s", "cold s/step", "ComfyUI start s", "peak GPU MiB"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for group, configs in table.items():
        for config, s in configs.items():
            row = [group, config, str(s["runs"]), cell(s["warm_job_s"]), cell(s["s_per_step"], 2)]
            row += [cell(s["warm_parts"][n]) for n, _ in PARTS]
            row += [cell(s["cold_job_s"]), cell(s["cold_s_per_step"], 2)]
            row += [cell(s["comfyui_start_s"]), cell(s["peak_vram_mib"], 0)]
            lines.append("| " + " | ".join(row) + " |")
    lines += ["", "Each cell: min / median / max over the group's jobs (one value: one job)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--group",
        nargs="+",
        action="append",
        required=True,
        metavar=("NAME", "RUN"),
        help="a group's name, then its runs (--out folders or bench_gpu.json files)",
    )
    parser.add_argument("--json", type=Path, help="write the spreads here")
    args = parser.parse_args(argv)
    table: dict[str, dict[str, dict[str, Any]]] = {}
    for name, *runs in args.group:
        if not runs:
            parser.error(f"--group {name}: no runs")
        groups = load_group([Path(r) for r in runs])
        table[name] = {config: summarise(configs) for config, configs in groups.items()}
    if args.json is not None:
        args.json.write_text(json.dumps(table, indent=1), encoding="utf-8")
    print(markdown(table), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
