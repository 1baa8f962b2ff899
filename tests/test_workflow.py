"""The fixed workflow, checked against real ComfyUI node schemas the way /prompt checks it."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.comfy_graph_validation import model_file_choices, validate_prompt
from wan_worker.errors import ConfigError
from wan_worker.workflow import (
    ATTENTION_NODES,
    OUTPUT_NODE,
    JobParameters,
    load_template,
    parse_template,
)

PROJECT = Path(__file__).resolve().parent.parent
WORKFLOW = PROJECT / "workflows" / "wan_flf_i2v_api.json"
MODELS = PROJECT / "workflows" / "models.json"
OBJECT_INFO = Path(
    os.environ.get("OBJECT_INFO_PATH", str(PROJECT / "tests" / "data" / "object_info.json"))
)


@pytest.fixture(scope="module")
def object_info() -> dict[str, Any]:
    return json.loads(OBJECT_INFO.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def workflow() -> dict[str, Any]:
    return json.loads(WORKFLOW.read_text(encoding="utf-8"))


def manifest_files() -> dict[str, list[str]]:
    files: dict[str, list[str]] = {}
    for entry in json.loads(MODELS.read_text(encoding="utf-8"))["models"]:
        files.setdefault(entry["folder"], []).append(entry["filename"])
    return files


def choices() -> dict[tuple[str, str], list[Any]]:
    return dict(model_file_choices(manifest_files()))


def image_check(*uploaded: str):
    """LoadImage's own validation, as ComfyUI runs it: the file must have been uploaded."""
    names = uploaded or ("start_image.png",)
    return {("LoadImage", "image"): lambda v: None if v in names else f"Invalid image file: {v}"}


def test_workflow_is_accepted_as_comfyui_would(workflow, object_info):
    result = validate_prompt(workflow, object_info, choices(), image_check())
    assert result.messages() == []
    assert result.ok
    assert result.outputs == [OUTPUT_NODE]


def test_every_node_class_exists_and_every_node_is_used(workflow, object_info):
    assert {n["class_type"] for n in workflow.values()} <= set(object_info)
    linked = {
        str(v[0]) for n in workflow.values() for v in n["inputs"].values() if isinstance(v, list)
    }
    unused = set(workflow) - linked - {OUTPUT_NODE}
    assert unused == set(), f"nodes that feed nothing: {unused}"


def test_model_files_are_all_in_the_manifest(workflow):
    files = manifest_files()
    keys = {
        ("UNETLoader", "unet_name"): "diffusion_models",
        ("LoraLoaderModelOnly", "lora_name"): "loras",
        ("CLIPLoader", "clip_name"): "text_encoders",
        ("VAELoader", "vae_name"): "vae",
        ("RIFE VFI", "ckpt_name"): "rife",
    }
    named = []
    for node in workflow.values():
        for (class_type, name), folder in keys.items():
            if node["class_type"] == class_type:
                named.append((folder, node["inputs"][name]))
    assert len(named) == 6
    for folder, filename in named:
        assert filename in files.get(folder, []), f"{folder}/{filename} missing from models.json"


def test_the_users_workflow_is_rejected_for_the_rife_drift(object_info):
    """The user's original file, kept as data: today's RIFE VFI needs three more inputs."""
    user = json.loads((PROJECT / "tests" / "data" / "user_workflow_api.json").read_text())
    result = validate_prompt(user, object_info, choices(), image_check("INPUT_IMAGE.png"))
    assert not result.ok
    assert sorted(result.messages()) == [
        "node 904 (RIFE VFI): Required input is missing: batch_size",
        "node 904 (RIFE VFI): Required input is missing: dtype",
        "node 904 (RIFE VFI): Required input is missing: torch_compile",
    ]


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (
            lambda w: w["904"]["inputs"].pop("dtype"),
            "node 904 (RIFE VFI): Required input is missing: dtype",
        ),
        (
            lambda w: w["904"]["inputs"].update(dtype="float64"),
            "node 904 (RIFE VFI): Value not in list: dtype: 'float64' not in ['float32', 'float16', 'bfloat16']",
        ),
        (
            lambda w: w["420:8"]["inputs"].update(sampler_name="nope"),
            "node 420:8 (KSamplerSelect): Value not in list: sampler_name: 'nope' not in (list of length",
        ),
        (
            lambda w: w["362"]["inputs"].update(shift=101),
            "node 362 (ModelSamplingSD3): Value 101.0 bigger than max of 100.0: shift",
        ),
        (
            lambda w: w["420:10"]["inputs"].update(steps=0),
            "node 420:10 (BetaSamplingScheduler): Value 0 smaller than min of 1: steps",
        ),
        (
            lambda w: w["420:10"]["inputs"].update(steps="six"),
            "node 420:10 (BetaSamplingScheduler): Failed to convert an input value to a INT value: steps, six",
        ),
        (
            lambda w: w["323"]["inputs"].update(vae=["228", 0]),
            "node 323 (VAEDecode): Return type mismatch between linked nodes: vae, received_type(CLIP) mismatch input_type(VAE)",
        ),
        (
            lambda w: w["481"]["inputs"].update(positive=["9999", 0]),
            "node 481 (WanFirstLastFrameToVideo): Exception when validating inner node: '9999'",
        ),
        (
            lambda w: w["907"]["inputs"].update(unet_name="missing.safetensors"),
            "node 907 (UNETLoader): Value not in list: unet_name: 'missing.safetensors' not in",
        ),
        (
            lambda w: w["260"]["inputs"].update(image="other.png"),
            "node 260 (LoadImage): Custom validation failed for node: image - Invalid image file: other.png",
        ),
    ],
)
def test_validation_reports_what_comfyui_reports(workflow, object_info, mutate, expected):
    broken = copy.deepcopy(workflow)
    mutate(broken)
    result = validate_prompt(broken, object_info, choices(), image_check())
    assert not result.ok
    assert any(m.startswith(expected) for m in result.messages()), result.messages()


