"""Measure MP4 sizes at the workflow's encode settings, and the re-encode that fits them inline.

For each source and size it makes the frames (161 at 24 fps by default), encodes them as the
workflow's output node does (VideoHelperSuite's h264-mp4 format with node 906's inputs: crf,
pix_fmt, frame rate, no metadata), then re-encodes that MP4 with wan_worker.video_fit as the
worker does when the video is over MAX_BASE64_BYTES. Each encode runs --runs times; times are
reported as min/median/max. Sources:

- a real clip (`--clip NAME=PATH`, repeatable): scaled to cover the frame and centre-cropped,
  as a portrait video made from it would be, looped if it has too few frames;
- `--noise`: every pixel of every frame random, the worst case for any encoder;
- `--double`: the MP4 the ComfyUI double (tests/comfy_double.py) writes for test_input.json's
  image, as the tests see it (its own encode is not VHS's, so it has no original time).

A source whose MP4 already fits is not re-encoded by the worker; its re-encode is then also
measured at half its size (`forced`), to show what a re-encode of such content costs. Run from
the project root, under the shared CPU lock so other work does not skew the times:

    flock /tmp/wan-cpu.lock python scripts/bench_fit.py --clip bikes=/path/to/bikes.mp4 --noise
"""

from __future__ import annotations

import argparse
import base64
import json
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from wan_worker.delivery import base64_size, inline_budget
from wan_worker.settings.worker import DEFAULT_WORKFLOW, X264_PRESETS, WorkerSettings
from wan_worker.video_fit import fit_video
from wan_worker.workflow import OUTPUT_NODE

PROJECT = Path(__file__).resolve().parent.parent

#: VideoHelperSuite's video_formats/h264-mp4.json `main_pass`, with node 906's crf and pix_fmt.
VHS_MAIN_PASS = [
    "-n", "-c:v", "libx264", "-pix_fmt", "{pix_fmt}", "-crf", "{crf}",
    "-vf", "scale=out_color_matrix=bt709",
    "-color_range", "tv", "-colorspace", "bt709", "-color_primaries", "bt709",
    "-color_trc", "bt709",
]  # fmt: skip


def vhs_command(width: int, height: int, node: dict, out: Path) -> list[str]:
    """VHS's ffmpeg command for raw RGB frames on stdin (videohelpersuite/nodes.py)."""
    inputs = node["inputs"]
    if inputs["save_metadata"]:
        raise SystemExit("node 906 has save_metadata on; this measures the fixed workflow's")
    main_pass = [
        part.format(pix_fmt=inputs["pix_fmt"], crf=inputs["crf"]) for part in VHS_MAIN_PASS
    ]
    return [
        "ffmpeg", "-v", "error", "-f", "rawvideo", "-pix_fmt", "rgb24",
        "-color_range", "pc", "-colorspace", "rgb", "-color_primaries", "bt709",
        "-color_trc", "bt709", "-s", f"{width}x{height}", "-r", str(inputs["frame_rate"]),
        "-i", "-", *main_pass, str(out),
    ]  # fmt: skip


def make_frames(source: str, width: int, height: int, frames: int, raw: Path) -> None:
    """`frames` RGB frames of width x height into `raw`."""
    if source == "noise":
        rng = random.Random(20260901)  # noqa: S311 - reproducible noise, not secrets
        with raw.open("wb") as handle:
            for _ in range(frames):
                handle.write(rng.randbytes(width * height * 3))
        return
    cover = (
        f"scale={width}:{height}:force_original_aspect_ratio=increase,"
        f"crop={width}:{height},setsar=1"
    )
    subprocess.run(
        [
            "ffmpeg", "-v", "error", "-y", "-stream_loop", "-1", "-i", source, "-an",
            "-vf", cover, "-frames:v", str(frames), "-f", "rawvideo", "-pix_fmt", "rgb24",
            str(raw),
        ],
        check=True,
    )  # fmt: skip
    if raw.stat().st_size != width * height * 3 * frames:
        raise SystemExit(f"{source}: got {raw.stat().st_size} bytes of frames, not {frames}")


