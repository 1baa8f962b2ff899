"""Validate a job's `input` into a typed request, with its start image decoded.

Every problem names its field and the fix, and all problems are reported at once. The start
image is fetched or decoded once, and only for a job whose other fields are valid: a job with a
bad field costs no download. Until then only its form is checked (a non-empty string that is an
http(s) URL, a data URI or base64); when the other fields are bad, the error says it was not
checked. The runpod SDK's `rp_validator` is not used here: it accepts `true` where an integer is
expected (bool is an int in Python), reports types as Python reprs, and has no place for a fix.
"""

from __future__ import annotations

import secrets
import unicodedata
from dataclasses import dataclass
from typing import Any

from wan_worker.errors import FieldProblem, InputError
from wan_worker.settings.worker import WorkerSettings
from wan_worker.start_image import StartImage, image_source, load_start_image
from wan_worker.workflow import JobParameters, WorkflowTemplate

FIELDS = ("start_image", "prompt", "negative_prompt", "seed", "width", "height")
SIZE_STEP = 16
MIN_SIDE = 128
MAX_SIDE = 2048
MAX_LISTED = 10  # unknown keys named one by one; the rest are counted
SEED_MAX = 2**63 - 1  # PrimitiveInt's maximum in ComfyUI
RANDOM_SEED_MAX = 2**53 - 1  # random seeds stay exact in JavaScript clients
#: Said last when other fields are bad and start_image's form is fine: it was not loaded, so
#: it is not named among the bad fields.
IMAGE_NOT_CHECKED = (
    "start_image: was not checked, because the other fields must be fixed first. It is fetched "
    "or decoded only for a job whose other fields are valid."
)


@dataclass(frozen=True)
class JobRequest:
    start_image: str
    params: JobParameters
    seed_was_random: bool


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _clean_text(field: str, value: Any, limit: int, problems: list[FieldProblem]) -> str | None:
    if not isinstance(value, str):
        problems.append(FieldProblem(field, f"must be a string, got {_kind(value)}", "Send text."))
        return None
    text = unicodedata.normalize("NFC", value)
    # Line breaks and tabs are fine in a prompt; other control characters are not.
    bad = sorted(
        {f"U+{ord(c):04X}" for c in text if unicodedata.category(c) in ("Cc", "Cs", "Co", "Cn")}
        - {"U+0009", "U+000A", "U+000D"}
    )
    if bad:
        problems.append(
            FieldProblem(
                field,
                f"contains control or unassigned characters ({', '.join(bad[:5])})",
                "Remove them; line breaks and tabs are allowed.",
            )
        )
        return None
    text = text.strip()
    if not text or all(c.isspace() or unicodedata.category(c) == "Cf" for c in text):
        problems.append(FieldProblem(field, "is empty", "Send a non-empty text."))
        return None
    if len(text) > limit:
        problems.append(
            FieldProblem(
                field,
                f"is {len(text)} characters long, above the limit of {limit}",
                "Shorten it.",
            )
        )
        return None
    return text


def _integer(
    field: str, value: Any, minimum: int, maximum: int, fix: str, problems: list[FieldProblem]
) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            problems.append(
                FieldProblem(field, f"must be an integer, got {_kind(value)} ({value!r:.40})", fix)
            )
            return None
    if not minimum <= value <= maximum:
        problems.append(
            FieldProblem(field, f"must be from {minimum} to {maximum}, got {value}", fix)
        )
        return None
    return int(value)


