"""The benchmark's verdicts against its targets, its tables, and its saved JSON.

The targets: SageAttention's step at most 0.8 x SDPA's, no part of a job outside the sampling
steps above 15% of it, and every job done within the GPU memory budget.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from scripts.gpu_bench.analysis import (
    SAMPLER_STAGES,
    ConfigRecord,
    JobRecord,
    ProgressEvent,
    analyse,
)

STEP_RATIO_TARGET = 0.8  # SageAttention's step at most 0.8 x SDPA's
STAGE_SHARE_TARGET = 0.15  # no stage outside the transformer above 15% of the job


def format_job(job: JobRecord) -> str:
    if not job.ok:
        return f"{job.size} {job.attention} {job.kind}: FAILED: {job.error[:300]}"
    return (
        f"{job.size} {job.attention} {job.kind}: {job.total_s:.1f} s, "
        f"{job.s_per_step} s/step, peak {job.peak_vram_mib} MiB, "
        f"largest outside the steps: {job.worst_part} {job.worst_share:.0%}"
    )


def verdicts(configs: list[ConfigRecord], budget_mib: int) -> dict[str, Any]:
    """The three targets: SageAttention's step at most 0.8 x SDPA's, no part of a job outside
    the sampling steps above 15% of it, and every job done within the memory budget."""
    out: dict[str, Any] = {"step_ratio": {}, "stage_share": {}, "vram": {}}
    steps: dict[tuple[str, str], list[float]] = {}
    samplers: dict[tuple[str, str], list[float]] = {}
    for config in configs:
        for job in config.jobs:
            key = (config.size, config.attention)
            if job.s_per_step is not None:
                steps.setdefault(key, []).append(job.s_per_step)
            if job.ok:
                seconds = sum(job.stages.get(stage, 0.0) for stage in SAMPLER_STAGES)
                samplers.setdefault(key, []).append(seconds)
            if job.ok:
                out["stage_share"][f"{config.size} {config.attention} {job.kind}"] = {
                    "worst": job.worst_part,
                    "share": job.worst_share,
                    "pass": job.worst_share <= STAGE_SHARE_TARGET,
                }
        failed = [job.error for job in config.jobs if not job.ok]
        peak = config.peak_vram_mib
        out["vram"][f"{config.size} {config.attention}"] = {
            "peak_mib": peak,
            "budget_mib": budget_mib,
            "errors": failed,
            "pass": not failed and (budget_mib == 0 or (peak is not None and peak <= budget_mib)),
        }
    for size in sorted({c.size for c in configs}):
        sage, sdpa = steps.get((size, "sage")), steps.get((size, "sdpa"))
        if sage and sdpa:
            ratio = statistics.fmean(sage) / statistics.fmean(sdpa)
            # A second measure, free of the progress events' timing: both sampler stages
            # whole, their setup (moving the expert to the GPU, the LoRA) included.
            stage_sage, stage_sdpa = samplers.get((size, "sage")), samplers.get((size, "sdpa"))
            stage_ratio = (
                round(statistics.fmean(stage_sage) / statistics.fmean(stage_sdpa), 3)
                if stage_sage and stage_sdpa
                else None
            )
            out["step_ratio"][size] = {
                "sage_s": round(statistics.fmean(sage), 3),
                "sdpa_s": round(statistics.fmean(sdpa), 3),
                "ratio": round(ratio, 3),
                "sampler_stages_ratio": stage_ratio,
                "pass": ratio <= STEP_RATIO_TARGET,
            }
    return out


def markdown(configs: list[ConfigRecord], verdict: dict[str, Any]) -> str:
    cols = [
        "load_models",
        "text_encode", "image_encode", "sample_high_noise.setup", "sample_low_noise.setup",
        "vae_decode", "interpolate", "encode_mp4", "other",
    ]  # fmt: skip
    lines = [
        "| size | attention | job | job s | s/step | steps s | "
        + " | ".join(c.replace("sample_", "").replace(".setup", " setup") for c in cols)
        + " | largest outside steps | peak MiB |",
        "|" + "---|" * (9 + len(cols)),
    ]
    for config in configs:
        for job in config.jobs:
            if not job.ok:
                lines.append(
                    f"| {job.size} | {job.attention} | {job.kind} | failed: "
                    f"{job.error[:120]} |" + " |" * (8 + len(cols))
                )
                continue
            steps_s = sum(v for k, v in job.parts.items() if k.endswith(".steps"))
            cells = [f"{job.parts.get(c, 0.0):.1f}" for c in cols]
            lines.append(
                f"| {job.size} | {job.attention} | {job.kind} | {job.total_s:.1f} | "
                f"{job.s_per_step} | {steps_s:.1f} | " + " | ".join(cells) + " | "
                f"{job.worst_part} {job.worst_share:.0%} | {job.peak_vram_mib} |"
            )
    lines += [
        "",
        "| size | SageAttention s/step | SDPA s/step | ratio | sampler stages ratio "
        "| target <= 0.8 |",
        "|---|---|---|---|---|---|",
    ]
    for size, v in verdict["step_ratio"].items():
        ok = "met" if v["pass"] else "missed"
        lines.append(
            f"| {size} | {v['sage_s']} | {v['sdpa_s']} | {v['ratio']} | "
            f"{v['sampler_stages_ratio']} | {ok} |"
        )
    lines += [
        "",
        "| config | ComfyUI start s | idle MiB | peak MiB | budget MiB | fits | stack "
        "| comfy-kitchen backends | cache files before / after |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for config in configs:
        v = verdict["vram"][f"{config.size} {config.attention}"]
        backends = ", ".join(f"{k} {s}" for k, s in sorted(config.kitchen_backends.items()))
        stack = config.stack + (
            f" (conv3d workaround {config.conv3d_workaround})" if config.conv3d_workaround else ""
        )
        cache = config.triton_cache
        files = f"Triton {cache.get('files_before')} / {cache.get('files_after')}" if cache else ""
        after = f" (after {', '.join(config.after_sizes)})" if config.after_sizes else ""
        lines.append(
            f"| {config.size} {config.attention}{after} | {config.comfyui_start_s} | "
            f"{config.idle_vram_mib} | {v['peak_mib']} | {v['budget_mib']} | "
            f"{'yes' if v['pass'] else 'no'} | {stack} | {backends} | {files} |"
        )
    return "\n".join(lines) + "\n"


def save(out: Path, report: dict[str, Any], configs: list[ConfigRecord], budget: int) -> dict:
    verdict = verdicts(configs, budget)
    out.mkdir(parents=True, exist_ok=True)
    report["configs"] = [asdict(c) for c in configs]
    report["verdicts"] = verdict
    (out / "bench_gpu.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
    (out / "bench_gpu.md").write_text(markdown(configs, verdict), encoding="utf-8")
    return report


def load_report(path: Path) -> tuple[dict[str, Any], list[ConfigRecord]]:
    """A saved report, with every job's derived numbers computed again from its events."""
    report = json.loads(path.read_text(encoding="utf-8"))
    configs = []
    for raw in report.get("configs", []):
        jobs = []
        for job in raw.get("jobs", []):
            record = JobRecord(**{**job, "events": [ProgressEvent(**e) for e in job["events"]]})
            analyse(record)
            jobs.append(record)
        known = {f.name for f in fields(ConfigRecord)}  # older runs may carry removed fields
        kept = {k: v for k, v in raw.items() if k in known}
        configs.append(ConfigRecord(**{**kept, "jobs": jobs}))
    return report, configs
