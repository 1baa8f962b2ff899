"""The GPU benchmark's torch-free parts: sizes, manifests, step times, verdicts, reports, flags.

Running the benchmark needs a GPU, ComfyUI and the full-size weights; what it derives from the
handler's progress events and stage timings is plain Python and is checked here.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

from scripts.gpu_bench import BenchError, analysis, comfyui, memory, report, weights

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"
MANIFEST = Path(__file__).resolve().parent.parent / "workflows" / "models.json"


def load_script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return load_script("bench_gpu")


def events(stage: str, times: list[float], start: float) -> list:
    """A node start at `start`, then steps 1..n at `times`."""
    out = [analysis.ProgressEvent(start, stage, 0, 0)]
    out += [analysis.ProgressEvent(t, stage, i + 1, len(times)) for i, t in enumerate(times)]
    return out


def job(attention: str, step_s: float, *, ok: bool = True, kind: str = "warm"):
    """A job whose two samplers each take 2 s of setup plus 3 steps of `step_s`."""
    high = events("sample_high_noise", [10 + 2 + step_s * k for k in (1, 2, 3)], 10.0)
    low_start = 12 + 3 * step_s
    low = events("sample_low_noise", [low_start + 2 + step_s * k for k in (1, 2, 3)], low_start)
    stages = {
        "text_encode": 1.0,
        "sample_high_noise": 2 + 3 * step_s,
        "sample_low_noise": 2 + 3 * step_s,
        "vae_decode": 4.0,
        "encode_mp4": 3.0,
    }
    total = sum(stages.values()) + 1.0
    record = analysis.JobRecord(
        "720x1280", attention, kind, ok=ok, total_s=total, stages=stages, events=high + low
    )
    if not ok:
        record.error = "Out of memory in node 420:12"
    analysis.analyse(record)
    return record


def test_parse_size_reads_width_then_height(bench):
    assert bench.parse_size("720x1280") == (720, 1280)
    assert bench.parse_size("480X832") == (480, 832)
    with pytest.raises(argparse.ArgumentTypeError, match="WIDTHxHEIGHT"):
        bench.parse_size("720*1280")


def test_split_manifest_gives_one_readable_manifest_per_model(tmp_path):
    synth = load_script("make_synthetic_weights")
    manifest = json.loads(MANIFEST.read_text())

    paths = weights.split_manifest(manifest, tmp_path)

    assert len(paths) == len(manifest["models"])
    pairs = [synth.read_manifest(path) for path in paths]
    assert all(len(p) == 1 for p in pairs)
    assert [p[0] for p in pairs] == synth.read_manifest(MANIFEST)


def test_step_times_counts_from_node_start_and_skips_gaps():
    stream = events("sample_low_noise", [5.0, 6.5, 9.5], 1.0)
    stream += [analysis.ProgressEvent(20.0, "sample_high_noise", 5, 5)]

    intervals, first = analysis.step_times(stream, "sample_low_noise")
    assert intervals == [1.5, 3.0]
    assert first == 4.0

    gap = [*events("sample_high_noise", [2.0], 1.0)]
    gap.append(analysis.ProgressEvent(4.0, "sample_high_noise", 3, 3))
    assert analysis.step_times(gap, "sample_high_noise") == ([], 1.0)


def test_analyse_uses_the_mean_interval_and_splits_samplers_into_steps_and_setup():
    record = analysis.JobRecord("720x1280", "sage", "warm", ok=True)
    record.events = events("sample_high_noise", [12.0, 15.0, 22.0], 2.0)
    record.stages = {"sample_high_noise": 22.0, "vae_decode": 5.0}
    record.total_s = 30.0

    analysis.analyse(record)

    # async progress: 3 s then 7 s between steps; the mean (5 s) is the step time
    assert record.s_per_step == 5.0
    assert record.parts["sample_high_noise.steps"] == 15.0
    assert record.parts["sample_high_noise.setup"] == 7.0
    assert record.parts["other"] == 3.0
    assert (record.worst_part, record.worst_share) == ("sample_high_noise.setup", 0.2333)


def test_verdicts_compare_sage_with_sdpa_and_check_the_budget():
    fast = analysis.ConfigRecord("720x1280", "sage", peak_vram_mib=30000)
    fast.jobs = [job("sage", 7.0)]
    slow = analysis.ConfigRecord("720x1280", "sdpa", peak_vram_mib=33000)
    slow.jobs = [job("sdpa", 10.0)]

    verdict = report.verdicts([fast, slow], 32607)

    ratio = verdict["step_ratio"]["720x1280"]
    assert (ratio["sage_s"], ratio["sdpa_s"], ratio["ratio"]) == (7.0, 10.0, 0.7)
    assert ratio["sampler_stages_ratio"] == round(23 * 2 / (32 * 2), 3)
    assert ratio["pass"] is True
    assert verdict["vram"]["720x1280 sage"]["pass"] is True
    assert verdict["vram"]["720x1280 sdpa"]["pass"] is False  # over the budget


def test_a_step_ratio_above_target_and_a_failed_job_are_misses():
    sage = analysis.ConfigRecord("480x832", "sage", peak_vram_mib=20000)
    sage.jobs = [job("sage", 9.0)]
    sdpa = analysis.ConfigRecord("480x832", "sdpa", peak_vram_mib=20000)
    sdpa.jobs = [job("sdpa", 10.0), job("sdpa", 10.0, ok=False)]

    verdict = report.verdicts([sage, sdpa], 32607)

    assert verdict["step_ratio"]["480x832"]["pass"] is False
    assert verdict["vram"]["480x832 sdpa"]["pass"] is False
    assert verdict["vram"]["480x832 sdpa"]["errors"] == ["Out of memory in node 420:12"]


def test_saved_report_rebuilds_to_the_same_numbers_and_tables(bench, tmp_path):
    sage = analysis.ConfigRecord("720x1280", "sage", comfyui_start_s=20.0, peak_vram_mib=29000)
    sage.jobs = [job("sage", 7.0, kind="cold"), job("sage", 7.0)]
    sdpa = analysis.ConfigRecord("720x1280", "sdpa", comfyui_start_s=21.0, peak_vram_mib=31000)
    sdpa.jobs = [job("sdpa", 12.0, kind="cold")]
    first = report.save(tmp_path / "a", {"vram_budget_mib": 32607}, [sage, sdpa], 32607)

    assert bench.main(["--from-json", str(tmp_path / "a" / "bench_gpu.json"),
                       "--out", str(tmp_path / "b")]) == 0  # fmt: skip

    again = json.loads((tmp_path / "b" / "bench_gpu.json").read_text())
    assert again["verdicts"] == first["verdicts"]
    assert again["configs"][0]["jobs"][1]["s_per_step"] == 7.0
    table = (tmp_path / "b" / "bench_gpu.md").read_text()
    assert "| 720x1280 | sage | warm |" in table
    assert "| 720x1280 | 7.0 | 12.0 | 0.583 |" in table


def test_arguments_name_what_is_missing(bench, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        bench.parse_args(["--out", str(tmp_path)])
    assert exc.value.code == 2
    assert "--comfyui-dir and --models-root are required" in capsys.readouterr().err

    with pytest.raises(SystemExit):
        bench.parse_args(["--out", str(tmp_path), "--comfyui-dir", str(tmp_path),
                          "--models-root", str(tmp_path)])  # fmt: skip
    assert "has no main.py" in capsys.readouterr().err


def test_memory_peak_is_read_inside_the_job_window():
    sampler = memory.GpuMemorySampler()
    sampler.samples = [(1.0, 500), (2.0, 9000), (3.0, 4000), (4.0, 12000)]

    assert sampler.peak(1.5, 3.5) == 9000
    assert sampler.peak(5.0, 6.0) is None


@pytest.mark.integration
def test_memory_budget_helper_failure_says_how_to_run_without_it():
    # Without torch (as in CI) the helper exits at once, just as it would without a GPU.
    ballast = memory.VramBallast(sys.executable, 32607)
    try:
        import torch  # noqa: F401
    except ImportError:
        with pytest.raises(BenchError, match="pass --vram-budget-mib 0"):
            ballast.start()
        assert ballast.proc is not None and ballast.proc.poll() is not None
    else:
        pytest.skip("torch is installed here; the helper could take a real GPU")


def test_fast_features_join_the_one_fast_flag_comfyui_keeps():
    base = "--fast fp16_accumulation --preview-method none --disable-auto-launch"
    assert comfyui.comfyui_args(base, "--cpu", ["cublas_ops"]) == [
        "--preview-method", "none", "--disable-auto-launch", "--cpu",
        "--fast", "fp16_accumulation", "cublas_ops",
    ]  # fmt: skip
    # A second --fast in the extra flags joins the first instead of replacing it.
    assert comfyui.comfyui_args(base, "--fast autotune", ["fp16_accumulation"])[-3:] == [
        "--fast", "fp16_accumulation", "autotune",
    ]  # fmt: skip
    # A bare --fast enables every feature, and stays bare.
    assert comfyui.comfyui_args("--fast --cpu", "", ["cublas_ops"]) == ["--cpu", "--fast"]
    assert comfyui.comfyui_args("--cpu", "", []) == ["--cpu"]


def test_fast_is_taken_on_the_command_line(bench, tmp_path):
    (tmp_path / "main.py").write_text("")
    args = bench.parse_args(["--out", str(tmp_path), "--comfyui-dir", str(tmp_path),
                             "--models-root", str(tmp_path),
                             "--fast", "cublas_ops", "--fast", "autotune"])  # fmt: skip
    assert args.fast == ["cublas_ops", "autotune"]


def test_the_old_global_fp16_mode_takes_the_per_model_nodes_out():
    from scripts.gpu_bench import jobs
    from tests.comfy_double import load_models
    from tests.comfy_graph_validation import model_file_choices, validate_prompt
    from wan_worker.settings.worker import DEFAULT_WORKFLOW
    from wan_worker.workflow import JobParameters, load_template

    template = load_template(DEFAULT_WORKFLOW)
    params = JobParameters("p", "n", 1, 480, 832)
    prompt = template.build(params, image_name="a.png", output_prefix="x/y", attention="sage")
    old = jobs.without_fp16_nodes(prompt)
    assert "911" not in old and "912" not in old
    assert old["362"]["inputs"]["model"] == ["288", 0]
    assert old["363"]["inputs"]["model"] == ["290", 0]
    object_info = json.loads((MANIFEST.parent.parent / "tests/data/object_info.json").read_text())
    choices = dict(model_file_choices(load_models(MANIFEST)))
    image = {("LoadImage", "image"): lambda v: None}
    assert validate_prompt(old, object_info, choices, image).ok
    without_lora = jobs.bypassed(
        template.build(params, image_name="a.png", output_prefix="x/y", attention="sage"), ["910"]
    )
    assert "910" not in without_lora and without_lora["290"]["inputs"]["model"] == ["908", 0]
    assert validate_prompt(without_lora, object_info, choices, image).ok
    medium = jobs.with_video_format(
        template.build(params, image_name="a.png", output_prefix="x/y", attention="sage"),
        "video/h264-mp4",
    )
    assert medium["906"]["inputs"]["format"] == "video/h264-mp4"
    assert validate_prompt(medium, object_info, choices, image).ok
    offered = object_info["VHS_VideoCombine"]["input"]["required"]["format"][0]
    assert "video/h264-mp4" in offered
    with pytest.raises(BenchError, match=r"--bypass 906: not a node .* with a model input"):
        jobs.bypassed(old, ["906"])
    with pytest.raises(BenchError, match="--bypass 999"):
        jobs.bypassed(old, ["999"])
    args = argparse.Namespace(fast=["cublas_ops"], fp16_accumulation="global")
    assert jobs.fast_features(args) == ["cublas_ops", "fp16_accumulation"]
    args.fp16_accumulation = "workflow"
    assert jobs.fast_features(args) == ["cublas_ops"]
    assert "fp16_accumulation" not in comfyui.DEFAULT_COMFYUI_ARGS


def test_a_report_from_an_older_bench_with_a_removed_field_still_loads(tmp_path):
    """Runs saved before the inductor-cache count was dropped still summarise."""
    sage = analysis.ConfigRecord("480x832", "sage", peak_vram_mib=20000)
    sage.jobs = [job("sage", 2.0, kind="cold"), job("sage", 2.0)]
    report.save(tmp_path, {"vram_budget_mib": 32607}, [sage], 32607)
    saved = json.loads((tmp_path / "bench_gpu.json").read_text())
    saved["configs"][0]["inductor_cache"] = {"dir": "/ic", "files_before": 0}
    (tmp_path / "bench_gpu.json").write_text(json.dumps(saved))

    _, configs = report.load_report(tmp_path / "bench_gpu.json")

    assert [c.size for c in configs] == ["480x832"]
    assert [j.s_per_step for j in configs[0].jobs] == [2.0, 2.0]


def test_video_format_is_taken_on_the_command_line(bench, tmp_path):
    (tmp_path / "main.py").write_text("")
    common = [
        "--out",
        str(tmp_path),
        "--comfyui-dir",
        str(tmp_path),
        "--models-root",
        str(tmp_path),
    ]
    args = bench.parse_args([*common, "--video-format", "video/h264-mp4"])
    assert args.video_format == "video/h264-mp4"
    assert bench.parse_args(common).video_format is None