def probe(path: Path) -> tuple[int, int, int, str]:
    out = subprocess.run(
        [
            "ffprobe", "-v", "error", "-select_streams", "v:0", "-count_frames",
            "-show_entries", "stream=width,height,nb_read_frames,r_frame_rate,codec_name",
            "-of", "json", str(path),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    s = json.loads(out.stdout)["streams"][0]
    return int(s["width"]), int(s["height"]), int(s["nb_read_frames"]), s["r_frame_rate"]


def ssim(video: Path, raw: Path, width: int, height: int, rate: str) -> float:
    """SSIM (all planes) of `video` against the frames it was made from, both as BT.709 4:2:0."""
    done = subprocess.run(
        [
            "ffmpeg", "-nostdin", "-i", str(video), "-f", "rawvideo", "-pix_fmt", "rgb24",
            "-s", f"{width}x{height}", "-r", rate, "-i", str(raw), "-lavfi",
            "[0:v]format=yuv420p[a];[1:v]scale=out_color_matrix=bt709,format=yuv420p[b];"
            "[a][b]ssim",
            "-f", "null", "-",
        ],
        check=True,
        capture_output=True,
        text=True,
    )  # fmt: skip
    found = re.search(r"SSIM .* All:([0-9.]+)", done.stderr)
    if not found:
        raise SystemExit(f"no SSIM in ffmpeg's output: {done.stderr[-500:]}")
    return float(found.group(1))


def spread(values: list[float]) -> dict[str, float]:
    return {
        "min": round(min(values), 2),
        "median": round(statistics.median(values), 2),
        "max": round(max(values), 2),
    }


@dataclass
class Case:
    source: str
    size: str
    original_bytes: int = 0
    original_base64: int = 0
    original_s: dict[str, float] = field(default_factory=dict)
    original_ssim: float = 0.0
    fits_inline: bool = False
    budget_bytes: int = 0
    forced: bool = False
    fits: dict[str, dict] = field(default_factory=dict)


def double_video(width: int, height: int, folder: Path) -> bytes:
    """One job on the ComfyUI double at this size, with test_input.json's image."""
    from tests.support import start_double, stop
    from wan_worker.handler import handle

    sample = json.loads((PROJECT / "test_input.json").read_text())
    job = {"id": "bench", "input": {**sample["input"], "width": width, "height": height}}
    server = start_double(folder)
    try:
        result = handle(job, server.worker(max_base64_bytes=1 << 31))
    finally:
        stop(server)
    if "error" in result:
        raise SystemExit(f"the double's job failed: {result['error']}")
    return base64.b64decode(result["video"])


def run_case(
    name: str, source: str, width: int, height: int, args: argparse.Namespace, node: dict
) -> Case:
    case = Case(name, f"{width}x{height}")
    rate = str(node["inputs"]["frame_rate"])
    with tempfile.TemporaryDirectory(prefix="bench-fit-") as folder:
        original = Path(folder) / "original.mp4"
        raw: Path | None = None
        if source == "double":
            original.write_bytes(double_video(width, height, Path(folder)))
        else:
            raw = Path(folder) / "frames.rgb"
            make_frames(source, width, height, args.frames, raw)
            times = []
            for _ in range(args.runs):
                original.unlink(missing_ok=True)
                with raw.open("rb") as frames:
                    started = time.perf_counter()
                    subprocess.run(
                        vhs_command(width, height, node, original), stdin=frames, check=True
                    )
                    times.append(time.perf_counter() - started)
            case.original_s = spread(times)
        data = original.read_bytes()
        case.original_bytes = len(data)
        case.original_base64 = base64_size(len(data))
        if args.quality and raw is not None:
            case.original_ssim = round(ssim(original, raw, width, height, rate), 4)
        case.fits_inline = case.original_base64 <= args.budget
        budget = inline_budget(args.budget)
        if case.fits_inline:
            budget, case.forced = len(data) // 2, True
        case.budget_bytes = budget
        for preset in args.presets:
            times, sizes, attempts = [], [], []
            for _ in range(args.runs):
                started = time.perf_counter()
                fitted = fit_video(data, budget, preset=preset, timeout_s=600)
                times.append(time.perf_counter() - started)
                sizes.append(len(fitted.video))
                attempts.append(fitted.attempts)
            result = Path(folder) / f"fitted-{preset}.mp4"
            result.write_bytes(fitted.video)
            shape = probe(result)
            expected = (width, height, args.frames, f"{rate}/1")
            if shape != expected:
                raise SystemExit(f"{name} {case.size} {preset}: got {shape}, want {expected}")
            entry: dict = {
                "seconds": spread(times),
                "bytes": {
                    "min": min(sizes),
                    "median": int(statistics.median(sizes)),
                    "max": max(sizes),
                },
                "bitrate_kbps": fitted.bitrate // 1000,
                "attempts_max": max(attempts),
                "probe": f"{shape[0]}x{shape[1]}, {shape[2]} frames, {shape[3]} fps",
            }
            if args.quality and raw is not None:
                entry["ssim"] = round(ssim(result, raw, width, height, rate), 4)
            case.fits[preset] = entry
    return case


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip", action="append", default=[], help="NAME=PATH of a real clip")
    parser.add_argument("--noise", action="store_true", help="also random frames (worst case)")
    parser.add_argument("--double", action="store_true", help="also the ComfyUI double's MP4")
    parser.add_argument("--sizes", default="720x1280,480x832")
    parser.add_argument("--frames", type=int, default=161)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--budget", type=int, default=WorkerSettings().max_base64_bytes)
    parser.add_argument(
        "--presets", default=WorkerSettings().reencode_preset, help="x264 presets, comma-separated"
    )
    parser.add_argument("--quality", action="store_true", help="also SSIM against the frames")
    parser.add_argument("--json", type=Path, help="write the results here too")
    args = parser.parse_args()
    args.presets = args.presets.split(",")
    for preset in args.presets:
        if preset not in X264_PRESETS:
            raise SystemExit(f"unknown preset {preset}; one of {', '.join(X264_PRESETS)}")
    sources = [tuple(c.split("=", 1)) for c in args.clip]
    if args.noise:
        sources.append(("noise", "noise"))
    if args.double:
        sources.append(("double", "double"))
    if not sources:
        raise SystemExit("give --clip NAME=PATH, --noise or --double")
    node = json.loads(DEFAULT_WORKFLOW.read_text())[OUTPUT_NODE]
    results = []
    for name, source in sources:
        for size in args.sizes.split(","):
            width, height = (int(v) for v in size.split("x"))
            case = run_case(name, source, width, height, args, node)
            results.append(asdict(case))
            print(json.dumps(asdict(case)), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
