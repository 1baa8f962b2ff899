"""AWS S3's own hosts in front of a moto server, reached the way boto3 reaches AWS.

boto3 with no endpoint URL resolves AWS's host names itself (`<bucket>.s3.<region>.amazonaws.com`)
and speaks TLS to them. Setting `HTTPS_PROXY` to this proxy and `AWS_CA_BUNDLE` to its CA makes
that real path reach moto: each `CONNECT host:443` is refused unless the host is one AWS
serves (a real region; `s3.auto.amazonaws.com` does not resolve), then the tunnel's TLS is
ended with a certificate for that host, and every request in it goes to moto with its Host
header unchanged.

On the way it plays AWS's region rules for the buckets it knows: a request that reaches a
regional host other than the bucket's gets `301 PermanentRedirect`, and one signed for another
region (header or presigned query) gets `400 AuthorizationHeaderMalformed`, both naming the
bucket's region in `x-amz-bucket-region`, as S3 does. `requests` lists what arrived where.
"""

from __future__ import annotations

import datetime
import http.client
import re
import socketserver
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from botocore.session import get_session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

AWS_REGIONS = set(get_session().get_available_regions("s3"))
_HOST = re.compile(
    r"^(?:(?P<bucket>[a-z0-9.-]+)\.)?s3(?:[.-](?P<region>[a-z0-9-]+))?\.amazonaws\.com$"
)
_CREDENTIAL = re.compile(r"Credential=[^/,]+/\d{8}/(?P<region>[^/,]+)/s3/aws4_request")


@dataclass(frozen=True)
class Arrival:
    """One request as it reached "AWS"."""

    host: str
    method: str
    path: str
    signed_for: str | None
    status: int


def parse_host(host: str) -> tuple[str | None, str | None] | None:
    """(bucket or None, region or None for the global endpoint); None if AWS has no such host."""
    match = _HOST.match(host)
    if match is None:
        return None
    region = match.group("region")
    if region is not None and region not in AWS_REGIONS:
        return None
    return match.group("bucket"), region


