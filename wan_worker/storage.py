"""Upload the finished MP4 to S3-compatible storage and hand back a presigned URL.

Works with AWS S3, Cloudflare R2, RunPod's S3 API and MinIO: the project's S3 client
(`wan_worker.s3`: SigV4, the region given, checksums only where required, standard retries)
and multipart transfers through `TransferConfig`.

The region decides both the host boto3 talks to and the signature, of the upload and of the
presigned URL the caller gets. With an endpoint URL (R2, MinIO, RunPod) it is `auto` unless
BUCKET_REGION says otherwise; on AWS itself (no endpoint URL) it is BUCKET_REGION, or else the
bucket's own region, asked once with HeadBucket (S3 names it in `x-amz-bucket-region` even to a
key that may not list the bucket), so a presigned URL is signed for the region that serves it.

The runpod SDK's `rp_upload` is not used: it fixes the URL expiry at seven days, cannot set a
region for R2, splits uploads into 25 KB parts, and silently saves to a local folder when
credentials are missing, which on a serverless worker loses the video.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from wan_worker.errors import ConfigError, StorageError
from wan_worker.s3 import s3_client
from wan_worker.settings.worker import StorageSettings

MIB = 1024 * 1024
#: Where S3 answers a bucket's region question when no region is known yet.
AWS_DEFAULT_REGION = "us-east-1"


@dataclass(frozen=True)
class Uploaded:
    key: str
    url: str


class VideoStore:
    """One bucket, one client; reused across jobs."""

    def __init__(self, settings: StorageSettings) -> None:
        from boto3.s3.transfer import TransferConfig

        if settings.region == "auto" and not settings.endpoint_url:
            raise ConfigError(
                "BUCKET_REGION=auto is for Cloudflare R2 and other S3-compatible services, "
                "which need BUCKET_ENDPOINT_URL. For AWS S3 unset BUCKET_REGION (the bucket's "
                "region is then asked of S3) or set it to the bucket's region, e.g. eu-west-1."
            )
        self.settings = settings
        #: The region signed for; on AWS without BUCKET_REGION, known after the first upload.
        self.region: str | None = settings.region or ("auto" if settings.endpoint_url else None)
        self._client: Any = None
        self._lock = threading.Lock()
        self.transfer = TransferConfig(
            multipart_threshold=16 * MIB, multipart_chunksize=8 * MIB, max_concurrency=8
        )

    def _new_client(self, region: str) -> Any:
        return s3_client(
            endpoint_url=self.settings.endpoint_url,
            access_key_id=self.settings.access_key_id,
            secret_access_key=self.settings.secret_access_key,
            region=region,
            retries=5,
            connect_timeout_s=10,
            read_timeout_s=60,
        )

    def _bucket_region(self) -> str:
        """The AWS region that holds the bucket, from HeadBucket's `x-amz-bucket-region`."""
        from botocore.exceptions import ClientError

        try:
            reply = self._new_client(AWS_DEFAULT_REGION).head_bucket(Bucket=self.settings.bucket)
        except ClientError as exc:
            reply = exc.response  # a 403 (no ListBucket right) still names the region
            if str(reply.get("Error", {}).get("Code")) in ("404", "NoSuchBucket"):
                raise StorageError(
                    f"Bucket {self.settings.bucket!r} does not exist on AWS S3. Check "
                    "BUCKET_NAME, or set BUCKET_ENDPOINT_URL for R2 or another S3-compatible "
                    "service."
                ) from None
        headers = reply.get("ResponseMetadata", {}).get("HTTPHeaders", {})
        return str(headers.get("x-amz-bucket-region") or AWS_DEFAULT_REGION)

    @property
    def client(self) -> Any:
        """The boto3 client, signing for the bucket's region (asked of S3 the first time)."""
        with self._lock:
            if self._client is None:
                if self.region is None:
                    self.region = self._bucket_region()
                self._client = self._new_client(self.region)
            return self._client

    def key_for(self, name: str) -> str:
        prefix = self.settings.key_prefix
        return f"{prefix}/{name}" if prefix else name

    def upload(self, data: bytes, name: str) -> Uploaded:
        """Store `data` as `<prefix>/<name>` with type video/mp4; return its key and URL."""
        import io

        from botocore.exceptions import BotoCoreError, ClientError

        key = self.key_for(name)
        bucket = self.settings.bucket
        try:
            self.client.upload_fileobj(
                io.BytesIO(data),
                bucket,
                key,
                ExtraArgs={"ContentType": "video/mp4"},
                Config=self.transfer,
            )
            url = self.client.generate_presigned_url(
                "get_object",
                Params={"Bucket": bucket, "Key": key},
                ExpiresIn=self.settings.url_expiry_s,
            )
        except ClientError as exc:
            error = exc.response.get("Error", {})
            raise StorageError(
                f"Uploading the video to bucket {bucket!r} failed: {error.get('Code', '?')}: "
                f"{error.get('Message', exc)}. Check BUCKET_NAME, BUCKET_ENDPOINT_URL and that "
                "the access key may write to that bucket."
            ) from None
        except (BotoCoreError, OSError) as exc:
            raise StorageError(
                f"Uploading the video to bucket {bucket!r} failed: {exc}. Check "
                "BUCKET_ENDPOINT_URL and the worker's network."
            ) from None
        return Uploaded(key=key, url=str(url))
