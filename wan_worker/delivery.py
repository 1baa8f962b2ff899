"""How the finished MP4 reaches the caller: a storage URL, inline base64, or both.

RunPod refuses job results over its payload limits (10 MB through /run, 20 MB through
/runsync), and base64 makes a file a third larger. So:

- with output storage configured (and UPLOAD_OUTPUTS on), the MP4 is uploaded and the result
  carries `video_url`; base64 is added only while it stays under MAX_BASE64_BYTES;
- without storage, the video is returned as base64 if it fits, and otherwise the job fails
  with a message that says how to configure storage, never with a result RunPod drops;
- if the upload fails but the video fits inline, the caller still gets it, with the reason in
  `upload_error`.
"""

from __future__ import annotations

import base64
from typing import Any

from wan_worker.errors import ConfigError, OutputError, StorageError
from wan_worker.settings import Settings
from wan_worker.storage import VideoStore

HOW_TO_STORE = (
    "Configure output storage (BUCKET_NAME, BUCKET_ACCESS_KEY_ID, BUCKET_SECRET_ACCESS_KEY, and "
    "BUCKET_ENDPOINT_URL for R2 or other S3-compatible storage) to receive a video_url"
)


def base64_size(n_bytes: int) -> int:
    return (n_bytes + 2) // 3 * 4


def deliver(
    video: bytes, name: str, settings: Settings, store: VideoStore | None
) -> dict[str, Any]:
    """The output fields that carry the video; an error when it cannot be delivered."""
    if not video:
        raise OutputError("ComfyUI produced an empty video file. Retry the job.")
    fits = base64_size(len(video)) <= settings.max_base64_bytes
    inline = settings.include_base64 and fits
    result: dict[str, Any] = {}
    if store is not None:
        try:
            uploaded = store.upload(video, name)
        except StorageError as exc:
            if not inline:
                raise
            result["upload_error"] = exc.message
        else:
            result["video_url"] = uploaded.url
            result["video_key"] = uploaded.key
            result["url_expires_in_s"] = settings.storage.url_expiry_s
            if inline:
                result["video"] = base64.b64encode(video).decode("ascii")
            return result
    if not settings.include_base64:
        raise ConfigError(
            "INCLUDE_BASE64 is off and no output storage is configured, so the video cannot be "
            f"returned. {HOW_TO_STORE}, or set INCLUDE_BASE64=1."
        )
    if not fits:
        raise OutputError(
            f"The video is {len(video)} bytes ({base64_size(len(video))} as base64), above this "
            f"worker's inline limit of {settings.max_base64_bytes} bytes of base64 (RunPod "
            f"refuses results over 10 MB on /run and 20 MB on /runsync). {HOW_TO_STORE} instead, "
            "or, if you only call /runsync, raise MAX_BASE64_BYTES up to 19000000."
        )
    result["video"] = base64.b64encode(video).decode("ascii")
    return result


def make_store(settings: Settings) -> VideoStore | None:
    """The bucket client when storage is configured and uploads are on; else None."""
    storage = settings.storage
    if not settings.storage.upload:
        return None
    if not storage.configured:
        partial = [
            name
            for name, value in (
                ("BUCKET_NAME", storage.bucket),
                ("BUCKET_ACCESS_KEY_ID", storage.access_key_id),
                ("BUCKET_SECRET_ACCESS_KEY", storage.secret_access_key),
            )
            if not value
        ]
        if len(partial) < 3 or storage.endpoint_url:
            raise ConfigError(
                f"Output storage is only partly configured: {', '.join(partial)} missing. Set "
                "all of BUCKET_NAME, BUCKET_ACCESS_KEY_ID and BUCKET_SECRET_ACCESS_KEY, or none."
            )
        return None
    return VideoStore(storage)
