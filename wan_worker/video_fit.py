"""Re-encode an MP4 so that it fits a byte budget, keeping its size, frames and frame rate.

Used when a video must go back inline (as base64 in the job's result) and is too large for
it. The encode is one-pass x264 at an average bitrate computed from the budget and the
video's duration, held by a VBV buffer (maxrate = bitrate, bufsize = BUFFER_S seconds of it):
x264 then keeps every stretch of the stream under `bitrate * t + bufsize`, so the whole file
lands under the budget without a second pass. The result is checked; if it is still too
large (x264 can break the VBV on content it cannot compress enough, e.g. noise), one more
encode runs at a rate scaled down by the overshoot. A budget that would need fewer than
MIN_BITS_PER_PIXEL is refused up front: below it the video is not worth returning.

ffmpeg runs with argument lists, a deadline shared by every call, and its own error text on
failure; the temporary files live in one folder that is always removed. The output carries
no metadata from the input (`-map_metadata -1`): ComfyUI's nodes can embed the whole
workflow in the MP4's tags, and a re-encode must never pass that on.
"""

from __future__ import annotations

import errno
import json
import math
import subprocess
import tempfile
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from wan_worker.errors import OutputError
from wan_worker.settings.worker import X264_PRESETS

#: The VBV buffer, in seconds of the target rate: room for a keyframe without a burst.
BUFFER_S = 1.0
#: x264 starts with its buffer this full (its default vbv-init), so the first frames may
#: spend this much of the buffer on top of the rate.
BUFFER_INIT = 0.9
#: The lowest quality a fitted video may have, in bits per pixel per frame. At 720x1280 and
#: 24 fps that is 442 kbit/s (370 kB for 161 frames): soft, but still a watchable video.
MIN_BITS_PER_PIXEL = 0.02
#: What the MP4 container costs beside the video stream: the header, and per frame its
#: size, offset and timing entries (with B-frames, composition offsets too).
CONTAINER_BYTES = 4096
CONTAINER_BYTES_PER_FRAME = 16
#: Aim this far below the budget, for x264's rate control to land under it.
HEADROOM = 0.97
#: Encodes at most: the first, and one more at a lower rate if the first overshoots.
MAX_ATTEMPTS = 2
RETRY_MARGIN = 0.9


@dataclass(frozen=True)
class VideoShape:
    """What the re-encode keeps, read with ffprobe."""

    width: int
    height: int
    frames: int
    fps: Fraction
    color: dict[str, str]

    @property
    def duration_s(self) -> float:
        return float(self.frames / self.fps)

    @property
    def pixel_rate(self) -> float:
        """Pixels per second."""
        return self.width * self.height * float(self.fps)

    def describe(self) -> str:
        return f"{self.width}x{self.height}, {self.frames} frames at {float(self.fps):g} fps"


@dataclass(frozen=True)
class Fitted:
    """A re-encoded video within its budget, and how it was made."""

    video: bytes
    original_bytes: int
    shape: VideoShape
    bitrate: int
    attempts: int


def minimum_bytes(shape: VideoShape) -> int:
    """The smallest budget this module accepts for a video of this shape."""
    stream_bits = MIN_BITS_PER_PIXEL * shape.pixel_rate * (shape.duration_s + BUFFER_S)
    overhead = CONTAINER_BYTES + CONTAINER_BYTES_PER_FRAME * shape.frames
    return math.ceil((stream_bits / 8 + overhead) / HEADROOM)


def planned_bitrate(shape: VideoShape, max_bytes: int) -> int:
    """Bits per second such that rate * duration + the initial buffer fits `max_bytes`."""
    overhead = CONTAINER_BYTES + CONTAINER_BYTES_PER_FRAME * shape.frames
    stream_bits = (max_bytes * HEADROOM - overhead) * 8
    return max(0, int(stream_bits / (shape.duration_s + BUFFER_INIT * BUFFER_S)))


def fit_video(
    video: bytes,
    max_bytes: int,
    *,
    preset: str = "veryfast",
    timeout_s: float = 300.0,
    limited_by: str = "REENCODE_TIMEOUT_S",
) -> Fitted:
    """`video` re-encoded to at most `max_bytes`; an OutputError saying why when it cannot be.
    Every ffmpeg and ffprobe call shares `timeout_s`; `limited_by` names what set it."""
    if preset not in X264_PRESETS:
        raise ValueError(f"unknown x264 preset {preset!r}")
    deadline = _Deadline(time.monotonic() + timeout_s, timeout_s, limited_by)
    try:
        with tempfile.TemporaryDirectory(prefix="wan-fit-") as folder:
            source = Path(folder) / "in.mp4"
            target = Path(folder) / "out.mp4"
            source.write_bytes(video)
            shape = probe_shape(source, deadline, "ComfyUI's video")
            if shape.frames < 1 or shape.fps <= 0:
                raise OutputError(
                    f"ComfyUI's video cannot be re-encoded: ffprobe finds {shape.describe()}."
                )
            floor = minimum_bytes(shape)
            if max_bytes < floor:
                raise OutputError(
                    f"The video ({shape.describe()}) cannot be made to fit {max_bytes} bytes: "
                    f"even at the lowest quality allowed ({MIN_BITS_PER_PIXEL} bits per "
                    f"pixel) it needs {floor} bytes."
                )
            bitrate = planned_bitrate(shape, max_bytes)
            lowest_rate = MIN_BITS_PER_PIXEL * shape.pixel_rate
            for attempt in range(1, MAX_ATTEMPTS + 1):
                _encode(source, target, shape, bitrate, preset, deadline)
                size = target.stat().st_size
                made = probe_shape(target, deadline, "the re-encoded video")
                if (made.width, made.height, made.frames) != (
                    shape.width,
                    shape.height,
                    shape.frames,
                ):
                    raise OutputError(
                        f"Re-encoding changed the video ({shape.describe()} became "
                        f"{made.describe()}), so it was not returned."
                    )
                if size <= max_bytes:
                    return Fitted(
                        video=target.read_bytes(),
                        original_bytes=len(video),
                        shape=shape,
                        bitrate=bitrate,
                        attempts=attempt,
                    )
                lower = int(bitrate * max_bytes / size * RETRY_MARGIN)
                if lower < lowest_rate:
                    why = (
                        "a lower rate would go below the lowest quality allowed "
                        f"({MIN_BITS_PER_PIXEL} bits per pixel)"
                    )
                    break
                if attempt < MAX_ATTEMPTS:
                    bitrate = lower
            else:
                why = f"that was the last of {MAX_ATTEMPTS} tries"
            raise OutputError(
                f"The video ({shape.describe()}) cannot be made to fit {max_bytes} bytes: at "
                f"{bitrate // 1000} kbit/s it still took {size} bytes, and {why}."
            )
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise  # a full disk is reported as such (errors.error_result)
        raise OutputError(f"Could not re-encode the video: {exc}") from None


