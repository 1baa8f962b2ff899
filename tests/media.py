"""ffprobe on real MP4 bytes, for assertions about the videos the worker returns."""

from __future__ import annotations

import json
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class VideoInfo:
    codec: str
    width: int
    height: int
    frames: int
    fps: float


def probe(data: bytes) -> VideoInfo:
    with tempfile.NamedTemporaryFile(suffix=".mp4") as handle:
        Path(handle.name).write_bytes(data)
        out = subprocess.run(
            [
                "ffprobe", "-v", "error", "-select_streams", "v:0", "-count_frames",
                "-show_entries", "stream=codec_name,width,height,nb_read_frames,r_frame_rate",
                "-of", "json", handle.name,
            ],
            check=True,
            capture_output=True,
        )  # fmt: skip
    stream = json.loads(out.stdout)["streams"][0]
    num, _, den = stream["r_frame_rate"].partition("/")
    return VideoInfo(
        codec=stream["codec_name"],
        width=int(stream["width"]),
        height=int(stream["height"]),
        frames=int(stream["nb_read_frames"]),
        fps=float(num) / float(den or 1),
    )
