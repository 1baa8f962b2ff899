"""Hostile and malformed jobs: each gets a clear error naming the field, before anything is
fetched or reaches ComfyUI, and no input can break the worker for whoever comes next.

Every case is a fast unit test on the input parser (`read_job_input`, the handler's first step,
and the error result the handler returns for it). One integration test sends them all through
the whole handler of one worker against the ComfyUI double, then good jobs, which must succeed.
"""

from __future__ import annotations

import base64
import io
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

from tests.support import ComfyServer, make_png, start_double, stop
from wan_worker.errors import InputError, error_result
from wan_worker.handler import handle
from wan_worker.job_input import read_job_input
from wan_worker.settings.worker import WorkerSettings
from wan_worker.workflow import load_template

TEMPLATE = load_template(
    Path(__file__).resolve().parent.parent / "workflows" / "wan_flf_i2v_api.json"
)
SETTINGS = WorkerSettings()

PNG = make_png(64, 64)
B64 = base64.b64encode(PNG).decode()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def bomb_png(side: int = 30000) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 1000))
        + chunk(b"IEND", b"")
    )


def animated_gif() -> bytes:
    frames = [Image.open(io.BytesIO(make_png(48, 48, (60 + i * 40, 120, 30)))) for i in range(5)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    return buffer.getvalue()


def good(**overrides) -> dict:
    return {"start_image": B64, "prompt": "a slow pan", "width": 128, "height": 128, **overrides}


CASES = [
    # the input object itself
    ("input-null", None, "input", "input: must be a JSON object, got null"),
    ("input-list", [1, 2], "input", "input: must be a JSON object, got a list"),
    ("input-string", "make a video", "input", "input: must be a JSON object, got a string"),
    ("input-number", 42, "input", "input: must be a JSON object, got an integer"),
    ("input-empty", {}, "start_image", "start_image: is required"),
    ("unknown-key", good(cfg=7), "cfg", "cfg: is not a known input"),
    (
        "many-unknown-keys",
        {**good(), **{f"k{i}": i for i in range(1000)}},
        "k0",
        "input: has 990 more unknown keys",
    ),
    (
        "model-switch",
        good(unet_name="other.safetensors"),
        "unet_name",
        "unet_name: is not a known input",
    ),
    (
        "workflow-injection",
        good(workflow={"1": {"class_type": "SaveImage"}}),
        "workflow",
        "workflow: is not a known input",
    ),
    # prompt and negative_prompt
    ("prompt-int", good(prompt=5), "prompt", "prompt: must be a string, got an integer"),
    ("prompt-null", good(prompt=None), "prompt", "prompt: must be a string, got null"),
    (
        "prompt-object",
        good(prompt={"text": "x"}),
        "prompt",
        "prompt: must be a string, got an object",
    ),
    ("prompt-huge", good(prompt="word " * 200_000), "prompt", "above the limit of 4000"),
    (
        "prompt-nul",
        good(prompt="a\x00b"),
        "prompt",
        "contains control or unassigned characters (U+0000)",
    ),
    ("prompt-escape-seq", good(prompt="red\x1b[2J"), "prompt", "U+001B"),
    ("prompt-lone-surrogate", good(prompt="a\ud800b"), "prompt", "U+D800"),
    ("prompt-private-use", good(prompt="a\ue000b"), "prompt", "U+E000"),
    ("prompt-noncharacter", good(prompt="a\uffffb"), "prompt", "U+FFFF"),
    ("prompt-zero-width-only", good(prompt="\u200b\u200b\u2060"), "prompt", "prompt: is empty"),
    ("prompt-whitespace", good(prompt=" \n\t "), "prompt", "prompt: is empty"),
    (
        "negative-list",
        good(negative_prompt=["x"]),
        "negative_prompt",
        "negative_prompt: must be a string, got a list",
    ),
    ("negative-empty", good(negative_prompt=""), "negative_prompt", "negative_prompt: is empty"),
    # seed, width, height
    ("seed-string", good(seed="42"), "seed", "seed: must be an integer, got a string"),
    ("seed-bool", good(seed=False), "seed", "seed: must be an integer, got a boolean"),
    ("seed-negative", good(seed=-5), "seed", "seed: must be from 0 to 9223372036854775807, got -5"),
    ("seed-huge", good(seed=10**30), "seed", "seed: must be from 0 to 9223372036854775807"),
    ("seed-nan", good(seed=float("nan")), "seed", "seed: must be an integer, got a number"),
    ("seed-list", good(seed=[1]), "seed", "seed: must be an integer, got a list"),
    ("width-zero", good(width=0), "width", "width: must be from 128 to 2048, got 0"),
    ("width-negative", good(width=-720), "width", "width: must be from 128 to 2048, got -720"),
    ("width-huge", good(width=10**9), "width", "width: must be from 128 to 2048"),
    ("width-fraction", good(width=480.5), "width", "width: must be an integer, got a number"),
    (
        "height-infinity",
        good(height=float("inf")),
        "height",
        "height: must be an integer, got a number",
    ),
    ("height-string", good(height="1280px"), "height", "height: must be an integer, got a string"),
    (
        "area-too-large",
        good(width=2048, height=2048),
        "width",
        "above this worker's limit of 921600",
    ),
    # start_image as data
    (
        "image-not-base64",
        good(start_image="<script>alert(1)</script>"),
        "start_image",
        "is not valid base64",
    ),
    ("image-truncated-base64", good(start_image=B64[:-7]), "start_image", "start_image:"),
    (
        "image-base64-of-text",
        good(start_image=b64(b"GIF89a but not really")),
        "start_image",
        "not an image Pillow can read",
    ),
    (
        "image-half-png",
        good(start_image=b64(PNG[: len(PNG) // 2])),
        "start_image",
        "the image is damaged or cut off",
    ),
    (
        "image-zip",
        good(start_image=b64(b"PK\x03\x04" + b"\0" * 100)),
        "start_image",
        "not an image Pillow can read",
    ),
    (
        "image-svg",
        good(start_image=b64(b"<svg xmlns='http://www.w3.org/2000/svg'/>")),
        "start_image",
        "not an image Pillow can read",
    ),
    (
        "image-bomb",
        good(start_image=b64(bomb_png())),
        "start_image",
        "30000x30000 = 900000000 pixels, above the limit",
    ),
    ("image-1x1", good(start_image=b64(make_png(1, 1))), "start_image", "is only 1x1 pixels"),
    (
        "image-too-many-bytes",
        good(start_image="A" * 40_000_000),
        "start_image",
        "larger than 26214400 bytes",
    ),
    (
        "data-uri-html",
        good(start_image="data:text/html;base64," + b64(b"<h1>x</h1>")),
        "start_image",
        "media type text/html, not an image",
    ),
    (
        "data-uri-plain",
        good(start_image="data:image/png,rawbytes"),
        "start_image",
        "the data URI is not base64-encoded",
    ),
    # start_image as a URL: schemes and addresses that must never be fetched
    (
        "url-file",
        good(start_image="file:///etc/passwd"),
        "start_image",
        "URL scheme 'file' is not supported",
    ),
    (
        "url-ftp",
        good(start_image="ftp://example.com/a.png"),
        "start_image",
        "URL scheme 'ftp' is not supported",
    ),
    (
        "url-gopher",
        good(start_image="gopher://127.0.0.1:6379/_FLUSHALL"),
        "start_image",
        "URL scheme 'gopher' is not supported",
    ),
    (
        "url-javascript",
        good(start_image="javascript:alert(1)"),
        "start_image",
        "is not valid base64",
    ),
    (
        "url-localhost",
        good(start_image="http://localhost/a.png"),
        "start_image",
        "non-public address",
    ),
    (
        "url-loopback",
        good(start_image="http://127.0.0.1:8188/view?filename=x"),
        "start_image",
        "non-public address 127.0.0.1",
    ),
    (
        "url-metadata",
        good(start_image="http://169.254.169.254/latest/meta-data/iam/"),
        "start_image",
        "non-public address 169.254.169.254",
    ),
    (
        "url-private-10",
        good(start_image="http://10.0.0.1/a.png"),
        "start_image",
        "non-public address 10.0.0.1",
    ),
    (
        "url-private-192",
        good(start_image="https://192.168.1.1/a.png"),
        "start_image",
        "non-public address 192.168.1.1",
    ),
    (
        "url-cgnat",
        good(start_image="http://100.64.0.1/a.png"),
        "start_image",
        "non-public address 100.64.0.1",
    ),
    (
        "url-unspecified",
        good(start_image="http://0.0.0.0:8188/"),
        "start_image",
        "non-public address 0.0.0.0",
    ),
    (
        "url-ipv6-loopback",
        good(start_image="http://[::1]:8188/"),
        "start_image",
        "non-public address ::1",
    ),
    (
        "url-ipv4-mapped",
        good(start_image="http://[::ffff:127.0.0.1]/"),
        "start_image",
        "non-public address ::ffff:127.0.0.1",
    ),
    (
        "url-decimal-ip",
        good(start_image="http://2130706433/a.png"),
        "start_image",
        "non-public address 127.0.0.1",
    ),
    (
        "url-credentials",
        good(start_image="http://user:hunter2@127.0.0.1/a.png"),
        "start_image",
        "non-public address 127.0.0.1",
    ),
    ("url-no-host", good(start_image="http:///a.png"), "start_image", "start_image:"),
]


@pytest.fixture(autouse=True)
def no_private_urls(monkeypatch):
    """The worker's default: URLs on private addresses are refused, whatever the caller's
    environment says."""
    monkeypatch.delenv("RUNPOD_ALLOW_PRIVATE_DOWNLOAD_URLS", raising=False)


def refusal(raw) -> dict:
    """The handler's error result for `raw`, from the parser alone."""
    with pytest.raises(InputError) as caught:
        read_job_input(raw, TEMPLATE, SETTINGS)
    return error_result(caught.value)


def assert_refused_clearly(result: dict, field: str, text: str) -> None:
    assert result["error_code"] == "invalid_input", result
    assert text in result["error"], result["error"][:500]
    assert field in result["fields"]
    assert len(result["error"]) < 4000
    assert "hunter2" not in result["error"]


def test_there_are_at_least_forty_cases():
    assert len(CASES) >= 40


@pytest.mark.parametrize(("name", "raw", "field", "text"), CASES, ids=[c[0] for c in CASES])
def test_hostile_input_is_refused_with_its_field_named(name, raw, field, text):
    assert_refused_clearly(refusal(raw), field, text)


def test_an_animated_gif_uses_its_first_frame():
    gif = animated_gif()
    _, image = read_job_input(good(start_image=b64(gif)), TEMPLATE, SETTINGS)
    decoded = Image.open(io.BytesIO(image.png))
    assert (decoded.format, decoded.size) == ("PNG", (48, 48))
    with Image.open(io.BytesIO(gif)) as frames:
        first = frames.convert("RGB").tobytes()
        frames.seek(frames.n_frames - 1)
        last = frames.convert("RGB").tobytes()
    assert decoded.convert("RGB").tobytes() == first != last


@pytest.mark.integration
def test_the_worker_refuses_every_case_and_then_runs_good_jobs(tmp_path):
    server: ComfyServer = start_double(tmp_path)
    try:
        worker = server.worker()
        for name, raw, field, text in CASES:
            result = handle({"id": f"hostile-{name}", "input": raw}, worker)
            assert_refused_clearly(result, field, text)
        assert server.prompts_received() == 0  # every case refused before ComfyUI saw it
        assert server.job_files() == []
        for job in (good(), good(start_image=b64(animated_gif()))):
            result = handle({"id": "after-hostile", "input": job}, worker)
            assert "error" not in result, result
        assert server.prompts_received() == 2
        assert server.job_files() == []
    finally:
        stop(server)
