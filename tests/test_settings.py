"""Every settings reader of the project refuses non-finite numbers and treats empty as unset.

The numeric variables are found in the source (every `read.number` / `read.integer` call), so a
setting added later is checked without editing this file.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

import wan_worker.env as read
from wan_worker.boot.settings import BootSettings
from wan_worker.errors import ConfigError
from wan_worker.gpu_ready import GpuWaitSettings
from wan_worker.provision.settings import ProvisionSettings
from wan_worker.settings import Settings

PACKAGE = Path(__file__).resolve().parent.parent / "wan_worker"
READERS: dict[str, Callable[[Mapping[str, str]], Any]] = {
    "settings.py": Settings.from_env,
    "provision/settings.py": ProvisionSettings.from_env,
    "gpu_ready.py": GpuWaitSettings.from_env,
    "boot/settings.py": lambda env: BootSettings.from_env(Settings(), env),
}
NON_FINITE = ("inf", "-inf", "Infinity", "1e400", "-1e400", "nan", "NaN")


def reads(kind: str) -> list[tuple[str, str]]:
    """(module, variable) for every `read.<kind>(env, "NAME", ...)` call in the package."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == kind
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "read"
                and len(node.args) >= 2
                and isinstance(node.args[1], ast.Constant)
            ):
                found.append((str(path.relative_to(PACKAGE)), str(node.args[1].value)))
    return found


NUMERIC = reads("number") + reads("integer")
FLAGS = reads("flag")


def test_the_search_finds_the_known_settings():
    names = {name for _, name in NUMERIC}
    assert {"JOB_TIMEOUT_S", "MAX_IMAGE_BYTES", "PROVISION_BACKOFF_S", "GPU_READY_TIMEOUT_S"} <= (
        names
    )
    assert {module for module, _ in NUMERIC + FLAGS} <= set(READERS), "a reader is not in READERS"


@pytest.mark.parametrize(("module", "name"), NUMERIC, ids=[n for _, n in NUMERIC])
@pytest.mark.parametrize("value", NON_FINITE)
def test_every_numeric_setting_refuses_non_finite_numbers(module: str, name: str, value: str):
    with pytest.raises(ConfigError) as caught:
        READERS[module]({name: value})
    assert caught.value.message.startswith(f"{name}={value!r} is not a finite number")


@pytest.mark.parametrize(("module", "name"), NUMERIC, ids=[n for _, n in NUMERIC])
def test_every_numeric_setting_takes_its_default_when_empty(module: str, name: str):
    reader = READERS[module]
    assert reader({name: ""}) == reader({}) == reader({name: "  "})


@pytest.mark.parametrize(("module", "name"), FLAGS, ids=[n for _, n in FLAGS])
def test_an_empty_flag_means_its_default_not_off(module: str, name: str):
    reader = READERS[module]
    assert reader({name: ""}) == reader({})
    assert reader({name: "  "}) == reader({})


def test_flags_still_read_every_spelling():
    for raw in ("1", "true", "YES", " on "):
        assert read.flag({"F": raw}, "F", False) is True
    for raw in ("0", "false", "No", "off"):
        assert read.flag({"F": raw}, "F", True) is False
    with pytest.raises(ConfigError, match="F='maybe' must be one of"):
        read.flag({"F": "maybe"}, "F", True)


def test_finite_numbers_still_pass_and_limits_still_hold():
    assert Settings.from_env({"JOB_TIMEOUT_S": "1e3"}).job_timeout_s == 1000.0
    assert Settings.from_env({"MAX_IMAGE_BYTES": "2048"}).max_image_bytes == 2048
    with pytest.raises(ConfigError, match="MAX_IMAGE_BYTES='1e2' must be at least 1024"):
        Settings.from_env({"MAX_IMAGE_BYTES": "1e2"})
    with pytest.raises(ConfigError, match=r"MAX_IMAGE_BYTES='2048\.5' must be a whole number"):
        Settings.from_env({"MAX_IMAGE_BYTES": "2048.5"})


def test_the_older_hugging_face_token_name_is_read_when_hf_token_is_not():
    assert ProvisionSettings.from_env({"HUGGING_FACE_HUB_TOKEN": "hf_old"}).hf_token == "hf_old"
    both = {"HF_TOKEN": "hf_new", "HUGGING_FACE_HUB_TOKEN": "hf_old"}
    assert ProvisionSettings.from_env(both).hf_token == "hf_new"
    assert ProvisionSettings.from_env({**both, "HF_TOKEN": ""}).hf_token == "hf_old"


def test_every_variable_a_reader_reads_is_documented():
    docs = "\n".join(
        (PACKAGE.parent / name).read_text(encoding="utf-8")
        for name in ("README.md", "docs/provisioning.md")
    )
    names = {
        name for kind in ("text", "choice", "number", "integer", "flag") for _, name in reads(kind)
    }
    # and what is read straight from os.environ (the progress condition)
    for path in PACKAGE.rglob("*.py"):
        names |= set(re.findall(r'os\.environ\.get\("([A-Z0-9_]+)"', path.read_text()))
    assert "RUNPOD_WEBHOOK_POST_OUTPUT" in names
    assert len(names) > 30
    undocumented = sorted(name for name in names if f"`{name}`" not in docs)
    assert undocumented == []
