"""Upload the finished MP4 to S3-compatible storage and hand back a presigned URL.

Works with AWS S3, Cloudflare R2, RunPod's S3 API and MinIO: the project's S3 client
(`wan_worker.s3`: SigV4, the region given, checksums only where required, standard retries)
and multipart transfers through `TransferConfig`. The runpod SDK's `rp_upload` is not used: it
fixes the URL expiry at seven days, cannot set a region for R2, splits uploads into 25 KB
parts, and silently saves to a local folder when credentials are missing, which on a
serverless worker loses the video.
"""

from __future__ import annotations

from dataclasses import dataclass

from wan_worker.errors import StorageError
from wan_worker.s3 import s3_client
from wan_worker.settings import StorageSettings

MIB = 1024 * 1024


@dataclass(frozen=True)
class Uploaded:
    key: str
    url: str


class VideoStore:
    """One bucket, one client; reused across jobs."""

    def __init__(self, settings: StorageSettings) -> None:
        from boto3.s3.transfer import TransferConfig

        self.settings = settings
        self.client = s3_client(
            endpoint_url=settings.endpoint_url,
            access_key_id=settings.access_key_id,
            secret_access_key=settings.secret_access_key,
            region=settings.region,
            retries=5,
            connect_timeout_s=10,
            read_timeout_s=60,
        )
        self.transfer = TransferConfig(
            multipart_threshold=16 * MIB, multipart_chunksize=8 * MIB, max_concurrency=8
        )

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
