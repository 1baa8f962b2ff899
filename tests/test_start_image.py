"""start_image: URLs over real loopback HTTP, base64, data URIs; every failure names the fix."""

from __future__ import annotations

import base64
import io
import zlib

import pytest
from aiohttp import web
from PIL import Image

from tests.support import make_png, serve
from wan_worker.errors import InputError
from wan_worker.settings.worker import WorkerSettings
from wan_worker.start_image import load_start_image

SETTINGS = WorkerSettings(
    max_image_bytes=200_000, max_image_pixels=1_000_000, image_fetch_timeout_s=2
)
PNG = make_png(160, 128)


def encode(data: bytes) -> str:
    return base64.b64encode(data).decode()


def jpeg(width=64, height=48, **save) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (10, 200, 30)).save(buffer, format="JPEG", **save)
    return buffer.getvalue()


def failure(value: str, settings: WorkerSettings = SETTINGS) -> str:
    with pytest.raises(InputError) as caught:
        load_start_image(value, settings)
    assert [p.field for p in caught.value.problems] == ["start_image"]
    return caught.value.message


def test_raw_base64_png_is_verified_and_reencoded():
    image = load_start_image(encode(PNG), SETTINGS)
    assert (image.width, image.height, image.source_format) == (160, 128, "PNG")
    decoded = Image.open(io.BytesIO(image.png))
    assert decoded.format == "PNG" and decoded.mode == "RGB" and decoded.size == (160, 128)


def test_data_uri_wrapped_and_urlsafe_base64_are_accepted():
    wrapped = "\n".join(encode(PNG)[i : i + 76] for i in range(0, len(encode(PNG)), 76))
    assert load_start_image("data:image/png;base64," + wrapped, SETTINGS).width == 160
    urlsafe = base64.urlsafe_b64encode(jpeg()).decode().rstrip("=")
    assert load_start_image(urlsafe, SETTINGS).source_format == "JPEG"


def test_exif_orientation_is_applied():
    buffer = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    Image.new("RGB", (80, 40), (1, 2, 3)).save(buffer, format="JPEG", exif=exif)
    image = load_start_image(encode(buffer.getvalue()), SETTINGS)
    assert (image.width, image.height) == (40, 80)


def test_alpha_and_palette_images_become_rgb():
    for mode in ("RGBA", "P", "LA", "I;16"):
        buffer = io.BytesIO()
        Image.new(mode, (32, 32)).save(buffer, format="PNG")
        assert (
            Image.open(io.BytesIO(load_start_image(encode(buffer.getvalue()), SETTINGS).png)).mode
            == "RGB"
        )


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("not base64 at all!!", "is not valid base64"),
        (encode(b"just some text, not an image"), "are not an image Pillow can read"),
        (encode(PNG[: len(PNG) // 2]), "the image is damaged or cut off"),
        (
            "data:text/plain;base64," + encode(b"hello"),
            "the data URI has media type text/plain, not an image",
        ),
        ("data:image/png," + "abc", "the data URI is not base64-encoded"),
        ("ftp://example.com/a.png", "URL scheme 'ftp' is not supported"),
        ("file:///etc/passwd", "URL scheme 'file' is not supported"),
        (" \n ", "decodes to nothing"),
    ],
)
def test_bad_sources_are_rejected_with_a_fix(value, text):
    message = failure(value)
    assert text in message
    assert message.startswith("start_image: ")


def test_size_caps_hold_before_decoding():
    big = encode(b"\0" * 300_000)
    assert "larger than 200000 bytes" in failure(big)


def test_tiny_and_oversized_images_are_rejected():
    assert "is only 8x8 pixels" in failure(encode(make_png(8, 8)))
    # 2000 x 2000 one-bit pixels are a few kB on disk but above this deployment's cap.
    buffer = io.BytesIO()
    Image.new("1", (2000, 2000)).save(buffer, format="PNG")
    assert "above the limit of 1000000" in failure(encode(buffer.getvalue()))


def test_decompression_bomb_is_refused():
    # 12000 x 12000 of a single colour compresses to a few kB but would need 432 MB decoded.
    width = height = 12000
    raw = zlib.compress(b"".join(b"\x00" + b"\x00" * width for _ in range(height)), 9)
    import struct

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    png = b"\x89PNG\r\n\x1a\n" + chunk(
        b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    )
    png += chunk(b"IDAT", raw) + chunk(b"IEND", b"")
    assert len(png) < 200_000
    message = failure(
        encode(png), WorkerSettings(max_image_bytes=200_000, max_image_pixels=10_000_000)
    )
    assert "is 12000x12000 = 144000000 pixels, above the limit of 10000000" in message


def test_unsupported_format_is_named():
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32)).save(buffer, format="ICO")
    assert "is a ICO image, which is not accepted" in failure(encode(buffer.getvalue()))


