"""Time libx264's presets on the workflow's final encode: the same frames, the same arguments.

The workflow's last node (VideoHelperSuite's Video Combine, CRF 15, yuv420p) pipes RGB frames
into ffmpeg as its ``video/h264-mp4`` format does, with the preset its format names (``fast``,
``workflows/video_formats/h264-mp4-fast.json``; x264's default is ``medium``). This takes the frames
of a real output (an MP4, decoded once to raw RGB) or a synthetic source, encodes them with each
preset in turn as VideoHelperSuite would (its input and output arguments, ``-preset`` added,
threads left to x264 unless ``--threads`` names counts), and reports per variant (a preset, or
``PRESET@N`` with ``-threads N``) the wall time and the CPU time (user + system) of every run
(min / median / max), the file size and the PSNR of the decoded result against the source
frames::

    python scripts/gpu_bench/encode_presets.py --source OUTPUT.mp4 --runs 5 --json presets.json
    python scripts/gpu_bench/encode_presets.py --frames 161 --runs 5 \\
        --lavfi "testsrc2=s=720x1280:r=24,noise=alls=12:allf=t"
    python scripts/gpu_bench/encode_presets.py --source OUTPUT.mp4 --presets medium,veryfast \\
        --threads 0,8,4      # 0: x264's own choice, as the workflow runs it

Runs are interleaved (variant A, B, C, then again in a rotated order) after one encode that is
not counted, so that a machine's drift spreads over all presets. ``--print-command PRESET``
prints one encode's command line (to time it with another tool) and exits.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: make `scripts.gpu_bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from scripts.gpu_bench.compare_videos import (
    Comparison,
    compare_frames,
    decode_frames,
    ffmpeg_frames,
    fmt_db,
)

PRESETS = ("medium", "fast", "faster", "veryfast", "superfast")
WORKFLOW_CRF = 15
WORKFLOW_FPS = 24


def encode_command(
    raw: Path,
    width: int,
    height: int,
    out: Path,
    preset: str,
    crf: int = WORKFLOW_CRF,
    fps: int = WORKFLOW_FPS,
    ffmpeg: str = "ffmpeg",
    threads: int = 0,
) -> list[str]:
    """VideoHelperSuite's h264-mp4 command (its input flags, then its main pass), reading the
    raw RGB frames from a file instead of its pipe, with ``-preset`` added (and ``-threads``
    unless `threads` is 0, x264's own choice)."""
    thread_flags = ["-threads", str(threads)] if threads else []
    return [
        ffmpeg, "-v", "error", "-nostdin", "-f", "rawvideo", "-pix_fmt", "rgb24",
        "-color_range", "pc", "-colorspace", "rgb", "-color_primaries", "bt709",
        "-color_trc", "bt709", "-s", f"{width}x{height}", "-r", str(fps), "-i", str(raw),
        "-y", "-c:v", "libx264", "-preset", preset, *thread_flags, "-pix_fmt", "yuv420p",
        "-crf", str(crf),
        "-vf", "scale=out_color_matrix=bt709", "-color_range", "tv", "-colorspace", "bt709",
        "-color_primaries", "bt709", "-color_trc", "bt709", str(out),
    ]  # fmt: skip


def source_to_raw(args: argparse.Namespace, raw: Path) -> tuple[int, int, int]:
    """Write the source frames to `raw` as RGB; return (width, height, frames)."""
    if args.source is not None:
        frames = decode_frames(args.source, args.ffmpeg)
    else:
        lavfi = ["-f", "lavfi", "-i", args.lavfi, "-frames:v", str(args.frames)]
        frames = ffmpeg_frames(lavfi, args.ffmpeg, f"lavfi:{args.lavfi}")
    width = height = count = 0
    with raw.open("wb") as sink:
        for frame in frames:
            height, width = frame.shape[:2]
            sink.write(frame.tobytes())
            count += 1
            if args.frames and count == args.frames:
                break
    return width, height, count


def raw_frames(raw: Path, width: int, height: int) -> Iterator[np.ndarray]:
    frames = np.memmap(raw, dtype=np.uint8, mode="r").reshape(-1, height, width, 3)
    for frame in frames:
        yield np.asarray(frame)


def spread(values: list[float]) -> dict[str, float]:
    return {
        "min": round(min(values), 3),
        "median": round(statistics.median(values), 3),
        "max": round(max(values), 3),
    }


def variant_name(preset: str, threads: int) -> str:
    """``medium`` with x264's own thread count, ``medium@8`` with ``-threads 8``."""
    return f"{preset}@{threads}" if threads else preset


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(args: argparse.Namespace, work: Path) -> dict[str, object]:
    raw = work / "source.rgb"
    width, height, count = source_to_raw(args, raw)
    if count == 0:
        raise SystemExit("the source has no frames")
    settings = {
        variant_name(preset, threads): (preset, threads)
        for preset in args.presets
        for threads in args.threads
    }
    presets = list(settings)
    times: dict[str, list[float]] = {p: [] for p in presets}
    cpu: dict[str, list[float]] = {p: [] for p in presets}
    outputs = {p: work / f"{p}.mp4" for p in presets}

    def command(name: str, out: Path) -> list[str]:
        preset, threads = settings[name]
        return encode_command(
            raw, width, height, out, preset, args.crf, ffmpeg=args.ffmpeg, threads=threads
        )

    subprocess.run(command(presets[0], work / "warmup.mp4"), check=True)
    for index in range(args.runs):
        order = presets[index % len(presets) :] + presets[: index % len(presets)]
        for preset in order:
            cpu_before = children_cpu_s()
            started = time.perf_counter()
            subprocess.run(command(preset, outputs[preset]), check=True)
            times[preset].append(time.perf_counter() - started)
            cpu[preset].append(children_cpu_s() - cpu_before)
    results: dict[str, object] = {
        "source": str(args.source) if args.source else f"lavfi:{args.lavfi}",
        "width": width,
        "height": height,
        "frames": count,
        "crf": args.crf,
        "runs": args.runs,
        "presets": {},
    }
    table: dict[str, object] = {}
    for preset in presets:
        check = compare_frames(
            raw_frames(raw, width, height),
            decode_frames(outputs[preset], args.ffmpeg),
            Comparison("source", f"{preset}.mp4"),
        )
        # The source comparison includes the RGB -> yuv420p -> RGB round trip that every preset
        # pays alike; against the first preset's output shows what the preset alone changes.
        versus = compare_frames(
            decode_frames(outputs[presets[0]], args.ffmpeg),
            decode_frames(outputs[preset], args.ffmpeg),
            Comparison(f"{presets[0]}.mp4", f"{preset}.mp4"),
        )
        table[preset] = {
            "wall_s": spread(times[preset]),
            "runs_s": [round(t, 3) for t in times[preset]],
            "cpu_s": spread(cpu[preset]),
            "bytes": outputs[preset].stat().st_size,
            "psnr_mean_db": round(check.psnr_mean_db, 3),
            "psnr_min_db": round(check.psnr_min_db, 3),
            "vs_first_psnr_mean_db": round(versus.psnr_mean_db, 3),
            "vs_first_psnr_min_db": round(versus.psnr_min_db, 3),
        }
    results["presets"] = table
    return results


def markdown(results: dict[str, object]) -> str:
    presets = results["presets"]
    if not isinstance(presets, dict):
        raise TypeError("results without presets")
    lines = [
        f"{results['frames']} frames {results['width']}x{results['height']}, CRF "
        f"{results['crf']}, {results['runs']} runs each, source {results['source']}",
        "",
        "| preset | wall s min / median / max | CPU s min / median / max | MB "
        f"| PSNR vs source mean / min | PSNR vs {next(iter(presets), '')} mean / min |",
        "|---|---|---|---|---|---|",
    ]
    for preset, row in presets.items():
        wall, cpu = row["wall_s"], row["cpu_s"]
        lines.append(
            f"| {preset} | {wall['min']:.2f} / {wall['median']:.2f} / {wall['max']:.2f} | "
            f"{cpu['min']:.2f} / {cpu['median']:.2f} / {cpu['max']:.2f} | "
            f"{row['bytes'] / 1e6:.1f} | {fmt_db(row['psnr_mean_db'])} / "
            f"{fmt_db(row['psnr_min_db'])} | {fmt_db(row['vs_first_psnr_mean_db'])} / "
            f"{fmt_db(row['vs_first_psnr_min_db'])} |"
        )
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--source", type=Path, help="a video whose frames are encoded")
    source.add_argument("--lavfi", help="an ffmpeg lavfi source instead (with --frames)")
    parser.add_argument("--frames", type=int, default=0, help="frames to take (0: all)")
    parser.add_argument("--presets", type=lambda s: s.split(","), default=list(PRESETS))
    parser.add_argument(
        "--threads",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[0],
        help="x264 thread counts to try, comma-separated (0: x264's own choice, the default)",
    )
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--crf", type=int, default=WORKFLOW_CRF)
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--workdir", type=Path, help="keep the raw frames and outputs here")
    parser.add_argument("--ffmpeg", default="ffmpeg")
    parser.add_argument(
        "--print-command", metavar="PRESET", help="print one encode's command and exit"
    )
    args = parser.parse_args(argv)
    if args.lavfi and args.frames <= 0:
        parser.error("--lavfi needs --frames")
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    if any(n < 0 for n in args.threads):
        parser.error("--threads takes counts of 0 or more (0: x264's own choice)")
    if args.print_command and args.workdir is None:
        parser.error("--print-command needs --workdir (the command reads the frames there)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        if args.print_command:
            width, height, _ = source_to_raw(args, work / "source.rgb")
            command = encode_command(
                work / "source.rgb",
                width,
                height,
                work / "out.mp4",
                args.print_command,
                args.crf,
                threads=args.threads[0],
            )
            print(" ".join(command))
            return 0
        results = run(args, work)
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=1), encoding="utf-8")
    print(markdown(results), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