def snap(value: int) -> int:
    """The nearest multiple of 16 (halves round up)."""
    return max(SIZE_STEP, (value + SIZE_STEP // 2) // SIZE_STEP * SIZE_STEP)


def parse_job_input(raw: Any, template: WorkflowTemplate, settings: WorkerSettings) -> JobRequest:
    """Validate `job["input"]`; raise InputError naming every bad field."""
    if not isinstance(raw, dict):
        raise InputError.single(
            "input",
            f"must be a JSON object, got {_kind(raw)}",
            'Send {"input": {"start_image": ..., "prompt": ...}}.',
        )
    problems: list[FieldProblem] = []
    unknown = sorted(str(key)[:40] for key in raw if key not in FIELDS)
    if unknown:
        problems.extend(
            FieldProblem(
                key, "is not a known input", f"Remove it; known inputs: {', '.join(FIELDS)}."
            )
            for key in unknown[:MAX_LISTED]
        )
        if len(unknown) > MAX_LISTED:
            problems.append(
                FieldProblem(
                    "input",
                    f"has {len(unknown) - MAX_LISTED} more unknown keys",
                    "Send only the known inputs.",
                )
            )

    start_image = raw.get("start_image")
    if start_image is None:
        problems.append(
            FieldProblem(
                "start_image",
                "is required",
                "Send an http(s) URL, a data URI or raw base64 of a PNG, JPEG or WebP image.",
            )
        )
    elif not isinstance(start_image, str) or not start_image.strip():
        problems.append(
            FieldProblem(
                "start_image",
                f"must be a non-empty string, got {_kind(start_image)}",
                "Send an http(s) URL, a data URI or raw base64 of an image.",
            )
        )
    else:
        try:
            image_source(start_image.strip())  # its form only: nothing fetched or decoded
        except InputError as exc:
            problems.extend(exc.problems)

    prompt = None
    if "prompt" not in raw:
        problems.append(FieldProblem("prompt", "is required", "Describe the motion to generate."))
    else:
        prompt = _clean_text("prompt", raw["prompt"], settings.max_prompt_chars, problems)

    negative = template.default_negative_prompt
    if "negative_prompt" in raw:
        cleaned = _clean_text(
            "negative_prompt", raw["negative_prompt"], settings.max_prompt_chars, problems
        )
        if cleaned is not None:
            negative = cleaned

    seed_was_random = "seed" not in raw or raw["seed"] is None
    seed: int | None = secrets.randbelow(RANDOM_SEED_MAX + 1)
    if not seed_was_random:
        seed = _integer(
            "seed",
            raw["seed"],
            0,
            SEED_MAX,
            "Send a whole number, or omit seed for a random one.",
            problems,
        )

    sizes: dict[str, int | None] = {}
    for field, default in (("width", template.default_width), ("height", template.default_height)):
        if field not in raw or raw[field] is None:
            sizes[field] = default
            continue
        value = _integer(
            field,
            raw[field],
            MIN_SIDE,
            MAX_SIDE,
            f"Send a whole number of pixels from {MIN_SIDE} to {MAX_SIDE}; it is rounded to a "
            f"multiple of {SIZE_STEP}.",
            problems,
        )
        sizes[field] = None if value is None else snap(value)
    width, height = sizes["width"], sizes["height"]
    if width is not None and height is not None and width * height > settings.max_output_pixels:
        problems.append(
            FieldProblem(
                "width",
                f"{width}x{height} is {width * height} pixels, above this worker's limit of "
                f"{settings.max_output_pixels}",
                "Lower width or height (for example 720x1280 or 480x832).",
            )
        )

    if (
        problems
        or not isinstance(start_image, str)
        or prompt is None
        or seed is None
        or width is None
        or height is None
    ):
        raise InputError(problems)
    return JobRequest(
        start_image=start_image.strip(),
        params=JobParameters(
            prompt=prompt, negative_prompt=negative, seed=seed, width=width, height=height
        ),
        seed_was_random=seed_was_random,
    )


def read_job_input(
    raw: Any, template: WorkflowTemplate, settings: WorkerSettings
) -> tuple[JobRequest, StartImage]:
    """The validated request and its decoded start image, or InputError naming every bad
    field. The image is fetched or decoded only once every other field is valid; before that,
    a start_image of good form is said to be unchecked, after the bad fields."""
    try:
        request = parse_job_input(raw, template, settings)
    except InputError as exc:
        if isinstance(raw, dict) and all(p.field != "start_image" for p in exc.problems):
            raise InputError(exc.problems, note=IMAGE_NOT_CHECKED) from None
        raise
    return request, load_start_image(request.start_image, settings)