# -- URLs, over a real HTTP server on loopback ---------------------------------------------------


def image_app() -> web.Application:
    async def png(_request):
        return web.Response(body=PNG, content_type="image/png")

    async def big(_request):
        response = web.StreamResponse()  # no Content-Length: the cap must hold while streaming
        response.enable_chunked_encoding()
        await response.prepare(_request)
        for _ in range(40):
            await response.write(b"\0" * 10_000)
        return response

    async def missing(_request):
        return web.Response(status=404)

    async def redirect(_request):
        raise web.HTTPFound("/image.png")

    async def to_metadata(_request):
        raise web.HTTPFound("http://169.254.169.254/latest/meta-data/")

    app = web.Application()
    app.router.add_get("/image.png", png)
    app.router.add_get("/big", big)
    app.router.add_get("/missing.png", missing)
    app.router.add_get("/redirect", redirect)
    app.router.add_get("/to-metadata", to_metadata)
    return app


@pytest.fixture
def image_server(monkeypatch):
    monkeypatch.setenv("RUNPOD_ALLOW_PRIVATE_DOWNLOAD_URLS", "true")
    with serve(image_app()) as url:
        yield url


@pytest.mark.integration
def test_url_is_downloaded(image_server):
    image = load_start_image(f"{image_server}/image.png", SETTINGS)
    assert (image.width, image.height, image.source_bytes) == (160, 128, len(PNG))


@pytest.mark.integration
def test_redirects_are_followed(image_server):
    assert load_start_image(f"{image_server}/redirect", SETTINGS).width == 160


@pytest.mark.integration
def test_http_errors_and_caps_are_reported(image_server):
    assert "returned HTTP 404" in failure(f"{image_server}/missing.png")
    assert "is larger than 200000 bytes" in failure(f"{image_server}/big")
    assert "downloading http://127.0.0.1" in failure("http://127.0.0.1:9/nothing-listens-here")


@pytest.mark.integration
def test_private_addresses_are_blocked_by_default(monkeypatch):
    monkeypatch.delenv("RUNPOD_ALLOW_PRIVATE_DOWNLOAD_URLS", raising=False)
    with serve(image_app()) as url:
        message = failure(f"{url}/image.png")
    assert "is not allowed" in message and "non-public address 127.0.0.1" in message
    assert "private, loopback and metadata addresses are blocked" in message
    assert "non-public address 169.254.169.254" in failure(
        "http://169.254.169.254/latest/meta-data/"
    )
    assert "is not allowed" in failure("http://[::1]/a.png")


@pytest.mark.parametrize(
    ("sent", "echoed"),
    [
        ("http://127.0.0.1:8188/view?filename=a.png&type=input", "http://127.0.0.1:8188/view?..."),
        ("http://[::1]:8080/a.png", "http://[::1]:8080/a.png"),
        ("http://[::1]/a.png", "http://[::1]/a.png"),
        ("HTTP://LOCALHOST:80/A.PNG#top", "HTTP://LOCALHOST:80/A.PNG#..."),
        ("http://user:secret@10.0.0.1/a.png", "http://***@10.0.0.1/a.png"),
        ("http://10.0.0.1/" + "a" * 300, "http://10.0.0.1/" + "a" * 104 + "..."),
    ],
)
def test_a_refused_url_is_echoed_as_sent_or_trimmed(monkeypatch, sent, echoed):
    monkeypatch.delenv("RUNPOD_ALLOW_PRIVATE_DOWNLOAD_URLS", raising=False)
    message = failure(sent)
    assert f"start_image: the URL {echoed} is not allowed (" in message
    assert "secret" not in message
