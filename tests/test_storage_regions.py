"""Output storage finds its region: AWS S3 by default, R2 with `auto`, over real S3 HTTP.

AWS style: no endpoint URL, so boto3 resolves AWS's own host names and speaks TLS to them; an
HTTPS proxy that plays AWS's hosts and region rules (tests/aws_s3_front.py) hands the requests
to moto. R2 style: an endpoint URL (moto's) and the region `auto`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest
import requests

from tests.aws_s3_front import AwsS3Front, aws_s3_front
from tests.s3_server import ACCESS_KEY, SECRET_KEY, moto_s3
from wan_worker.delivery import deliver, make_store
from wan_worker.errors import ConfigError, StorageError
from wan_worker.s3 import s3_client
from wan_worker.settings.worker import WorkerSettings

pytestmark = pytest.mark.integration  # moto's S3 server on loopback

VIDEO = b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 16
BUCKETS = {"videos-eu": "eu-west-2", "videos-us": "us-east-1"}
KEYS = {"BUCKET_ACCESS_KEY_ID": ACCESS_KEY, "BUCKET_SECRET_ACCESS_KEY": SECRET_KEY}


@pytest.fixture(scope="module")
def moto() -> Iterator[str]:
    with moto_s3() as endpoint:
        for bucket, region in BUCKETS.items():
            client = boto3.client(
                "s3", endpoint_url=endpoint, region_name=region,
                aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
            )  # fmt: skip
            config = {} if region == "us-east-1" else {"LocationConstraint": region}
            client.create_bucket(
                Bucket=bucket, **({"CreateBucketConfiguration": config} if config else {})
            )
        yield endpoint


@pytest.fixture
def aws(moto: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[AwsS3Front]:
    """boto3 (and requests) reach "AWS" through the front, with nothing else configured."""
    with aws_s3_front(moto, tmp_path, BUCKETS) as front:
        for name in ("NO_PROXY", "no_proxy", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3",
                     "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE"):  # fmt: skip
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("HTTPS_PROXY", front.url)
        monkeypatch.setenv("AWS_CA_BUNDLE", str(front.ca_file))
        monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
        monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
        yield front


def fetch(url: str, front: AwsS3Front) -> requests.Response:
    return requests.get(url, proxies={"https": front.url}, verify=str(front.ca_file), timeout=10)


def signed_for(url: str) -> str:
    return parse_qs(urlsplit(url).query)["X-Amz-Credential"][0].split("/")[2]


def test_aws_by_default_uploads_to_the_buckets_region_and_signs_the_url_for_it(aws):
    settings = WorkerSettings.from_env({"BUCKET_NAME": "videos-eu", **KEYS})
    assert (settings.storage.endpoint_url, settings.storage.region) == ("", "")
    result = deliver(VIDEO, "job-1.mp4", settings, make_store(settings))
    url = result["video_url"]
    assert urlsplit(url).hostname == "videos-eu.s3.eu-west-2.amazonaws.com"
    assert signed_for(url) == "eu-west-2"
    answer = fetch(url, aws)
    assert answer.status_code == 200 and answer.content == VIDEO
    uploads = [a for a in aws.arrivals if a.method == "PUT"]
    assert [(a.host, a.signed_for, a.status) for a in uploads] == [
        ("videos-eu.s3.eu-west-2.amazonaws.com", "eu-west-2", 200)
    ]
    assert aws.refused_hosts == []


def test_the_region_is_asked_once_per_worker(aws):
    settings = WorkerSettings.from_env({"BUCKET_NAME": "videos-eu", **KEYS})
    store = make_store(settings)
    for name in ("a.mp4", "b.mp4"):
        deliver(VIDEO, name, settings, store)
    heads = [a for a in aws.arrivals if a.method == "HEAD"]
    assert heads and all(a.path.rstrip("/") in ("", "/videos-eu") for a in heads)
    assert sum(a.status == 200 for a in heads) == 1  # asked once: later uploads know it
    assert len([a for a in aws.arrivals if a.method == "PUT" and a.status == 200]) == 2


def test_a_bucket_in_us_east_1_works_by_default_too(aws):
    settings = WorkerSettings.from_env({"BUCKET_NAME": "videos-us", **KEYS})
    url = deliver(VIDEO, "us.mp4", settings, make_store(settings))["video_url"]
    assert signed_for(url) == "us-east-1"
    assert fetch(url, aws).content == VIDEO


def test_a_given_region_is_used_without_asking(aws):
    settings = WorkerSettings.from_env(
        {"BUCKET_NAME": "videos-eu", "BUCKET_REGION": "eu-west-2", **KEYS}
    )
    url = deliver(VIDEO, "given.mp4", settings, make_store(settings))["video_url"]
    assert fetch(url, aws).content == VIDEO
    assert [a.method for a in aws.arrivals if a.method != "GET"] == ["PUT"]


def test_region_auto_on_aws_is_refused_at_start_because_aws_has_no_such_host(aws):
    """The old default: boto3 would look for s3.auto.amazonaws.com, which does not exist."""
    with pytest.raises(Exception):  # noqa: B017 - whatever boto3 raises for a host that is not
        s3_client(
            endpoint_url="", access_key_id=ACCESS_KEY, secret_access_key=SECRET_KEY,
            region="auto", retries=1, connect_timeout_s=5, read_timeout_s=5,
        ).put_object(Bucket="videos-eu", Key="x", Body=b"x")  # fmt: skip
    assert set(aws.refused_hosts) == {"videos-eu.s3.auto.amazonaws.com"}
    settings = WorkerSettings.from_env(
        {"BUCKET_NAME": "videos-eu", "BUCKET_REGION": "auto", **KEYS}
    )
    with pytest.raises(ConfigError, match="BUCKET_REGION=auto is for Cloudflare R2"):
        make_store(settings)


def test_a_missing_aws_bucket_is_a_storage_error_naming_it(aws):
    settings = WorkerSettings.from_env(
        {"BUCKET_NAME": "no-such-videos", "MAX_BASE64_BYTES": "0", **KEYS}
    )
    with pytest.raises(StorageError, match="Bucket 'no-such-videos' does not exist on AWS S3"):
        deliver(VIDEO, "x.mp4", settings, make_store(settings))


def test_r2_style_signs_for_auto_at_the_endpoint_given(moto: str):
    settings = WorkerSettings.from_env(
        {"BUCKET_ENDPOINT_URL": moto, "BUCKET_NAME": "videos-eu", **KEYS}
    )
    assert settings.storage.region == "auto"
    url = deliver(VIDEO, "r2.mp4", settings, make_store(settings))["video_url"]
    assert url.startswith(moto + "/")
    assert signed_for(url) == "auto"
    assert requests.get(url, timeout=10).content == VIDEO
