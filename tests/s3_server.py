"""A real S3 API server on loopback (moto's server mode), for boto3 against real HTTP."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ACCESS_KEY = "AKIDTESTSTORAGE0001"
SECRET_KEY = "test-secret-key-which-must-never-leak"


@contextmanager
def moto_s3() -> Iterator[str]:
    """Start `moto_server` on a free port; yield its endpoint URL once it listens."""
    server = Path(sys.executable).with_name("moto_server")
    proc = subprocess.Popen(
        [str(server), "-H", "127.0.0.1", "-p", "0"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    url = None
    seen = []
    for line in proc.stderr:  # werkzeug announces the bound port once it listens
        seen.append(line)
        match = re.search(r"Running on (http://127\.0\.0\.1:\d+)", line)
        if match:
            url = match.group(1)
            break
    if url is None:
        proc.kill()
        raise RuntimeError("moto_server did not start: " + "".join(seen))
    threading.Thread(target=proc.stderr.read, daemon=True).start()
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def make_bucket(endpoint: str, name: str) -> None:
    import boto3

    boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        region_name="us-east-1",
    ).create_bucket(Bucket=name)
