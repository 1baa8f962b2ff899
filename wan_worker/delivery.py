"""How the finished MP4 reaches the caller: a storage URL, inline base64, or both.

RunPod refuses job results over its payload limits (10 MB through /run, 20 MB through
/runsync), and base64 makes a file a third larger. So:

- with output storage configured (and UPLOAD_OUTPUTS on), the MP4 is uploaded and the result
  carries `video_url`; base64 is added only while it stays under MAX_BASE64_BYTES;
- without storage, the video is returned as base64 if it fits; otherwise it is re-encoded to
  fit (same size, frames and frame rate, a lower bitrate; wan_worker.video_fit) and the result
  says so: `reencoded`, `original_bytes` and `reencode_note` (how to get the original). Only
  a video that cannot be fitted fails the job, with an `output_error` that says why and how
  to configure storage; never with a result RunPod drops;
- if the upload fails, the caller still gets the video inline, with the reason in
  `upload_error`: as it is when it fits, re-encoded to fit when it does not. A job whose
  video was made is worth more to the caller as a smaller video plus the upload's error than
  as a failure; `storage_error` is left for when nothing can be returned at all.
"""

from __future__ import annotations

import base64
import time
from typing import Any

from wan_worker.errors import ConfigError, OutputError, StorageError, redact
from wan_worker.settings.worker import WorkerSettings
from wan_worker.storage import VideoStore
from wan_worker.video_fit import Fitted, fit_video

HOW_TO_STORE = (
    "Configure output storage (BUCKET_NAME, BUCKET_ACCESS_KEY_ID, BUCKET_SECRET_ACCESS_KEY, and "
    "BUCKET_ENDPOINT_URL for R2 or other S3-compatible storage) to receive a video_url"
)


def base64_size(n_bytes: int) -> int:
    return (n_bytes + 2) // 3 * 4


def inline_budget(max_base64_bytes: int) -> int:
    """The largest file whose base64 stays within `max_base64_bytes`."""
    return max_base64_bytes // 4 * 3


def deliver(
    video: bytes,
    name: str,
    settings: WorkerSettings,
    store: VideoStore | None,
    deadline: float | None = None,
) -> dict[str, Any]:
    """The output fields that carry the video; an error when it cannot be delivered. A re-encode
    to fit stops at the job's `deadline` (time.monotonic()) if that comes before
    REENCODE_TIMEOUT_S."""
    if not video:
        raise OutputError("ComfyUI produced an empty video file. Retry the job.")
    fits = base64_size(len(video)) <= settings.max_base64_bytes
    result: dict[str, Any] = {}
    upload_failed: StorageError | None = None
    if store is not None:
        try:
            uploaded = store.upload(video, name)
        except StorageError as exc:
            upload_failed = exc
            result["upload_error"] = redact(exc.message)
        else:
            result["video_url"] = uploaded.url
            result["video_key"] = uploaded.key
            result["url_expires_in_s"] = settings.storage.url_expiry_s
            if settings.include_base64 and fits:
                result["video"] = _base64(video)
            result["bytes"] = len(video)
            return result
    if not settings.include_base64:
        if upload_failed is not None:
            raise upload_failed
        raise ConfigError(
            "INCLUDE_BASE64 is off and no output storage is configured, so the video cannot be "
            f"returned. {HOW_TO_STORE}, or set INCLUDE_BASE64=1."
        )
    if fits:
        result.update(video=_base64(video), bytes=len(video))
        return result
    too_large = (
        f"The video is {len(video)} bytes ({base64_size(len(video))} as base64), above this "
        f"worker's inline limit of {settings.max_base64_bytes} bytes of base64 (RunPod "
        "refuses results over 10 MB on /run and 20 MB on /runsync)."
    )
    if not settings.reencode_to_fit:
        if upload_failed is not None:
            raise upload_failed
        raise OutputError(
            f"{too_large} {HOW_TO_STORE} instead, set REENCODE_TO_FIT=1 to receive it "
            "re-encoded to fit, or, if you only call /runsync, raise MAX_BASE64_BYTES up to "
            "19000000."
        )
    timeout_s, limited_by = reencode_limit(settings, deadline)
    try:
        fitted = fit_video(
            video,
            inline_budget(settings.max_base64_bytes),
            preset=settings.reencode_preset,
            timeout_s=timeout_s,
            limited_by=limited_by,
        )
    except OutputError as exc:
        if upload_failed is not None:
            raise StorageError(
                f"{upload_failed.message} The video could not be returned inline instead: "
                f"{too_large} Re-encoding it to fit failed: {exc.message}"
            ) from None
        raise OutputError(
            f"{too_large} Re-encoding it to fit failed: {exc.message} {HOW_TO_STORE} instead."
        ) from None
    original = (
        f"{HOW_TO_STORE[0].lower()}{HOW_TO_STORE[1:]}"
        if upload_failed is None
        else "fix the upload (upload_error) and run the job again"
    )
    result.update(fitted_fields(fitted, settings.max_base64_bytes, original))
    return result


def reencode_limit(settings: WorkerSettings, deadline: float | None) -> tuple[float, str]:
    """The re-encode's time limit, and the setting that set it: REENCODE_TIMEOUT_S, or what is
    left of the job's JOB_TIMEOUT_S where that is less."""
    if deadline is not None:
        left = max(0.0, deadline - time.monotonic())
        if left < settings.reencode_timeout_s:
            return round(left, 1), f"the rest of the job's JOB_TIMEOUT_S={settings.job_timeout_s:g}"
    return settings.reencode_timeout_s, "REENCODE_TIMEOUT_S"


def fitted_fields(fitted: Fitted, max_base64_bytes: int, original: str) -> dict[str, Any]:
    """The result fields of a video re-encoded to fit inline, and how to get the original."""
    shape = fitted.shape
    return {
        "video": _base64(fitted.video),
        "bytes": len(fitted.video),
        "reencoded": True,
        "original_bytes": fitted.original_bytes,
        "reencode_note": (
            f"The video was {fitted.original_bytes} bytes, too large to return inline "
            f"(MAX_BASE64_BYTES={max_base64_bytes} bytes of base64), so it was re-encoded at "
            f"{fitted.bitrate // 1000} kbit/s to {len(fitted.video)} bytes: the same "
            f"{shape.width}x{shape.height}, {shape.frames} frames at {float(shape.fps):g} fps, "
            f"at a lower quality. For the full-quality original, {original}."
        ),
    }


def _base64(video: bytes) -> str:
    return base64.b64encode(video).decode("ascii")


def make_store(settings: WorkerSettings) -> VideoStore | None:
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
