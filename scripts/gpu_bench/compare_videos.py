"""Compare videos frame by frame: the PSNR of their decoded frames (ffmpeg decodes, numpy counts).

Two runs of the workflow with the same seed and inputs should give the same frames; how close
two runs of the *same* stack come (two ComfyUI processes) is the noise floor that any change
(a comfy-kitchen backend, a compile, a preset) is judged against::

    python scripts/gpu_bench/compare_videos.py A.mp4 B.mp4
    python scripts/gpu_bench/compare_videos.py RUN_A/videos RUN_B/videos --json out.json

Given two folders it compares the MP4s of the same name in both (bench_gpu.py names them by
size, attention and job index, so the same name is the same seed and prompt). Per pair: the
number of frames, how many are identical, the PSNR of each frame over its RGB values (8-bit,
peak 255), and from those the minimum and the mean over frames (``inf`` when every frame is
identical; the mean is over the frames that differ, next to the count of identical ones) and
the PSNR of the whole video's mean squared error. Exit status 1 when a pair cannot be compared
(different frame sizes or counts, a file that does not decode).
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO

import numpy as np

PEAK = 255.0


class DecodeError(Exception):
    """ffmpeg could not decode a file, or its frames cannot be compared with the other's."""


def _token(stream: IO[bytes]) -> bytes:
    """The next whitespace-separated token of a PPM header (b"" at the end of the stream)."""
    out = b""
    while True:
        char = stream.read(1)
        if not char:
            return out
        if char.isspace():
            if out:
                return out
            continue
        out += char


def read_ppm_stream(stream: IO[bytes]) -> Iterator[np.ndarray]:
    """Frames (height x width x 3, uint8) from a stream of binary PPM images, as ffmpeg's
    ``-f image2pipe -c:v ppm`` writes them: each carries its own size, so no probe is needed."""
    while True:
        magic = _token(stream)
        if not magic:
            return
        if magic != b"P6":
            raise DecodeError(f"not a binary PPM frame (header {magic[:8]!r})")
        width, height, maxval = (int(_token(stream)) for _ in range(3))
        if maxval != 255:
            raise DecodeError(f"PPM frame with maxval {maxval}, expected 8-bit")
        size = width * height * 3
        data = stream.read(size)
        if len(data) != size:
            raise DecodeError("truncated frame")
        yield np.frombuffer(data, dtype=np.uint8).reshape(height, width, 3)


def decode_frames(path: Path, ffmpeg: str = "ffmpeg") -> Iterator[np.ndarray]:
    """Every frame of a video as RGB (height x width x 3, uint8), decoded by ffmpeg one at a
    time (a 720x1280 video of 161 frames is 445 MB as RGB: never held whole)."""
    return ffmpeg_frames(["-i", str(path)], ffmpeg, str(path))


def ffmpeg_frames(
    input_args: list[str], ffmpeg: str = "ffmpeg", name: str = ""
) -> Iterator[np.ndarray]:
    """The frames of any ffmpeg input (``-i FILE``, ``-f lavfi -i SPEC -frames:v N``) as RGB."""
    path = name or " ".join(input_args)
    command = [
        ffmpeg, "-v", "error", "-nostdin", *input_args,
        "-f", "image2pipe", "-c:v", "ppm", "-pix_fmt", "rgb24", "-",
    ]  # fmt: skip
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=errors)
        stdout = proc.stdout
        if stdout is None:  # never: stdout is a pipe
            raise DecodeError("no pipe from ffmpeg")
        try:
            yield from read_ppm_stream(stdout)
        finally:
            stdout.close()
            code = proc.wait()
        errors.seek(0)
        message = errors.read().decode(errors="replace").strip()
    if code != 0:
        raise DecodeError(f"ffmpeg could not decode {path}: {message or f'exit {code}'}")


def frame_mse(a: np.ndarray, b: np.ndarray) -> float:
    diff = a.astype(np.float64) - b.astype(np.float64)
    return float(np.mean(diff * diff))


def psnr(mse: float) -> float:
    """Decibels for 8-bit values; inf for identical frames."""
    return math.inf if mse == 0 else 10.0 * math.log10(PEAK * PEAK / mse)


