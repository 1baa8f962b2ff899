"""Every settings reader of the project refuses non-finite numbers and treats empty as unset.

The variables are found by running each reader: `EnvVars.kinds` records every variable read and
how, so a setting added later is checked without editing this file.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from wan_worker.errors import ConfigError
from wan_worker.settings.boot import BootSettings
from wan_worker.settings.cuda import CudaWaitSettings
from wan_worker.settings.env import EnvVars
from wan_worker.settings.provisioning import ProvisionSettings
from wan_worker.settings.worker import WorkerSettings

PACKAGE = Path(__file__).resolve().parent.parent / "wan_worker"
READERS: dict[str, Callable[[Mapping[str, str] | EnvVars], Any]] = {
    "worker": WorkerSettings.from_env,
    "provisioning": ProvisionSettings.from_env,
    "cuda": CudaWaitSettings.from_env,
    "boot": lambda env: BootSettings.from_env(WorkerSettings(), env),
}
NON_FINITE = ("inf", "-inf", "Infinity", "1e400", "-1e400", "nan", "NaN")


def reads(kind: str) -> list[tuple[str, str]]:
    """(reader, variable) for every variable a reader reads as `kind`."""
    found = []
    for reader_name, reader in READERS.items():
        var = EnvVars({})
        reader(var)
        found += [(reader_name, name) for name, k in sorted(var.kinds.items()) if k == kind]
    return found


NUMERIC = reads("number") + reads("integer")
FLAGS = reads("flag")


def test_the_search_finds_the_known_settings():
    names = {name for _, name in NUMERIC}
    assert {"JOB_TIMEOUT_S", "MAX_IMAGE_BYTES", "GPU_READY_TIMEOUT_S"} <= names
    # Provisioning reads no number any more (its were fixed, issue 23); its flag is found.
    assert ("provisioning", "HF_HUB_OFFLINE") in FLAGS


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
        assert EnvVars({"F": raw}).flag("F", False) is True
    for raw in ("0", "false", "No", "off"):
        assert EnvVars({"F": raw}).flag("F", True) is False
    with pytest.raises(ConfigError, match="F='maybe' must be one of"):
        EnvVars({"F": "maybe"}).flag("F", True)


def test_finite_numbers_still_pass_and_limits_still_hold():
    assert WorkerSettings.from_env({"JOB_TIMEOUT_S": "1e3"}).job_timeout_s == 1000.0
    assert WorkerSettings.from_env({"MAX_IMAGE_BYTES": "2048"}).max_image_bytes == 2048
    with pytest.raises(ConfigError, match="MAX_IMAGE_BYTES='1e2' must be at least 1024"):
        WorkerSettings.from_env({"MAX_IMAGE_BYTES": "1e2"})
    with pytest.raises(ConfigError, match=r"MAX_IMAGE_BYTES='2048\.5' must be a whole number"):
        WorkerSettings.from_env({"MAX_IMAGE_BYTES": "2048.5"})


def test_the_older_hugging_face_token_name_is_read_when_hf_token_is_not():
    assert ProvisionSettings.from_env({"HUGGING_FACE_HUB_TOKEN": "hf_old"}).hf_token == "hf_old"
    both = {"HF_TOKEN": "hf_new", "HUGGING_FACE_HUB_TOKEN": "hf_old"}
    assert ProvisionSettings.from_env(both).hf_token == "hf_new"
    assert ProvisionSettings.from_env({**both, "HF_TOKEN": ""}).hf_token == "hf_old"


def test_every_variable_a_reader_reads_is_documented():
    docs = (PACKAGE.parent / "docs" / "configuration.md").read_text(encoding="utf-8")
    names = set()
    for reader in READERS.values():
        var = EnvVars({})
        reader(var)
        names |= set(var.kinds)
    # and what is read straight from os.environ (the progress condition)
    for path in PACKAGE.rglob("*.py"):
        names |= set(re.findall(r'os\.environ\.get\("([A-Z0-9_]+)"', path.read_text()))
    assert "RUNPOD_WEBHOOK_POST_OUTPUT" in names
    assert len(names) > 30
    undocumented = sorted(name for name in names if f"`{name}`" not in docs)
    assert undocumented == []