@dataclass(frozen=True)
class _Deadline:
    """One time limit shared by every ffmpeg and ffprobe call of a fit."""

    at: float
    limit_s: float
    limited_by: str = "REENCODE_TIMEOUT_S"

    def remaining(self) -> float:
        return self.at - time.monotonic()


def _run(args: list[str], deadline: _Deadline, what: str) -> bytes:
    """Run one ffmpeg/ffprobe; its stdout, or an OutputError with its own last error lines."""
    try:
        left = deadline.remaining()
        if left <= 0:
            raise subprocess.TimeoutExpired(args[0], 0)
        done = subprocess.run(
            args, stdin=subprocess.DEVNULL, capture_output=True, check=False, timeout=left
        )
    except subprocess.TimeoutExpired:
        raise OutputError(
            f"Re-encoding the video took over {deadline.limit_s:g} s ({deadline.limited_by}) "
            "and was stopped."
        ) from None
    if done.returncode != 0:
        text = done.stderr.decode(errors="replace")
        for arg in args[1:]:  # name the temporary files, not where they were
            if arg.startswith("/"):
                text = text.replace(arg, Path(arg).name)
        lines = text.strip().splitlines()
        detail = "; ".join(line.strip() for line in lines[-3:]) or f"exit {done.returncode}"
        raise OutputError(f"{what} failed ({args[0]}: {detail}).")
    return done.stdout


def probe_shape(path: Path, deadline: _Deadline, what: str = "the video") -> VideoShape:
    """Width, height, frame count, frame rate and colour tags of the first video stream."""
    entries = (
        "stream=width,height,nb_frames,avg_frame_rate,r_frame_rate,"
        "color_range,color_space,color_transfer,color_primaries"
    )
    out = _run(
        [
            "ffprobe", "-v", "error", "-select_streams", "v:0",
            "-show_entries", entries, "-of", "json", str(path),
        ],
        deadline,
        f"Reading {what}",
    )  # fmt: skip
    streams = json.loads(out or b"{}").get("streams") or []
    if not streams:
        raise OutputError(f"{what[0].upper()}{what[1:]} has no video stream.")
    stream = streams[0]
    rate = stream.get("avg_frame_rate") or ""
    if rate in ("", "0/0"):
        rate = stream.get("r_frame_rate") or "0/1"
    frames = stream.get("nb_frames")
    if frames is None:  # not in the container's index: count by decoding
        frames = _count_frames(path, deadline, what)
    color = {
        key: str(stream[key])
        for key in ("color_range", "color_space", "color_transfer", "color_primaries")
        if stream.get(key) not in (None, "unknown", "reserved")
    }
    return VideoShape(
        width=int(stream.get("width") or 0),
        height=int(stream.get("height") or 0),
        frames=int(frames),
        fps=Fraction(rate),
        color=color,
    )


def _count_frames(path: Path, deadline: _Deadline, what: str) -> int:
    out = _run(
        [
            "ffprobe", "-v", "error", "-select_streams", "v:0", "-count_frames",
            "-show_entries", "stream=nb_read_frames", "-of", "csv=p=0", str(path),
        ],
        deadline,
        f"Counting the frames of {what}",
    )  # fmt: skip
    return int(out.decode().strip() or 0)


#: ffprobe's colour tag names, mapped to ffmpeg's output options.
COLOR_OPTIONS = {
    "color_range": "-color_range",
    "color_space": "-colorspace",
    "color_transfer": "-color_trc",
    "color_primaries": "-color_primaries",
}


def encode_args(
    source: Path, target: Path, shape: VideoShape, bitrate: int, preset: str
) -> list[str]:
    """The ffmpeg command line of one re-encode."""
    color: list[str] = []
    for key, value in shape.color.items():
        color += [COLOR_OPTIONS[key], value]
    buffer = int(bitrate * BUFFER_S)
    return [
        "ffmpeg", "-v", "error", "-nostdin", "-y", "-i", str(source),
        "-map", "0:v:0", "-map_metadata", "-1", "-map_chapters", "-1",
        "-c:v", "libx264", "-preset", preset, "-pix_fmt", "yuv420p",
        "-b:v", str(bitrate), "-maxrate", str(bitrate), "-bufsize", str(buffer),
        "-fps_mode", "passthrough", *color,
        "-movflags", "+faststart", "-f", "mp4", str(target),
    ]  # fmt: skip


def _encode(
    source: Path, target: Path, shape: VideoShape, bitrate: int, preset: str, deadline: _Deadline
) -> None:
    _run(
        encode_args(source, target, shape, bitrate, preset),
        deadline,
        "Re-encoding the video",
    )
