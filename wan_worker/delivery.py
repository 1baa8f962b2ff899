"""How the finished MP4 reaches the caller: inline base64, within RunPod's payload limits.

RunPod refuses job results over its payload limits (10 MB through /run, 20 MB through
/runsync), and base64 makes a file a third larger, so the inline video is capped by
MAX_BASE64_BYTES (default 9.5 MB of base64, safe for both routes). A larger video is an error
that says how to configure storage or raise the cap, never a result RunPod drops.
"""

from __future__ import annotations

import base64
from typing import Any

from wan_worker.errors import OutputError
from wan_worker.settings import Settings


def base64_size(n_bytes: int) -> int:
    return (n_bytes + 2) // 3 * 4


def deliver(video: bytes, settings: Settings) -> dict[str, Any]:
    """The output fields that carry the video, or OutputError when it cannot be delivered."""
    if not video:
        raise OutputError("ComfyUI produced an empty video file. Retry the job.")
    encoded_size = base64_size(len(video))
    if not settings.include_base64:
        raise OutputError(
            "INCLUDE_BASE64 is off and no output storage is configured, so the video cannot be "
            "returned. Set BUCKET_NAME, BUCKET_ACCESS_KEY_ID and BUCKET_SECRET_ACCESS_KEY (and "
            "BUCKET_ENDPOINT_URL for R2 or other S3-compatible storage), or set INCLUDE_BASE64=1."
        )
    if encoded_size > settings.max_base64_bytes:
        raise OutputError(
            f"The video is {len(video)} bytes ({encoded_size} as base64), above this worker's "
            f"inline limit of {settings.max_base64_bytes} bytes of base64 (RunPod refuses "
            "results over 10 MB on /run and 20 MB on /runsync). Configure output storage "
            "(BUCKET_NAME, BUCKET_ACCESS_KEY_ID, BUCKET_SECRET_ACCESS_KEY, BUCKET_ENDPOINT_URL) "
            "to receive a video_url instead, or, if you only call /runsync, raise "
            "MAX_BASE64_BYTES up to 19000000."
        )
    return {"video": base64.b64encode(video).decode("ascii")}