def test_unknown_class_and_missing_output_are_rejected(workflow, object_info):
    broken = copy.deepcopy(workflow)
    broken["7"]["class_type"] = "NotANode"
    result = validate_prompt(broken, object_info, choices(), image_check())
    assert result.error is not None and result.error["type"] == "missing_node_type"
    assert (
        result.error["message"]
        == "Node 'Negative conditioning' not found. The custom node may not be installed."
    )
    assert result.error["extra_info"]["class_type"] == "NotANode"
    no_output = {k: v for k, v in workflow.items() if k != OUTPUT_NODE}
    result = validate_prompt(no_output, object_info, choices(), image_check())
    assert result.error is not None and result.error["type"] == "prompt_no_outputs"


def test_a_cycle_is_reported(workflow, object_info):
    broken = copy.deepcopy(workflow)
    broken["288"]["inputs"]["model"] = ["362", 0]  # 362 already depends on 288
    result = validate_prompt(broken, object_info, choices(), image_check())
    assert not result.ok
    assert any("Dependency cycle detected" in m for m in result.messages())


def test_build_fills_the_role_nodes_and_leaves_the_template_alone(workflow, object_info):
    template = load_template(WORKFLOW)
    before = json.dumps(template.graph, sort_keys=True)
    params = JobParameters("a cat walks", "blurry", 42, 480, 832)
    prompt = template.build(
        params, image_name="wan-i2v-x.png", output_prefix="wan-i2v/x/clip", attention="sage"
    )
    assert json.dumps(template.graph, sort_keys=True) == before
    assert prompt["260"]["inputs"]["image"] == "wan-i2v-x.png"
    assert prompt["246"]["inputs"]["value"] == "a cat walks"
    assert prompt["247"]["inputs"]["value"] == "blurry"
    assert prompt["834"]["inputs"]["value"] == 42
    assert (prompt["500:1"]["inputs"]["width"], prompt["500:1"]["inputs"]["height"]) == (480, 832)
    assert prompt["906"]["inputs"]["filename_prefix"] == "wan-i2v/x/clip"
    assert [prompt[n]["inputs"]["sage_attention"] for n in ATTENTION_NODES] == ["auto", "auto"]
    sdpa = template.build(params, image_name="a.png", output_prefix="p", attention="sdpa")
    assert [sdpa[n]["inputs"]["sage_attention"] for n in ATTENTION_NODES] == [
        "disabled",
        "disabled",
    ]
    assert validate_prompt(prompt, object_info, choices(), image_check("wan-i2v-x.png")).ok


def test_template_facts_match_the_workflow():
    template = load_template(WORKFLOW)
    assert (template.default_width, template.default_height) == (720, 1280)
    assert template.output_frames == 161  # 81 frames, RIFE x2
    assert template.fps == 24.0
    assert template.default_negative_prompt


def test_a_workflow_whose_roles_moved_fails_at_load(workflow, tmp_path):
    broken = copy.deepcopy(workflow)
    broken["260"]["class_type"] = "LoadImageMask"
    with pytest.raises(ConfigError, match="node 260 must be LoadImage, found LoadImageMask"):
        parse_template(broken, "wf.json")
    path = tmp_path / "wf.json"
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_template(path)
    with pytest.raises(ConfigError, match="does not exist; set WORKFLOW_PATH"):
        load_template(tmp_path / "missing.json")
