"""Delivering the MP4: S3-compatible storage through a real S3 API server, base64 limits."""

from __future__ import annotations

import base64
from dataclasses import replace

import boto3
import pytest
import requests

from tests.conftest import ComfyServer, make_png
from tests.media import probe
from tests.s3_server import ACCESS_KEY, SECRET_KEY, make_bucket, moto_s3
from wan_worker.delivery import deliver, make_store
from wan_worker.errors import ConfigError, OutputError, error_result
from wan_worker.handler import handle
from wan_worker.settings import Settings, StorageSettings

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


def test_upload_returns_a_presigned_url_to_the_exact_bytes(s3):
    settings = Settings(storage=storage(s3))
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


def test_large_videos_go_by_url_only(s3):
    settings = Settings(storage=storage(s3), max_base64_bytes=1000)
    result = deliver(VIDEO, "job-2.mp4", settings, make_store(settings))
    assert "video" not in result
    assert requests.get(result["video_url"], timeout=10).content == VIDEO


def test_a_multipart_upload_arrives_whole(s3):
    big = bytes(range(256)) * (20 * 1024 * 1024 // 256 + 7)  # above the 16 MiB threshold
    settings = Settings(storage=storage(s3), include_base64=False)
    result = deliver(big, "big.mp4", settings, make_store(settings))
    assert requests.get(result["video_url"], timeout=30).content == big


def test_a_failed_upload_says_why_and_falls_back_to_inline(s3):
    settings = Settings(storage=storage(s3, bucket="no-such-bucket"))
    result = deliver(VIDEO, "job-3.mp4", settings, make_store(settings))
    assert base64.b64decode(result["video"]) == VIDEO
    assert "NoSuchBucket" in result["upload_error"]
    too_big = replace(settings, max_base64_bytes=100)
    with pytest.raises(Exception) as caught:
        deliver(VIDEO, "job-4.mp4", too_big, make_store(too_big))
    error = error_result(caught.value)
    assert error["error_code"] == "storage_error"
    assert "Uploading the video to bucket 'no-such-bucket' failed: NoSuchBucket" in error["error"]


def test_without_storage_a_large_video_is_an_error_that_says_how_to_fix_it():
    with pytest.raises(OutputError) as caught:
        deliver(VIDEO, "x.mp4", Settings(max_base64_bytes=1000), None)
    message = caught.value.message
    assert "above this worker's inline limit of 1000 bytes of base64" in message
    assert "BUCKET_NAME, BUCKET_ACCESS_KEY_ID, BUCKET_SECRET_ACCESS_KEY" in message
    assert "raise MAX_BASE64_BYTES" in message


def test_base64_off_without_storage_is_a_config_error():
    with pytest.raises(ConfigError, match="INCLUDE_BASE64 is off and no output storage"):
        deliver(VIDEO, "x.mp4", Settings(include_base64=False), None)


def test_partial_storage_configuration_is_refused():
    with pytest.raises(ConfigError, match="BUCKET_SECRET_ACCESS_KEY missing"):
        make_store(Settings(storage=StorageSettings(bucket="b", access_key_id="k")))
    assert make_store(Settings()) is None
    assert (
        make_store(
            Settings(
                storage=StorageSettings(
                    bucket="b", access_key_id="k", secret_access_key="s", upload=False
                )
            )
        )
        is None
    )


def test_storage_settings_come_from_the_environment():
    settings = Settings.from_env(
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
