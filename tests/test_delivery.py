"""Delivering the MP4: S3-compatible storage through a real S3 API server, base64 limits."""

from __future__ import annotations

import base64
import time
from dataclasses import replace
from pathlib import Path

import boto3
import pytest
import requests

from tests.media import graph_tags, make_mp4, probe
from tests.s3_server import ACCESS_KEY, SECRET_KEY, make_bucket, moto_s3
from tests.support import ComfyServer, make_png
from wan_worker.delivery import deliver, make_store, reencode_limit
from wan_worker.errors import ConfigError, OutputError, error_result
from wan_worker.handler import handle
from wan_worker.settings.worker import StorageSettings, WorkerSettings

VIDEO = b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 40


@pytest.fixture(scope="module")
def s3():
    with moto_s3() as endpoint:
        make_bucket(endpoint, "videos")
        yield endpoint


def storage(endpoint: str, **overrides) -> StorageSettings:
    values = {
        "endpoint_url": endpoint,
        "bucket": "videos",
        "access_key_id": ACCESS_KEY,
        "secret_access_key": SECRET_KEY,
        "region": "auto",  # as for Cloudflare R2
        "key_prefix": "outputs/wan",
        "url_expiry_s": 600,
    }
    values.update(overrides)
    return StorageSettings(**values)


@pytest.mark.integration
def test_upload_returns_a_presigned_url_to_the_exact_bytes(s3):
    settings = WorkerSettings(storage=storage(s3))
    result = deliver(VIDEO, "job-1.mp4", settings, make_store(settings))
    assert result["video_key"] == "outputs/wan/job-1.mp4"
    assert result["url_expires_in_s"] == 600
    assert "X-Amz-Expires=600" in result["video_url"]
    fetched = requests.get(result["video_url"], timeout=10)
    assert fetched.status_code == 200 and fetched.content == VIDEO
    head = boto3.client(
        "s3", endpoint_url=s3, aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
        region_name="auto",
    ).head_object(Bucket="videos", Key="outputs/wan/job-1.mp4")  # fmt: skip
    assert head["ContentType"] == "video/mp4"
    assert base64.b64decode(result["video"]) == VIDEO  # small enough to also go inline


@pytest.mark.integration
def test_large_videos_go_by_url_only(s3):
    settings = WorkerSettings(storage=storage(s3), max_base64_bytes=1000)
    result = deliver(VIDEO, "job-2.mp4", settings, make_store(settings))
    assert "video" not in result
    assert "reencoded" not in result  # with storage the original is never re-encoded
    assert result["bytes"] == len(VIDEO)
    assert requests.get(result["video_url"], timeout=10).content == VIDEO


