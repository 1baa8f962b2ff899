"""ffprobe on real MP4 bytes, for assertions about the videos the worker returns."""

from __future__ import annotations

import json
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

GRAPH = json.dumps({"260": {"class_type": "LoadImage", "inputs": {"image": "job-42.png"}}})


def make_mp4(
    folder: Path,
    *,
    size: str = "160x96",
    frames: int = 48,
    rate: str = "24",
    metadata: bool = False,
) -> bytes:
    """A noisy H.264 MP4 at crf 15 (large for its size), tagged as VHS tags its videos."""
    out = folder / "source.mp4"
    meta = (
        ["-metadata", f"prompt={GRAPH}", "-metadata", f"workflow={GRAPH}",
         "-metadata", f"comment={GRAPH}", "-movflags", "use_metadata_tags"]
        if metadata
        else []
    )  # fmt: skip
    subprocess.run(
        [
            "ffmpeg", "-v", "error", "-y", "-f", "lavfi",
            "-i", f"testsrc2=s={size}:r={rate},noise=alls=60:allf=t+u",
            "-frames:v", str(frames), "-c:v", "libx264", "-preset", "ultrafast", "-crf", "15",
            "-pix_fmt", "yuv420p", "-color_range", "tv", "-colorspace", "bt709",
            "-color_primaries", "bt709", "-color_trc", "bt709", *meta, str(out),
        ],
        check=True,
    )  # fmt: skip
    return out.read_bytes()


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


def tags(data: bytes) -> dict[str, str]:
    """Every metadata tag of the file and its streams, as ffprobe reads them (keys lowered)."""
    with tempfile.NamedTemporaryFile(suffix=".mp4") as handle:
        Path(handle.name).write_bytes(data)
        out = subprocess.run(
            [
                "ffprobe", "-v", "error", "-show_entries", "format_tags:stream_tags",
                "-of", "json", handle.name,
            ],
            check=True,
            capture_output=True,
        )  # fmt: skip
    info = json.loads(out.stdout)
    found: dict[str, str] = {}
    for section in [info.get("format", {}), *info.get("streams", [])]:
        for key, value in section.get("tags", {}).items():
            found[key.lower()] = value
    return found


def graph_tags(data: bytes) -> dict[str, str]:
    """The tags that carry a ComfyUI graph: `prompt`, `workflow`, or any tag holding node JSON."""
    return {
        key: value
        for key, value in tags(data).items()
        if key in ("prompt", "workflow", "comment") or "class_type" in value
    }
