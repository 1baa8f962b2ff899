"""One way to build an S3 API client, for output storage and for the models' R2 bucket alike.

boto3 with SigV4 and the region given (R2 takes `auto`), checksums only where the service
requires them (R2 refuses the newer default CRC checksum headers), and retries in boto3's
standard mode. On AWS itself (no endpoint URL) requests and presigned URLs go to the region's
own host, `<bucket>.s3.<region>.amazonaws.com`: boto3 would otherwise presign for the global
`<bucket>.s3.amazonaws.com`, which answers a bucket younger than a day outside us-east-1 with a
redirect to another host, and a SigV4 signature covers the host.

Each client gets a session of its own, so clients may be built from any thread.
boto3 is imported here, when a client is built, so a start that needs none never loads it.
"""

from __future__ import annotations

from typing import Any


def s3_client(
    *,
    endpoint_url: str,
    access_key_id: str,
    secret_access_key: str,
    region: str,
    retries: int,
    connect_timeout_s: float,
    read_timeout_s: float,
    max_pool_connections: int = 10,
) -> Any:
    """A boto3 S3 client; `endpoint_url` empty means AWS itself."""
    import boto3
    from botocore.config import Config

    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint_url or None,
        aws_access_key_id=access_key_id,
        aws_secret_access_key=secret_access_key,
        region_name=region,
        config=Config(
            signature_version="s3v4",
            s3=None if endpoint_url else {"addressing_style": "virtual"},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            retries={"max_attempts": retries, "mode": "standard"},
            connect_timeout=connect_timeout_s,
            read_timeout=read_timeout_s,
            max_pool_connections=max_pool_connections,
        ),
    )
