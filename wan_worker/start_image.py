"""Turn the job's `start_image` (URL, data URI or raw base64) into verified PNG bytes.

Two steps: `image_source` reads the value's form alone (an http(s) URL, a data URI of an image
in base64, or base64 text), with no network and no decoding, so a job can be checked before
anything is fetched; `load_start_image` then fetches or decodes it and verifies the image.

URLs are fetched with the runpod SDK's `rp_ssrf.safe_get`: http(s) only, every hop (redirects
included) checked against private, loopback, link-local and metadata addresses, connections
pinned to the checked address. `RUNPOD_ALLOW_PRIVATE_DOWNLOAD_URLS=true` lifts the address
check for deployments that fetch from their own network. The byte cap is enforced while
streaming; the pixel cap is checked from the header before any pixel is decoded.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import warnings
from dataclasses import dataclass
from typing import Literal

import requests
from PIL import Image, ImageOps, UnidentifiedImageError
from runpod.serverless.utils import rp_ssrf

from wan_worker.errors import InputError
from wan_worker.settings.worker import WorkerSettings

FIELD = "start_image"
MIN_IMAGE_SIDE = 16
ACCEPTED_FORMATS = ("PNG", "JPEG", "MPO", "WEBP", "BMP", "GIF", "TIFF")
_DATA_URI = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[^,;]*)*?),", re.IGNORECASE)
_SCHEME = re.compile(r"^(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]{1,15}):")
# Standard and URL-safe base64, padded or not, wrapped or not.
_BASE64_TEXT = re.compile(r"[A-Za-z0-9+/_=\s-]*")
_FIX_SOURCE = "Send an http(s) URL, a data URI or raw base64 of a PNG, JPEG or WebP image."
MAX_SHOWN_URL = 120  # characters of a URL echoed in an error

# Pillow's own bomb check runs in Image.open with a global limit and reports no size; the
# check in verify_image runs at the same point (header read, nothing decoded) with the
# deployment's MAX_IMAGE_PIXELS and says how large the image claims to be.
Image.MAX_IMAGE_PIXELS = None


@dataclass(frozen=True)
class StartImage:
    png: bytes
    width: int
    height: int
    source_format: str
    source_bytes: int


@dataclass(frozen=True)
class ImageSource:
    """Where `start_image` says its image is, read from its form alone."""

    kind: Literal["URL", "data URI", "base64"]
    #: The URL, or the base64 text (a data URI's without its header).
    text: str


def _error(problem: str, fix: str = _FIX_SOURCE) -> InputError:
    return InputError.single(FIELD, problem, fix)


def image_source(value: str) -> ImageSource:
    """The form of `start_image`, or InputError if it is none of an http(s) URL, a data URI
    of an image in base64, or base64 text. Nothing is fetched or decoded."""
    data_uri = _DATA_URI.match(value)
    scheme = _SCHEME.match(value)
    if data_uri:
        mime = (data_uri.group("mime") or "").lower()
        if mime and not mime.startswith("image/"):
            raise _error(f"the data URI has media type {mime}, not an image", _FIX_SOURCE)
        if ";base64" not in data_uri.group("params").lower():
            raise _error("the data URI is not base64-encoded", "Use data:image/png;base64,<data>.")
        source = ImageSource("data URI", value[data_uri.end() :])
    elif scheme and value[scheme.end() :].startswith("//"):
        if scheme.group("scheme").lower() not in ("http", "https"):
            raise _error(
                f"URL scheme {scheme.group('scheme')!r} is not supported",
                "Use an http or https URL, a data URI or raw base64.",
            )
        return ImageSource("URL", value)
    else:
        source = ImageSource("base64", value)
    if not _BASE64_TEXT.fullmatch(source.text):
        raise _error(
            f"is not valid {source.kind}: it holds characters outside the base64 alphabet",
            "Send the whole file encoded with standard base64, or an http(s) URL.",
        )
    return source


def _describe_url(url: str, limit: int = MAX_SHOWN_URL) -> str:
    """The URL as the caller sent it (host, port and brackets as written), cut short: no query
    or fragment (a signature may sit there), no user:password, at most `limit` characters."""
    cut = re.search(r"[?#]", url)
    shown, mark = (url[: cut.start()], cut.group()) if cut else (url, "")
    scheme, sep, rest = shown.partition("://")
    if sep:
        authority, slash, path = rest.partition("/")
        if "@" in authority:
            authority = "***@" + authority.rsplit("@", 1)[1]
        shown = f"{scheme}{sep}{authority}{slash}{path}"
    shown = "".join(c if c.isprintable() else "?" for c in shown)
    if len(shown) > limit:
        return shown[:limit] + "..."
    return shown + (f"{mark}..." if mark else "")


def fetch_url(url: str, settings: WorkerSettings) -> bytes:
    """Download an image URL with SSRF protection, time-outs and a streaming byte cap."""
    shown = _describe_url(url)
    cap = settings.max_image_bytes
    timeout = (min(10.0, settings.image_fetch_timeout_s), settings.image_fetch_timeout_s)
    try:
        response = rp_ssrf.safe_get(url, stream=True, timeout=timeout, max_bytes=cap)
    except rp_ssrf.SSRFError as exc:
        text = str(exc)
        if "size cap" in text:
            raise _error(
                f"the image at {shown} is larger than {cap} bytes",
                "Send a smaller image (it is resized to the output size anyway).",
            ) from None
        raise _error(
            f"the URL {shown} is not allowed ({text})",
            "Use a public http(s) URL; private, loopback and metadata addresses are blocked.",
        ) from None
    except requests.Timeout:
        raise _error(
            f"downloading {shown} timed out after {settings.image_fetch_timeout_s:g} s",
            "Use a faster host, or send the image as base64.",
        ) from None
    except requests.RequestException as exc:
        raise _error(
            f"downloading {shown} failed ({type(exc).__name__})",
            "Check that the URL is correct and publicly reachable, or send the image as base64.",
        ) from None
    with response:
        if response.status_code >= 400:
            raise _error(
                f"downloading {shown} returned HTTP {response.status_code}",
                "Check that the URL is correct and publicly readable (a presigned URL may have "
                "expired).",
            )
        chunks: list[bytes] = []
        try:
            chunks.extend(rp_ssrf.iter_content_capped(response, 1 << 16, cap))
        except rp_ssrf.SSRFError:
            raise _error(
                f"the image at {shown} is larger than {cap} bytes",
                "Send a smaller image (it is resized to the output size anyway).",
            ) from None
        except requests.RequestException as exc:
            raise _error(
                f"downloading {shown} broke off ({type(exc).__name__})",
                "Retry, or send the image as base64.",
            ) from None
    return b"".join(chunks)


def decode_base64(text: str, cap: int, what: str = "base64") -> bytes:
    compact = re.sub(r"\s+", "", text)
    if len(compact) * 3 // 4 > cap:
        raise _error(
            f"the {what} image is larger than {cap} bytes",
            "Send a smaller image, or an http(s) URL to it.",
        )
    compact = compact.replace("-", "+").replace("_", "/")
    compact += "=" * (-len(compact) % 4)
    try:
        data = base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raise _error(
            f"is not valid {what}: it holds characters outside the base64 alphabet or is cut off",
            "Send the whole file encoded with standard base64, or an http(s) URL.",
        ) from None
    if not data:
        raise _error(f"the {what} decodes to nothing", _FIX_SOURCE)
    return data


def read_source(source: ImageSource, settings: WorkerSettings) -> bytes:
    """The raw bytes behind `start_image`: the URL fetched, or the base64 decoded."""
    if source.kind == "URL":
        return fetch_url(source.text, settings)
    return decode_base64(source.text, settings.max_image_bytes, source.kind)


def verify_image(data: bytes, settings: WorkerSettings) -> StartImage:
    """Check that `data` is a real, complete image within the pixel cap; re-encode it as PNG."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))  # reads the header only
            source_format = image.format or "unknown"
            if source_format not in ACCEPTED_FORMATS:
                raise _error(
                    f"is a {source_format} image, which is not accepted",
                    f"Convert it to PNG, JPEG or WebP (accepted: {', '.join(ACCEPTED_FORMATS)}).",
                )
            width, height = image.size
            if width * height > settings.max_image_pixels:
                raise _error(
                    f"is {width}x{height} = {width * height} pixels, above the limit of "
                    f"{settings.max_image_pixels}",
                    "Downscale it first; the output is at most 1280 pixels on a side anyway.",
                )
            if min(width, height) < MIN_IMAGE_SIDE:
                raise _error(
                    f"is only {width}x{height} pixels",
                    f"Send an image at least {MIN_IMAGE_SIDE} pixels on each side.",
                )
            image.load()
            rgb = (ImageOps.exif_transpose(image) or image).convert("RGB")
    except InputError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise _error(
            f"declares more than {settings.max_image_pixels} pixels (a decompression bomb?)",
            "Send an ordinary photo or render.",
        ) from None
    except UnidentifiedImageError:
        raise _error(
            f"the {len(data)} bytes given are not an image Pillow can read",
            "Send a PNG, JPEG or WebP file (check the encoding if you sent base64).",
        ) from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise _error(
            f"the image is damaged or cut off ({exc})",
            "Send the complete file again.",
        ) from None
    buffer = io.BytesIO()
    rgb.save(buffer, format="PNG", compress_level=1)
    return StartImage(
        png=buffer.getvalue(),
        width=rgb.width,
        height=rgb.height,
        source_format=source_format,
        source_bytes=len(data),
    )


def load_start_image(value: str, settings: WorkerSettings) -> StartImage:
    """`start_image` as verified PNG bytes: its form checked, then fetched or decoded."""
    data = read_source(image_source(value), settings)
    if len(data) > settings.max_image_bytes:
        raise _error(
            f"the image is {len(data)} bytes, above the limit of {settings.max_image_bytes}",
            "Send a smaller image.",
        )
    return verify_image(data, settings)
