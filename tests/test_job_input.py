"""Job input validation: every bad field named, with its fix; good input normalised."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from aiohttp import web

from tests.support import make_png, serve
from wan_worker.errors import InputError, error_result
from wan_worker.job_input import RANDOM_SEED_MAX, parse_job_input, read_job_input, snap
from wan_worker.settings.worker import WorkerSettings
from wan_worker.workflow import load_template

TEMPLATE = load_template(
    Path(__file__).resolve().parent.parent / "workflows" / "wan_flf_i2v_api.json"
)
SETTINGS = WorkerSettings()
GOOD = {"start_image": "https://example.com/a.png", "prompt": "a cat walks"}


def parse(raw):
    return parse_job_input(raw, TEMPLATE, SETTINGS)


def error_of(raw) -> dict:
    with pytest.raises(InputError) as caught:
        parse(raw)
    return error_result(caught.value)


def test_minimal_input_takes_the_workflows_defaults():
    request = parse(dict(GOOD))
    assert request.start_image == "https://example.com/a.png"
    assert request.params.prompt == "a cat walks"
    assert request.params.negative_prompt == TEMPLATE.default_negative_prompt
    assert (request.params.width, request.params.height) == (720, 1280)
    assert request.seed_was_random
    assert 0 <= request.params.seed <= RANDOM_SEED_MAX


def test_random_seeds_differ_between_identical_requests():
    seeds = {parse(dict(GOOD)).params.seed for _ in range(20)}
    assert len(seeds) == 20


def test_every_field_is_applied():
    request = parse({**GOOD, "negative_prompt": " blurry ", "seed": 7, "width": 480, "height": 832})
    assert request.params.negative_prompt == "blurry"
    assert (request.params.seed, request.params.width, request.params.height) == (7, 480, 832)
    assert not request.seed_was_random


@pytest.mark.parametrize(
    ("given", "snapped"), [(480, 480), (487, 480), (488, 496), (721, 720), (130, 128)]
)
def test_sizes_snap_to_multiples_of_16(given, snapped):
    assert snap(given) == snapped
    assert parse({**GOOD, "width": given, "height": 480}).params.width == snapped


@pytest.mark.parametrize(
    ("raw", "field", "text"),
    [
        (None, "input", "input: must be a JSON object, got null"),
        ("a string", "input", "input: must be a JSON object, got a string"),
        ({"prompt": "x"}, "start_image", "start_image: is required"),
        ({**GOOD, "start_image": ""}, "start_image", "start_image: must be a non-empty string"),
        (
            {**GOOD, "start_image": 12},
            "start_image",
            "start_image: must be a non-empty string, got an integer",
        ),
        ({"start_image": "x"}, "prompt", "prompt: is required"),
        ({**GOOD, "prompt": ""}, "prompt", "prompt: is empty"),
        ({**GOOD, "prompt": "   \n "}, "prompt", "prompt: is empty"),
        ({**GOOD, "prompt": ["a"]}, "prompt", "prompt: must be a string, got a list"),
        (
            {**GOOD, "prompt": "x" * 4001},
            "prompt",
            "prompt: is 4001 characters long, above the limit of 4000",
        ),
        (
            {**GOOD, "prompt": "bad\x00byte"},
            "prompt",
            "prompt: contains control or unassigned characters (U+0000)",
        ),
        ({**GOOD, "prompt": "esc\x1b[31m"}, "prompt", "U+001B"),
        ({**GOOD, "negative_prompt": ""}, "negative_prompt", "negative_prompt: is empty"),
        (
            {**GOOD, "negative_prompt": 3},
            "negative_prompt",
            "negative_prompt: must be a string, got an integer",
        ),
        ({**GOOD, "seed": "12"}, "seed", "seed: must be an integer, got a string"),
        ({**GOOD, "seed": True}, "seed", "seed: must be an integer, got a boolean"),
        ({**GOOD, "seed": 1.5}, "seed", "seed: must be an integer, got a number"),
        ({**GOOD, "seed": -1}, "seed", "seed: must be from 0 to 9223372036854775807, got -1"),
        ({**GOOD, "seed": 2**63}, "seed", "seed: must be from 0 to 9223372036854775807"),
        ({**GOOD, "width": 100}, "width", "width: must be from 128 to 2048, got 100"),
        ({**GOOD, "height": 4096}, "height", "height: must be from 128 to 2048, got 4096"),
        ({**GOOD, "width": "720"}, "width", "width: must be an integer, got a string"),
        (
            {**GOOD, "width": 1280, "height": 1280},
            "width",
            "1280x1280 is 1638400 pixels, above this worker's limit of 921600",
        ),
        (
            {**GOOD, "steps": 10},
            "steps",
            "steps: is not a known input. Remove it; known inputs: start_image, prompt",
        ),
        ({**GOOD, "model": "other.safetensors"}, "model", "model: is not a known input"),
    ],
)
def test_bad_input_names_the_field_and_the_fix(raw, field, text):
    result = error_of(raw)
    assert result["error_code"] == "invalid_input"
    assert result["error"].startswith("invalid_input: ")
    assert result["field"] == field
    assert text in result["error"]
    assert result["error"].rstrip().endswith(".")


def test_all_problems_are_reported_at_once():
    result = error_of({"prompt": "", "seed": "x", "extra": 1})
    assert result["fields"] == ["extra", "start_image", "prompt", "seed"]
    for fragment in (
        "extra: is not a known input",
        "start_image: is required",
        "prompt: is empty",
        "seed: must be an integer",
    ):
        assert fragment in result["error"]


def test_unicode_prompts_are_kept_and_normalised():
    request = parse({**GOOD, "prompt": "Cafe\u0301 🌸 猫が歩く\n\tslowly"})
    assert request.params.prompt == "Café 🌸 猫が歩く\n\tslowly"


def test_integral_floats_are_accepted_for_integers():
    assert parse({**GOOD, "seed": 42.0, "width": 480.0}).params.width == 480


def read_error(raw) -> dict:
    with pytest.raises(InputError) as caught:
        read_job_input(raw, TEMPLATE, SETTINGS)
    return error_result(caught.value)


NOT_CHECKED = (
    "start_image: was not checked, because the other fields must be fixed first. It is fetched "
    "or decoded only for a job whose other fields are valid."
)


def test_a_bad_start_image_is_decoded_only_once_the_other_fields_are_valid():
    result = read_error({"start_image": "bm90IGFuIGltYWdl", "prompt": "x", "seed": "12"})
    assert result["fields"] == ["seed"]
    assert result["error"] == (
        "invalid_input: seed: must be an integer, got a string ('12'). Send a whole number, or "
        "omit seed for a random one. " + NOT_CHECKED
    )
    result = read_error({"start_image": "bm90IGFuIGltYWdl", "prompt": "x", "seed": 12})
    assert result["fields"] == ["start_image"]
    assert result["error"].startswith(
        "invalid_input: start_image: the 12 bytes given are not an image Pillow can read."
    )


def test_a_refused_url_is_reported_once_the_other_fields_are_valid(monkeypatch):
    monkeypatch.delenv("RUNPOD_ALLOW_PRIVATE_DOWNLOAD_URLS", raising=False)
    raw = {"start_image": "http://[::1]:8188/view?filename=a.png", "prompt": "", "colour": 1}
    result = read_error(raw)
    assert result["fields"] == ["colour", "prompt"]
    assert result["field"] == "colour"
    assert result["error"].endswith(NOT_CHECKED)
    assert "is not allowed" not in result["error"]
    result = read_error({"start_image": raw["start_image"], "prompt": "x"})
    assert result["fields"] == ["start_image"]
    assert "start_image: the URL http://[::1]:8188/view?... is not allowed" in result["error"]


@pytest.mark.parametrize(
    ("image", "text"),
    [
        ("ftp://example.com/a.png", "start_image: URL scheme 'ftp' is not supported"),
        ("not base64 at all!!", "start_image: is not valid base64"),
        ("data:text/plain;base64,aGk=", "start_image: the data URI has media type text/plain"),
        ("data:image/png,abc", "start_image: the data URI is not base64-encoded"),
        ("data:image/png;base64,<png>", "start_image: is not valid data URI"),
    ],
)
def test_a_start_image_of_bad_form_is_reported_with_the_other_bad_fields(image, text):
    result = read_error({"start_image": image, "prompt": "x", "seed": "12"})
    assert result["fields"] == ["start_image", "seed"]
    assert result["error"].startswith(f"invalid_input: {text}")
    assert "was not checked" not in result["error"]


def counting_image_server():
    """A loopback server of one PNG that counts the requests it answers."""
    png = make_png(40, 30)
    requests_seen: list[str] = []

    async def image(request):
        requests_seen.append(request.path)
        return web.Response(body=png, content_type="image/png")

    app = web.Application()
    app.router.add_get("/a.png", image)
    return app, requests_seen, png


@pytest.mark.integration
@pytest.mark.parametrize(
    "bad",
    [
        {"seed": "12"},
        {"prompt": ""},
        {"width": 4096},
        {"colour": "red"},
        {"negative_prompt": 3, "height": "x"},
    ],
    ids=["seed", "prompt", "width", "unknown-key", "two-fields"],
)
def test_an_invalid_job_fetches_nothing(monkeypatch, bad):
    monkeypatch.setenv("RUNPOD_ALLOW_PRIVATE_DOWNLOAD_URLS", "true")
    app, requests_seen, _png = counting_image_server()
    with serve(app) as url:
        result = read_error({"start_image": f"{url}/a.png", "prompt": "x", **bad})
    assert requests_seen == []
    assert "start_image" not in result["fields"]
    assert result["error"].endswith(NOT_CHECKED)


@pytest.mark.integration
def test_a_valid_job_fetches_its_image_exactly_once(monkeypatch):
    monkeypatch.setenv("RUNPOD_ALLOW_PRIVATE_DOWNLOAD_URLS", "true")
    app, requests_seen, png = counting_image_server()
    with serve(app) as url:
        request, image = read_job_input(
            {"start_image": f"{url}/a.png", "prompt": "x", "seed": 7}, TEMPLATE, SETTINGS
        )
    assert requests_seen == ["/a.png"]
    assert (image.width, image.height, image.source_bytes) == (40, 30, len(png))
    assert request.params.seed == 7


def test_a_good_request_comes_with_its_decoded_image():
    png = make_png(40, 30)
    request, image = read_job_input(
        {"start_image": base64.b64encode(png).decode(), "prompt": "x"}, TEMPLATE, SETTINGS
    )
    assert (image.width, image.height, image.source_bytes) == (40, 30, len(png))
    assert request.params.prompt == "x"


def test_fields_alone_still_fail_before_any_image_is_read():
    result = read_error({"start_image": "", "prompt": "x", "seed": -1})
    assert result["fields"] == ["start_image", "seed"]
    assert "must be a non-empty string" in result["error"]