class _Authority:
    """A throwaway CA and the certificates it signs, one per host."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test AWS front CA")])
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=False, key_cert_sign=True,
                    crl_sign=True, encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .sign(self.key, hashes.SHA256())
        )  # fmt: skip
        self.ca_file = folder / "ca.pem"
        self.ca_file.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        self._contexts: dict[str, ssl.SSLContext] = {}
        self._lock = threading.Lock()

    def context_for(self, host: str) -> ssl.SSLContext:
        with self._lock:
            if host not in self._contexts:
                self._contexts[host] = self._make_context(host)
            return self._contexts[host]

    def _make_context(self, host: str) -> ssl.SSLContext:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
            .add_extension(
                x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
            )
            .sign(self.key, hashes.SHA256())
        )
        pem = self.folder / f"{host}.pem"
        pem.write_bytes(
            cert.public_bytes(serialization.Encoding.PEM)
            + key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(pem)
        return context


class AwsS3Front:
    """The proxy; `bucket_regions` says which region holds each bucket created in moto."""

    def __init__(self, moto_url: str, folder: Path, bucket_regions: dict[str, str]) -> None:
        target = urlsplit(moto_url)
        self.target = (target.hostname or "127.0.0.1", target.port or 80)
        self.bucket_regions = bucket_regions
        self.authority = _Authority(folder)
        self.arrivals: list[Arrival] = []
        self.refused_hosts: list[str] = []
        self._lock = threading.Lock()
        front = self

        class Tunnel(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_CONNECT(self) -> None:
                host, _, port = self.path.rpartition(":")
                if port != "443" or parse_host(host) is None:
                    with front._lock:
                        front.refused_hosts.append(host)
                    self.send_error(502, f"cannot resolve {host}")
                    self.close_connection = True
                    return
                self.send_response(200, "Connection established")
                self.end_headers()
                context = front.authority.context_for(host)
                tls = context.wrap_socket(self.connection, server_side=True)
                try:
                    front._serve_tls(tls, host, self.client_address)
                finally:
                    self.close_connection = True

        class Server(socketserver.ThreadingMixIn, socketserver.TCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self.server = Server(("127.0.0.1", 0), Tunnel)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def ca_file(self) -> Path:
        return self.authority.ca_file

    def _serve_tls(self, tls: ssl.SSLSocket, host: str, client: Any) -> None:
        front = self

        class Inner(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def handle_one_request(self) -> None:
                try:
                    super().handle_one_request()
                except (ssl.SSLError, ConnectionError):
                    self.close_connection = True

            def relay(self) -> None:
                front._relay(self, host)

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = relay

        Inner(tls, client, self.server)

    def _region_problem(self, host: str, path: str, headers: Any) -> tuple[int, str, str] | None:
        """AWS's answer when the request reached or was signed for the wrong region."""
        parsed = parse_host(host)
        assert parsed is not None
        bucket, host_region = parsed
        if bucket is None:
            bucket = urlsplit(path).path.lstrip("/").split("/", 1)[0] or None
        region = self.bucket_regions.get(bucket or "")
        if region is None:
            return None
        if host_region is not None and host_region != region:
            return 301, "PermanentRedirect", region
        signed = signed_region(path, headers)
        if signed is not None and signed != region:
            return 400, "AuthorizationHeaderMalformed", region
        return None

    def _relay(self, handler: BaseHTTPRequestHandler, host: str) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        assert "chunked" not in handler.headers.get("Transfer-Encoding", ""), "not supported"
        body = handler.rfile.read(length) if length else b""
        problem = self._region_problem(host, handler.path, handler.headers)
        if problem is not None:
            status, code, region = problem
            payload = (
                b"" if handler.command == "HEAD" else
                f"<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code>"
                f"<Message>Wrong region</Message><Region>{region}</Region></Error>".encode()
            )  # fmt: skip
            handler.send_response(status)
            handler.send_header("x-amz-bucket-region", region)
            handler.send_header("Content-Type", "application/xml")
            handler.send_header("Content-Length", str(len(payload)))
            handler.end_headers()
            handler.wfile.write(payload)
            self._note(host, handler, status)
            return
        upstream = http.client.HTTPConnection(*self.target, timeout=30)
        try:
            headers = {k: v for k, v in handler.headers.items() if k.lower() != "connection"}
            upstream.request(handler.command, handler.path, body=body, headers=headers)
            reply = upstream.getresponse()
            data = reply.read()
        finally:
            upstream.close()
        handler.send_response(reply.status, reply.reason)
        for key, value in reply.getheaders():
            if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                handler.send_header(key, value)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        if handler.command != "HEAD":
            handler.wfile.write(data)
        self._note(host, handler, reply.status)

    def _note(self, host: str, handler: BaseHTTPRequestHandler, status: int) -> None:
        arrival = Arrival(
            host,
            handler.command,
            handler.path,
            signed_region(handler.path, handler.headers),
            status,
        )
        with self._lock:
            self.arrivals.append(arrival)


def signed_region(path: str, headers: Any) -> str | None:
    """The region a request is signed for: its Authorization header or presigned query."""
    match = _CREDENTIAL.search(headers.get("Authorization") or "")
    if match:
        return match.group("region")
    credential = parse_qs(urlsplit(path).query).get("X-Amz-Credential")
    if credential:
        parts = credential[0].split("/")
        return parts[2] if len(parts) >= 4 else None
    return None


@contextmanager
def aws_s3_front(
    moto_url: str, folder: Path, bucket_regions: dict[str, str]
) -> Iterator[AwsS3Front]:
    front = AwsS3Front(moto_url, folder, bucket_regions)
    front.thread.start()
    try:
        yield front
    finally:
        front.server.shutdown()
        front.server.server_close()