@pytest.mark.integration
def test_a_multipart_upload_arrives_whole(s3):
    big = bytes(range(256)) * (20 * 1024 * 1024 // 256 + 7)  # above the 16 MiB threshold
    settings = WorkerSettings(storage=storage(s3), include_base64=False)
    result = deliver(big, "big.mp4", settings, make_store(settings))
    assert requests.get(result["video_url"], timeout=30).content == big


@pytest.mark.integration
def test_a_failed_upload_says_why_and_falls_back_to_inline(s3):
    settings = WorkerSettings(storage=storage(s3, bucket="no-such-bucket"))
    result = deliver(VIDEO, "job-3.mp4", settings, make_store(settings))
    assert base64.b64decode(result["video"]) == VIDEO
    assert "NoSuchBucket" in result["upload_error"]


@pytest.mark.integration
def test_a_failed_upload_of_a_large_video_returns_it_fitted_inline(s3, tmp_path: Path):
    """The video was made: a smaller copy and the upload's error beat a failed job."""
    video = make_mp4(tmp_path)
    budget = len(video) // 2
    settings = WorkerSettings(storage=storage(s3, bucket="no-such-bucket"), max_base64_bytes=budget)
    result = deliver(video, "job-4.mp4", settings, make_store(settings))
    assert "NoSuchBucket" in result["upload_error"]
    assert "video_url" not in result
    fitted = base64.b64decode(result["video"])
    assert len(result["video"]) <= budget and result["bytes"] == len(fitted)
    assert (result["reencoded"], result["original_bytes"]) == (True, len(video))
    assert result["reencode_note"].endswith(
        "For the full-quality original, fix the upload (upload_error) and run the job again."
    )
    assert probe(fitted).frames == 48


@pytest.mark.integration
def test_a_failed_upload_of_a_video_that_cannot_be_fitted_is_a_storage_error(s3):
    settings = WorkerSettings(storage=storage(s3, bucket="no-such-bucket"), max_base64_bytes=100)
    with pytest.raises(Exception) as caught:
        deliver(VIDEO, "job-5.mp4", settings, make_store(settings))
    error = error_result(caught.value)
    assert error["error_code"] == "storage_error"
    message = error["error"]
    assert message.startswith(
        "storage_error: Uploading the video to bucket 'no-such-bucket' failed: NoSuchBucket"
    )
    assert "The video could not be returned inline instead: The video is 10252 bytes" in message
    assert "Re-encoding it to fit failed: Reading ComfyUI's video failed (ffprobe: " in message
    off = replace(settings, reencode_to_fit=False)
    with pytest.raises(Exception) as caught:
        deliver(VIDEO, "job-6.mp4", off, make_store(off))
    assert error_result(caught.value)["error_code"] == "storage_error"


@pytest.mark.integration
def test_without_storage_a_large_video_is_fitted_and_says_so(tmp_path: Path):
    video = make_mp4(tmp_path, metadata=True)
    budget = len(video) // 3
    result = deliver(video, "x.mp4", WorkerSettings(max_base64_bytes=budget), None)
    fitted = base64.b64decode(result["video"])
    assert len(result["video"]) <= budget
    info = probe(fitted)
    assert (info.codec, info.width, info.height, info.frames, info.fps) == (
        "h264",
        160,
        96,
        48,
        24.0,
    )
    assert graph_tags(fitted) == {}
    assert result["reencoded"] is True
    assert result["original_bytes"] == len(video)
    assert result["bytes"] == len(fitted) < len(video)
    note = result["reencode_note"]
    assert note.startswith(f"The video was {len(video)} bytes, too large to return inline ")
    assert f"(MAX_BASE64_BYTES={budget} bytes of base64)" in note
    assert "the same 160x96, 48 frames at 24 fps, at a lower quality." in note
    assert "configure output storage (BUCKET_NAME, BUCKET_ACCESS_KEY_ID" in note


@pytest.mark.integration
def test_a_video_that_fits_is_returned_as_it_is(tmp_path: Path):
    video = make_mp4(tmp_path)
    result = deliver(video, "x.mp4", WorkerSettings(), None)
    assert base64.b64decode(result["video"]) == video
    assert result["bytes"] == len(video)
    assert "reencoded" not in result and "original_bytes" not in result


@pytest.mark.integration
def test_without_storage_a_video_that_cannot_be_fitted_says_why_and_how_to_fix_it(
    tmp_path: Path,
):
    video = make_mp4(tmp_path)
    with pytest.raises(OutputError) as caught:
        deliver(video, "x.mp4", WorkerSettings(max_base64_bytes=4000), None)
    message = caught.value.message
    assert message.startswith(
        f"The video is {len(video)} bytes ({(len(video) + 2) // 3 * 4} as base64), above this "
        "worker's inline limit of 4000 bytes of base64"
    )
    assert (
        "Re-encoding it to fit failed: The video (160x96, 48 frames at 24 fps) cannot be "
        "made to fit 3000 bytes: even at the lowest quality allowed" in message
    )
    assert message.endswith(
        "Configure output storage (BUCKET_NAME, BUCKET_ACCESS_KEY_ID, BUCKET_SECRET_ACCESS_KEY, "
        "and BUCKET_ENDPOINT_URL for R2 or other S3-compatible storage) to receive a video_url "
        "instead."
    )
    with pytest.raises(OutputError) as caught:
        deliver(b"not an mp4" * 100, "x.mp4", WorkerSettings(max_base64_bytes=1000), None)
    assert "Re-encoding it to fit failed: Reading ComfyUI's video failed (ffprobe: " in (
        caught.value.message
    )


@pytest.mark.integration
def test_the_fit_stops_at_the_jobs_deadline_when_that_comes_first(tmp_path: Path):
    """A job near its JOB_TIMEOUT_S gets only what is left of it for the re-encode, not all of
    REENCODE_TIMEOUT_S: the job never runs past its deadline, and the error says which limit."""
    video = make_mp4(tmp_path)
    settings = WorkerSettings(max_base64_bytes=len(video), job_timeout_s=900)
    with pytest.raises(OutputError) as caught:
        deliver(video, "x.mp4", settings, None, deadline=time.monotonic())
    message = caught.value.message
    assert (
        "Re-encoding it to fit failed: Re-encoding the video took over 0 s (the rest of the "
        "job's JOB_TIMEOUT_S=900) and was stopped." in message
    )
    assert message.endswith("to receive a video_url instead.")
    # With time to spare the same video is fitted, within REENCODE_TIMEOUT_S as before.
    fitted = deliver(video, "x.mp4", settings, None, deadline=time.monotonic() + 900)
    assert fitted["reencoded"] is True and len(fitted["video"]) <= len(video)


def test_the_reencode_limit_is_the_sooner_of_its_own_and_the_jobs():
    settings = WorkerSettings(reencode_timeout_s=300, job_timeout_s=900)
    assert reencode_limit(settings, None) == (300, "REENCODE_TIMEOUT_S")
    assert reencode_limit(settings, time.monotonic() + 600) == (300, "REENCODE_TIMEOUT_S")
    limit, why = reencode_limit(settings, time.monotonic() + 42)
    assert 41 <= limit <= 42 and why == "the rest of the job's JOB_TIMEOUT_S=900"
    assert reencode_limit(settings, time.monotonic() - 5)[0] == 0


def test_with_reencoding_off_a_large_video_is_an_error_that_says_how_to_fix_it():
    with pytest.raises(OutputError) as caught:
        deliver(VIDEO, "x.mp4", WorkerSettings(max_base64_bytes=1000, reencode_to_fit=False), None)
    message = caught.value.message
    assert "above this worker's inline limit of 1000 bytes of base64" in message
    assert "BUCKET_NAME, BUCKET_ACCESS_KEY_ID, BUCKET_SECRET_ACCESS_KEY" in message
    assert "set REENCODE_TO_FIT=1" in message
    assert "raise MAX_BASE64_BYTES" in message


def test_base64_off_without_storage_is_a_config_error():
    with pytest.raises(ConfigError, match="INCLUDE_BASE64 is off and no output storage"):
        deliver(VIDEO, "x.mp4", WorkerSettings(include_base64=False), None)


def test_partial_storage_configuration_is_refused():
    with pytest.raises(ConfigError, match="BUCKET_SECRET_ACCESS_KEY missing"):
        make_store(WorkerSettings(storage=StorageSettings(bucket="b", access_key_id="k")))
    assert make_store(WorkerSettings()) is None
    assert (
        make_store(
            WorkerSettings(
                storage=StorageSettings(
                    bucket="b", access_key_id="k", secret_access_key="s", upload=False
                )
            )
        )
        is None
    )


def test_storage_settings_come_from_the_environment():
    settings = WorkerSettings.from_env(
        {
            "BUCKET_ENDPOINT_URL": "https://acct.r2.cloudflarestorage.com",
            "BUCKET_NAME": "out",
            "BUCKET_ACCESS_KEY_ID": "id",
            "BUCKET_SECRET_ACCESS_KEY": "secret",
            "BUCKET_KEY_PREFIX": "/videos/",
            "BUCKET_URL_EXPIRY_S": "3600",
        }
    )
    assert settings.storage.configured
    assert (
        settings.storage.key_prefix,
        settings.storage.url_expiry_s,
        settings.storage.region,
    ) == ("videos", 3600, "auto")
    assert "secret" not in repr(settings)


def test_reencode_settings_come_from_the_environment():
    defaults = WorkerSettings.from_env({})
    assert (defaults.reencode_to_fit, defaults.reencode_preset, defaults.reencode_timeout_s) == (
        True,
        "veryfast",
        300.0,
    )
    settings = WorkerSettings.from_env(
        {"REENCODE_TO_FIT": "0", "REENCODE_PRESET": "Medium", "REENCODE_TIMEOUT_S": "60"}
    )
    assert (settings.reencode_to_fit, settings.reencode_preset, settings.reencode_timeout_s) == (
        False,
        "medium",
        60.0,
    )
    with pytest.raises(ConfigError, match="REENCODE_PRESET='warp' must be one of: ultrafast"):
        WorkerSettings.from_env({"REENCODE_PRESET": "warp"})
    with pytest.raises(ConfigError, match="REENCODE_TIMEOUT_S='0' must be at least 1"):
        WorkerSettings.from_env({"REENCODE_TIMEOUT_S": "0"})


@pytest.mark.integration
def test_a_job_uploads_its_video_end_to_end(comfy: ComfyServer, s3):
    worker = comfy.worker(storage=storage(s3), max_base64_bytes=10)
    worker.store = make_store(worker.settings)
    job = {
        "id": "upload-job",
        "input": {
            "start_image": base64.b64encode(make_png()).decode(),
            "prompt": "p",
            "width": 128,
            "height": 128,
        },
    }
    result = handle(job, worker)
    assert "error" not in result, result
    assert "video" not in result
    assert result["video_key"].startswith("outputs/wan/upload-job-") and result[
        "video_key"
    ].endswith(".mp4")
    video = requests.get(result["video_url"], timeout=10).content
    assert len(video) == result["bytes"]
    assert probe(video).frames == 161
