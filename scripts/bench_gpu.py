"""Time the fixed workflow on a GPU with full-size synthetic weights: SageAttention vs SDPA.

For every size and attention mode it starts a fresh ComfyUI, runs the project's workflow
through the worker's own handler (``wan_worker.handler.handle``) and records:

* the wall time of every stage, as the handler reports it (``timings.stages``);
* seconds per sampling step, from the handler's progress events (a sampler's mean time
  between consecutive steps; see ``analyse``), and the part of each sampler stage that is not
  steps (moving the expert to the GPU, the LoRA patches, first-use setup);
* peak GPU memory of ComfyUI's process, read with ``nvidia-smi`` while the job runs;
* whole-job time, and which stage outside the transformer takes the largest share of it.

The first job on a fresh server is "cold" (models read from disk, first-use compilation); the
next ones are "warm": a new seed and a new prompt on the same server, as a busy worker sees.

GPU memory is held to a budget (``--vram-budget-mib``, default the RTX 5090's 32607 MiB) by a
helper process that allocates the rest of the card before ComfyUI starts, so ComfyUI sees the
free memory of a 5090 and any allocation past the budget fails as it would there.

Missing model files are written first with ``scripts/make_synthetic_weights.py`` (one process
per file, in parallel); files already complete are kept. Results go to ``--out``:
``bench_gpu.json`` (every number and event), ``bench_gpu.md`` (the tables) and one ComfyUI log
per configuration. Run from the project root, with the Python environment that runs ComfyUI::

    python scripts/bench_gpu.py --comfyui-dir COMFYUI --models-root MODELS --out OUT

``--fp16-accumulation global`` times the old way of turning fp16 accumulation on: ComfyUI's
``--fast fp16_accumulation`` for the whole process, the workflow's per-model nodes (911/912)
taken out of each prompt; the default, ``workflow``, is the worker's way (those nodes on, no
global flag). ``--fast FEATURE`` (repeatable) adds a feature to the ``--fast`` of
``--comfyui-args``;
``--stack image`` (the default) runs ComfyUI as it runs in the image: the image's torch is a
cu128 build, under which ComfyUI 0.33 disables comfy-kitchen's ``cuda`` backend, so on a host
with a cu130 torch the benchmark starts ComfyUI through ``scripts/gpu_bench/comfy_launch.py``,
which disables that backend as ComfyUI imports comfy-kitchen (ComfyUI's source unchanged; its
log must then list the backend as disabled, or the run stops). ``--stack host`` runs ComfyUI as
the host's torch makes it run. ``--triton-backend`` adds ComfyUI's ``--enable-triton-backend``
(comfy-kitchen's Triton kernels); ``--triton-cache-dir DIR`` gives ComfyUI its own Triton
cache (``TRITON_CACHE_DIR``): a new folder times the first job's kernel compile, the same one
again a worker whose cache persists. ``--bypass NODE`` takes a model-patch node out of every
prompt (its consumers read the model that went into it): ``--bypass 910`` times the high-noise
expert without its LoRA, the most a LoRA merged into the weights beforehand could save.
``--video-format FORMAT`` replaces the output node's format (``video/h264-mp4``: x264's default
preset, against the workflow's ``fast``). ``--one-server`` runs all the sizes on one ComfyUI,
one after another: the first job at a later size is "new-size", what a change of size costs a
warm server. Every job's MP4 is saved under ``--videos`` (default ``OUT/videos``), named by size,
attention and job index, so that two runs (same seeds and inputs) compare frame by frame with
``scripts/gpu_bench/compare_videos.py``.

``--weights tiny --sizes 128x128 --frames 9 --vram-budget-mib 0 --extra-comfyui-args=--cpu``
is a dry run of the same path on a CPU. torch is never imported by this script; ComfyUI and the
memory-holding helper are separate processes.

The parts live in ``scripts/gpu_bench/`` (see its ``__init__``); this file is the command.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from scripts.gpu_bench import BenchError  # noqa: E402
from scripts.gpu_bench.analysis import ConfigRecord  # noqa: E402
from scripts.gpu_bench.comfyui import DEFAULT_COMFYUI_ARGS, STACKS  # noqa: E402
from scripts.gpu_bench.jobs import (  # noqa: E402
    run_server,
    server_flags,
    workflow_with_frames,
)
from scripts.gpu_bench.memory import RTX_5090_MIB, GpuMemorySampler, VramBallast  # noqa: E402
from scripts.gpu_bench.report import load_report, save  # noqa: E402
from scripts.gpu_bench.weights import ensure_weights  # noqa: E402


def parse_size(text: str) -> tuple[int, int]:
    """``"720x1280"`` -> (width 720, height 1280)."""
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise argparse.ArgumentTypeError(f"size {text!r} must be WIDTHxHEIGHT, e.g. 720x1280")
    return int(parts[0]), int(parts[1])


def environment(args: argparse.Namespace) -> dict[str, Any]:
    """Versions, read without touching the GPU from this process."""
    probe = (
        "import json, importlib.util, torch; s = importlib.util.find_spec('sageattention'); "
        "print(json.dumps({'torch': torch.__version__, 'cuda': torch.version.cuda, "
        "'sageattention': s.origin if s else None}))"
    )
    done = subprocess.run([args.python, "-c", probe], capture_output=True, text=True, check=False)
    env: dict[str, Any] = json.loads(done.stdout) if done.returncode == 0 else {}
    if shutil.which("nvidia-smi"):
        query = "--query-gpu=name,driver_version,memory.total"
        smi = subprocess.run(
            ["nvidia-smi", query, "--format=csv,noheader", "-i", "0"],
            capture_output=True,
            text=True,
            check=False,
        )
        env["gpu"] = smi.stdout.strip()
    env["python"] = sys.version.split()[0]
    env["comfyui_args"] = args.comfyui_args
    env["extra_comfyui_args"] = args.extra_comfyui_args
    env["fast"] = args.fast
    env["fp16_accumulation"] = args.fp16_accumulation
    env["comfyui_flags"] = server_flags(args)
    env["stack"] = args.stack
    env["kitchen_backends_disabled"] = list(STACKS[args.stack].disabled_backends)
    env["conv3d_workaround"] = STACKS[args.stack].conv3d_workaround
    env["triton_backend"] = args.triton_backend
    env["triton_cache_dir"] = str(args.triton_cache_dir) if args.triton_cache_dir else None
    env["videos"] = str(args.videos)
    env["bypass"] = list(args.bypass)
    env["one_server"] = args.one_server
    env["video_format"] = args.video_format
    return env


def add_lever_options(parser: argparse.ArgumentParser) -> None:
    """The options that change what a run times: a node taken out, the output's format, all
    sizes on one server."""
    parser.add_argument(
        "--bypass",
        action="append",
        default=[],
        metavar="NODE",
        help="take a model-patch node (one with a model input, e.g. the LoRA loader 910) out "
        "of every prompt, its consumers reading its input model instead (repeatable)",
    )
    parser.add_argument(
        "--video-format",
        metavar="FORMAT",
        help="node 906's format instead of the workflow's video/h264-mp4-fast.json, e.g. "
        "video/h264-mp4 (VideoHelperSuite's own: x264's default preset, medium)",
    )
    parser.add_argument(
        "--one-server",
        action="store_true",
        help="run every size on one ComfyUI, in turn (per attention mode): the first job at a "
        "later size is 'new-size', what a change of size costs a warm server",
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--comfyui-dir", type=Path, help="folder with main.py (required)")
    parser.add_argument("--models-root", type=Path, help="synthetic models folder (required)")
    parser.add_argument("--out", type=Path, required=True, help="folder for results and logs")
    parser.add_argument(
        "--from-json",
        type=Path,
        help="rebuild the tables and verdicts from a saved bench_gpu.json, without running",
    )
    parser.add_argument(
        "--sizes",
        type=lambda s: [parse_size(x) for x in s.split(",")],
        default=[(720, 1280), (480, 832)],
        help="comma-separated WIDTHxHEIGHT list (720x1280,480x832)",
    )
    parser.add_argument("--attention", default="sage,sdpa", help="modes in order (sage,sdpa)")
    parser.add_argument("--jobs", type=int, default=2, help="jobs per server: 1 cold + warm ones")
    parser.add_argument(
        "--weights",
        choices=("full", "tiny", "none"),
        default="full",
        help="synthetic weights to write where missing (none: use the files as they are)",
    )
    parser.add_argument("--frames", type=int, default=None, help="override the 81 frames")
    parser.add_argument(
        "--vram-budget-mib",
        type=int,
        default=RTX_5090_MIB,
        help="GPU memory left to ComfyUI (0: no budget, no memory readings)",
    )
    parser.add_argument("--comfyui-args", default=DEFAULT_COMFYUI_ARGS)
    parser.add_argument("--extra-comfyui-args", default="", help="appended to --comfyui-args")
    parser.add_argument(
        "--fast",
        action="append",
        default=[],
        metavar="FEATURE",
        help="a --fast feature for ComfyUI beside those in --comfyui-args (repeatable)",
    )
    parser.add_argument(
        "--fp16-accumulation",
        choices=("workflow", "global"),
        default="workflow",
        help="per model through workflow nodes 911/912 (the worker's way), or ComfyUI's global "
        "--fast fp16_accumulation with those nodes taken out (the old way)",
    )
    parser.add_argument(
        "--stack",
        choices=sorted(STACKS),
        default="image",
        help="image: comfy-kitchen's cuda backend off, as ComfyUI runs under the image's cu128 "
        "torch (the default); host: as the host's torch makes ComfyUI run",
    )
    parser.add_argument(
        "--triton-backend",
        action="store_true",
        help="start ComfyUI with --enable-triton-backend (comfy-kitchen's Triton kernels)",
    )
    parser.add_argument(
        "--triton-cache-dir",
        type=Path,
        help="TRITON_CACHE_DIR for ComfyUI (a new folder: the first job compiles every kernel)",
    )
    add_lever_options(parser)
    parser.add_argument(
        "--videos", type=Path, help="folder for every job's MP4 (default OUT/videos)"
    )
    parser.add_argument("--python", default=sys.executable, help="Python that runs ComfyUI")
    parser.add_argument("--port", type=int, default=8188)
    parser.add_argument("--ready-timeout", type=float, default=600.0)
    args = parser.parse_args(argv)
    args.attention = [a.strip() for a in args.attention.split(",") if a.strip()]
    unknown = [a for a in args.attention if a not in ("sage", "sdpa")]
    if unknown:
        parser.error(f"--attention: unknown mode(s) {unknown}; use sage and/or sdpa")
    args.out = args.out.resolve()
    args.videos = (args.videos or args.out / "videos").resolve()
    if args.triton_cache_dir is not None:
        args.triton_cache_dir = args.triton_cache_dir.resolve()
    if args.from_json is not None:
        if not args.from_json.is_file():
            parser.error(f"--from-json {args.from_json} does not exist")
        return args
    if args.comfyui_dir is None or args.models_root is None:
        parser.error("--comfyui-dir and --models-root are required (unless --from-json)")
    if not (args.comfyui_dir / "main.py").is_file():
        parser.error(f"--comfyui-dir {args.comfyui_dir} has no main.py")
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    args.comfyui_dir = args.comfyui_dir.resolve()
    args.models_root = args.models_root.resolve()
    return args


def run(args: argparse.Namespace) -> dict[str, Any]:
    args.out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"command": sys.argv, "environment": environment(args)}
    report["vram_budget_mib"] = args.vram_budget_mib
    if args.weights != "none":
        report["weights_s"] = ensure_weights(
            args.python, args.weights, args.models_root, args.comfyui_dir, args.out
        )
        print(f"weights ready in {report['weights_s']} s", flush=True)
    workflow = workflow_with_frames(args.out, args.frames)
    gpu = GpuMemorySampler() if args.vram_budget_mib > 0 else None
    ballast = VramBallast(args.python, args.vram_budget_mib) if gpu is not None else None
    configs: list[ConfigRecord] = []
    try:
        if ballast is not None and gpu is not None:
            report["ballast"] = ballast.start()
            print(f"GPU memory held above the budget: {report['ballast']}", flush=True)
            gpu.start()
        if args.one_server:
            runs = [(args.sizes, attention) for attention in args.attention]
        else:
            runs = [([size], attention) for size in args.sizes for attention in args.attention]
        for sizes, attention in runs:
            done = list(configs)

            def partial(records: list[ConfigRecord], done: list[ConfigRecord] = done) -> None:
                save(args.out, report, [*done, *records], args.vram_budget_mib)

            configs.extend(run_server(args, sizes, attention, workflow, gpu, partial))
            save(args.out, report, configs, args.vram_budget_mib)
    finally:
        if gpu is not None:
            gpu.stop()
        if ballast is not None:
            ballast.stop()
    return save(args.out, report, configs, args.vram_budget_mib)


def stop_on_sigterm(signum: int, frame: object) -> None:
    """SIGTERM (a queue cancelling the run, `timeout`) ends the run as Ctrl-C would: through
    the `finally` blocks, so that the ComfyUI it started (in its own session, out of reach of
    a signal to the bench's process group) and the GPU ballast stop with it."""
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, stop_on_sigterm)
    if args.from_json is not None:
        report, configs = load_report(args.from_json)
        save(args.out, report, configs, int(report.get("vram_budget_mib", args.vram_budget_mib)))
        print((args.out / "bench_gpu.md").read_text(encoding="utf-8"))
        return 0
    try:
        run(args)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print((args.out / "bench_gpu.md").read_text(encoding="utf-8"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
