"""Catch black, NaN-born or flat videos before they are returned.

SageAttention with FP8 Wan2.2 weights and fp16 accumulation can turn the latents into NaN or
inf (SageAttention #221, ComfyUI #8573). The VAE then decodes black frames, and VHS writes a
black MP4 that plays fine. The only place left to see it is the decoded video: ffmpeg decodes
the frames that other frames refer to, and every fourth of those is scaled to 64x64 grey and
judged by its mean and spread of luma.

The frames nothing refers to (x264's non-reference B-frames: 38-50% of the frames of the
720x1280 test videos at the workflow's preset, none of uniform noise's) are skipped at decode
(`-skip_frame noref`), which takes a third off the check's time (docs/performance.md). The
frames that are decoded are exact, so a black or flat video is judged as before.
"""

from __future__ import annotations

import contextlib
import errno
import math
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from wan_worker.errors import OutputError

SAMPLE_SIDE = 64  # each sampled frame is scaled to this many pixels a side
SAMPLE_EVERY = 4  # one decoded frame in this many is sampled
BLACK_MEAN = 24.0  # video black is luma 16 (limited range); a dark scene still varies
FLAT_STDDEV = 2.0
BAD_SHARE = 0.8  # a video is bad when this share of its sampled frames is black or flat


@dataclass(frozen=True)
class FrameReport:
    frames: int
    black: int
    flat: int
    mean_luma: float

    @property
    def bad(self) -> bool:
        return self.frames == 0 or (self.black + self.flat) >= BAD_SHARE * self.frames

    def describe(self) -> str:
        return (
            f"{self.black} of {self.frames} sampled frames black, {self.flat} flat "
            f"(mean luma {self.mean_luma:.1f})"
        )


def _frame_stats(frame: bytes) -> tuple[float, float]:
    n = len(frame)
    total = sum(frame)
    squares = sum(v * v for v in frame)
    mean = total / n
    return mean, math.sqrt(max(0.0, squares / n - mean * mean))


def inspect_frames(video: bytes, path: Path | None = None) -> FrameReport:
    """Decode a sample of the video's frames and count the black and the flat ones.

    `path`, when given, is a file holding the same bytes (ComfyUI's own output); otherwise the
    bytes go through a temporary file, since an MP4 with its index at the end cannot be piped.
    """
    sample = (
        f"select=not(mod(n\\,{SAMPLE_EVERY})),"
        f"scale={SAMPLE_SIDE}:{SAMPLE_SIDE}:flags=area,format=gray"
    )
    try:
        with contextlib.ExitStack() as stack:
            if path is None:
                handle = stack.enter_context(tempfile.NamedTemporaryFile(suffix=".mp4"))
                handle.write(video)
                handle.flush()
                path = Path(handle.name)
            done = subprocess.run(
                [
                    "ffmpeg", "-v", "error", "-nostdin", "-skip_frame", "noref", "-i", str(path),
                    "-vf", sample, "-fps_mode", "passthrough", "-f", "rawvideo", "pipe:1",
                ],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                check=False,
                timeout=120,
            )  # fmt: skip
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise  # a full disk is reported as such (errors.error_result)
        raise OutputError(f"Could not check the video's frames: {exc}") from None
    except subprocess.TimeoutExpired:
        raise OutputError("Checking the video's frames took over 120 s.") from None
    if done.returncode != 0:
        message = done.stderr.decode(errors="replace").strip().splitlines()[-1:]
        raise OutputError(
            f"ComfyUI's video could not be decoded ({'; '.join(message) or 'ffmpeg failed'}). "
            "Retry the job."
        )
    size = SAMPLE_SIDE * SAMPLE_SIDE
    frames = [done.stdout[i : i + size] for i in range(0, len(done.stdout) - size + 1, size)]
    black = flat = 0
    means = []
    for frame in frames:
        mean, spread = _frame_stats(frame)
        means.append(mean)
        if mean < BLACK_MEAN and spread < 4 * FLAT_STDDEV:
            black += 1
        elif spread < FLAT_STDDEV:
            flat += 1
    return FrameReport(
        frames=len(frames),
        black=black,
        flat=flat,
        mean_luma=sum(means) / len(means) if means else 0.0,
    )