@dataclass
class Comparison:
    a: str
    b: str
    frames: int = 0
    identical_frames: int = 0
    psnr_min_db: float = math.inf
    psnr_mean_db: float = math.inf  # over the frames that differ; inf when none does
    psnr_video_db: float = math.inf  # from the mean squared error of every frame together
    max_abs_diff: int = 0
    error: str = ""
    frame_psnr_db: list[float] = field(default_factory=list)

    def line(self) -> str:
        if self.error:
            return f"{self.a} vs {self.b}: ERROR {self.error}"
        return (
            f"{self.a} vs {self.b}: {self.frames} frames, {self.identical_frames} identical, "
            f"PSNR min {fmt_db(self.psnr_min_db)}, mean {fmt_db(self.psnr_mean_db)}, "
            f"whole video {fmt_db(self.psnr_video_db)}, max |diff| {self.max_abs_diff}"
        )


def fmt_db(value: float) -> str:
    return "inf" if math.isinf(value) else f"{value:.2f} dB"


def compare_frames(
    first: Iterator[np.ndarray], second: Iterator[np.ndarray], comparison: Comparison
) -> Comparison:
    """Fill `comparison` from two frame streams, frame by frame."""
    total_mse = 0.0
    values: list[float] = []
    differing: list[float] = []
    sentinel = None
    while True:
        a = next(first, sentinel)
        b = next(second, sentinel)
        if a is None or b is None:
            if a is not None or b is not None:
                longer = comparison.a if a is not None else comparison.b
                raise DecodeError(
                    f"{longer} has more frames (the other ends after {comparison.frames})"
                )
            break
        if a.shape != b.shape:
            raise DecodeError(
                f"frame {comparison.frames}: size {a.shape[1]}x{a.shape[0]} vs "
                f"{b.shape[1]}x{b.shape[0]}"
            )
        mse = frame_mse(a, b)
        value = psnr(mse)
        values.append(value)
        comparison.frame_psnr_db.append(round(value, 3) if mse else value)
        comparison.frames += 1
        total_mse += mse
        if mse == 0:
            comparison.identical_frames += 1
        else:
            differing.append(value)
            diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
            comparison.max_abs_diff = max(comparison.max_abs_diff, int(diff.max()))
    if comparison.frames == 0:
        raise DecodeError("no frames")
    comparison.psnr_min_db = min(values)
    comparison.psnr_mean_db = sum(differing) / len(differing) if differing else math.inf
    comparison.psnr_video_db = psnr(total_mse / comparison.frames)
    return comparison


def compare(a: Path, b: Path, ffmpeg: str = "ffmpeg") -> Comparison:
    """Two video files, frame by frame; a comparison whose `error` says why it could not be."""
    comparison = Comparison(str(a), str(b))
    first, second = decode_frames(a, ffmpeg), decode_frames(b, ffmpeg)
    try:
        return compare_frames(first, second, comparison)
    except DecodeError as exc:
        comparison.error = str(exc)
        return comparison
    finally:
        first.close()
        second.close()


def pairs(a: Path, b: Path) -> list[tuple[Path, Path]]:
    """Two files, or the MP4s of the same name in two folders (sorted by name)."""
    if a.is_dir() and b.is_dir():
        names = sorted({p.name for p in a.glob("*.mp4")} & {p.name for p in b.glob("*.mp4")})
        return [(a / name, b / name) for name in names]
    return [(a, b)]


def to_json(comparisons: list[Comparison]) -> str:
    """JSON with inf written as the string "inf" (plain JSON has no infinity)."""

    def clean(value: object) -> object:
        if isinstance(value, float) and math.isinf(value):
            return "inf"
        if isinstance(value, list):
            return [clean(v) for v in value]
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        return value

    return json.dumps([clean(asdict(c)) for c in comparisons], indent=1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("a", type=Path, help="a video, or a folder of MP4s")
    parser.add_argument("b", type=Path, help="the video (or folder) to compare it with")
    parser.add_argument("--json", type=Path, help="write every comparison here, frames included")
    parser.add_argument("--ffmpeg", default="ffmpeg")
    args = parser.parse_args(argv)
    found = pairs(args.a, args.b)
    if not found:
        print(f"no MP4 of the same name in {args.a} and {args.b}", file=sys.stderr)
        return 1
    comparisons = [compare(x, y, args.ffmpeg) for x, y in found]
    for comparison in comparisons:
        print(comparison.line(), flush=True)
    if args.json is not None:
        args.json.write_text(to_json(comparisons), encoding="utf-8")
    return 1 if any(c.error for c in comparisons) else 0


if __name__ == "__main__":
    sys.exit(main())
