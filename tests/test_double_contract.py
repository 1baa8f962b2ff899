"""The ComfyUI double answers as the real ComfyUI 0.33 did in the recorded transcripts.

Each case sends the double the request recorded from a real ComfyUI and compares what a
client can rely on: status codes, error types, messages and details, node_errors per node,
and the order of a run's websocket messages. If the double drifts from the real server, this
fails; when ComfyUI is re-pinned, re-record the transcripts and this keeps the double honest.
"""

from __future__ import annotations

import copy
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests
import websocket

from tests.support import ComfyServer, make_png

pytestmark = pytest.mark.integration  # the ComfyUI double in a subprocess

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data" / "comfyui_transcripts"
WORKFLOW = json.loads((ROOT / "workflows" / "wan_flf_i2v_api.json").read_text())
BASE = {
    "260.image": "start_image.png",
    "834.value": 1,
    "500:1.width": 128,
    "500:1.height": 128,
    "500:22.value": 9,
    "288.sage_attention": "disabled",
    "290.sage_attention": "disabled",
}


def load(name: str) -> dict[str, Any]:
    return json.loads((DATA / f"{name}.json").read_text())


def prompt_with(changes: dict[str, Any], deletions: tuple[str, ...] = ()) -> dict[str, Any]:
    prompt = copy.deepcopy(WORKFLOW)
    for key, value in {**BASE, **changes}.items():
        node, _, name = key.rpartition(".")
        if name == "class_type":
            prompt[node]["class_type"] = value
        else:
            prompt[node]["inputs"][name] = value
    for key in deletions:
        node, _, name = key.partition(".")
        if name:
            del prompt[node]["inputs"][name]
        else:
            del prompt[node]
    return prompt


def _error(e: dict[str, Any]) -> dict[str, Any]:
    fields = {
        "type": e["type"],
        "message": e["message"],
        "details": e["details"],
        "input_name": e["extra_info"].get("input_name"),
        "linked_node": e["extra_info"].get("linked_node"),
        "exception_type": e["extra_info"].get("exception_type"),
    }
    if e["type"] == "exception_during_inner_validation":
        # ComfyUI walks a node's inputs as a Python set, so which downstream input first
        # reaches the broken node (and is named here) changes from one server start to the next.
        del fields["input_name"], fields["linked_node"]
    return fields


def comparable(body: dict[str, Any]) -> dict[str, Any]:
    """What a client reads from a /prompt error: no tracebacks, no machine-specific config."""
    error = body.get("error") or {}
    nodes = {}
    for node_id, entry in (body.get("node_errors") or {}).items():
        nodes[node_id] = {
            "class_type": entry["class_type"],
            "dependent_outputs": entry["dependent_outputs"],
            "errors": [_error(e) for e in entry["errors"]],
        }
    return {
        "type": error.get("type"),
        "message": error.get("message"),
        "details": error.get("details"),
        "node_errors": nodes,
    }


@pytest.fixture
def double(comfy_double: ComfyServer) -> ComfyServer:
    requests.post(
        f"{comfy_double.url}/upload/image",
        files={"image": ("start_image.png", make_png(256, 256), "image/png")},
        data={"overwrite": "true"},
        timeout=10,
    ).raise_for_status()
    return comfy_double


CASES = [
    ("prompt_400_bad_enum", {"420:8.sampler_name": "no_such_sampler"}, ()),
    ("prompt_400_link_to_missing_node", {"481.positive": ["9999", 0]}, ()),
    ("prompt_400_missing_input_image", {"260.image": "not_uploaded.png"}, ()),
    ("prompt_400_missing_model_file", {"908.unet_name": "missing_model.safetensors"}, ()),
    ("prompt_400_missing_required_input", {}, ("481.length",)),
    ("prompt_400_no_output_node", {}, ("906",)),
    ("prompt_400_unknown_class_type", {"906.class_type": "NoSuchNode"}, ()),
    ("prompt_400_value_below_min", {"500:1.width": 0}, ()),
]


@pytest.mark.parametrize(("scenario", "changes", "deletions"), CASES, ids=[c[0] for c in CASES])
def test_prompt_errors_match_the_real_comfyui(double, scenario, changes, deletions):
    recorded = load(scenario)["post_prompt"]
    reply = requests.post(
        f"{double.url}/prompt",
        json={"prompt": prompt_with(changes, deletions), "client_id": uuid.uuid4().hex},
        timeout=10,
    )
    assert reply.status_code == recorded["status"]
    assert comparable(reply.json()) == comparable(recorded["body"])


def test_a_body_without_prompt_matches(double):
    recorded = load("prompt_400_body_without_prompt")["post_prompt"]
    reply = requests.post(f"{double.url}/prompt", json={"client_id": "x"}, timeout=10)
    assert (reply.status_code, reply.json()) == (recorded["status"], recorded["body"])


def test_upload_reply_matches(double):
    recorded = load("upload_image")["post_upload_image"]
    reply = requests.post(
        f"{double.url}/upload/image",
        files={"image": ("start_image.png", make_png(), "image/png")},
        data={"overwrite": "true"},
        timeout=10,
    )
    assert reply.status_code == recorded["status"]
    assert reply.json() == recorded["body"]


def run_messages(server: ComfyServer, prompt: dict[str, Any]) -> tuple[str, list[dict]]:
    client_id = uuid.uuid4().hex
    ws = websocket.create_connection(f"ws{server.url[4:]}/ws?clientId={client_id}", timeout=60)
    prompt_id = requests.post(
        f"{server.url}/prompt", json={"prompt": prompt, "client_id": client_id}, timeout=10
    ).json()["prompt_id"]
    messages = []
    while True:
        raw = ws.recv()
        if not isinstance(raw, str):
            continue
        message = json.loads(raw)
        messages.append(message)
        if message["type"] == "executing" and message["data"] == {
            "node": None,
            "prompt_id": prompt_id,
        }:
            break
    ws.close()
    return prompt_id, messages


def shape(messages: list[dict], prompt_id: str) -> list[str]:
    """The run's own message types in order, repeats of one type folded into one."""
    kinds: list[str] = []
    for message in messages:
        if message["data"].get("prompt_id") != prompt_id or message["type"] == "progress_state":
            continue
        kind = message["type"]
        if kind == "executing" and message["data"]["node"] is None:
            kind = "executing(null)"
        if not kinds or kinds[-1] != kind:
            kinds.append(kind)
    return kinds


def test_a_run_sends_the_messages_in_comfyuis_order(double):
    recorded = load("success")
    recorded_id = recorded["post_prompt"]["body"]["prompt_id"]
    real = shape(
        [e["message"] for e in recorded["ws_messages"] if e["kind"] == "text"], recorded_id
    )
    prompt_id, messages = run_messages(double, prompt_with({}))
    ours = shape(messages, prompt_id)
    assert ours[:3] == real[:3] == ["execution_start", "execution_cached", "executing"]
    assert ours[-3:] == real[-3:] == ["executed", "execution_success", "executing(null)"]
    assert set(ours) == set(real)
    executed_real = {
        m["message"]["data"]["node"]
        for m in recorded["ws_messages"]
        if m["kind"] == "text" and m["message"]["type"] == "executing"
    } - {None}
    executed_ours = {m["data"]["node"] for m in messages if m["type"] == "executing"} - {None}
    assert executed_ours == executed_real
    history = requests.get(f"{double.url}/history/{prompt_id}", timeout=10).json()[prompt_id]
    real_history = recorded["get_history_prompt_id"]["body"][recorded_id]
    assert history.keys() == real_history.keys()
    assert (
        history["outputs"]["906"]["gifs"][0].keys()
        == real_history["outputs"]["906"]["gifs"][0].keys()
    )
    assert [k for k, _ in history["status"]["messages"]] == [
        k for k, _ in real_history["status"]["messages"]
    ]
    assert history["meta"] == real_history["meta"]


def test_folder_paths_name_the_base_folder_as_the_real_comfyui_does(double):
    """/internal/folder_paths: `custom_nodes` sits in the folder that holds input/ and output/
    (the recording's ComfyUI is /opt/ComfyUI); the double's root plays that folder."""
    real = load("internal_folder_paths")["get_internal_folder_paths"]
    assert real["status"] == 200
    assert real["body"]["custom_nodes"] == ["/opt/ComfyUI/custom_nodes"]
    ours = requests.get(f"{double.url}/internal/folder_paths", timeout=10).json()
    assert set(ours) <= set(real["body"])
    assert all(isinstance(v, list) and v for v in ours.values())
    assert ours["custom_nodes"] == [str(double.root.resolve() / "custom_nodes")]


def test_the_video_fullpath_is_the_output_folder_subfolder_and_name(double):
    entry = load("success")["output_files"][0]["gifs_entry"]
    assert entry["fullpath"] == f"/opt/ComfyUI/output/{entry['subfolder']}/{entry['filename']}"
    prompt_id, _ = run_messages(double, prompt_with({}))
    history = requests.get(f"{double.url}/history/{prompt_id}", timeout=10).json()[prompt_id]
    ours = history["outputs"]["906"]["gifs"][0]
    assert ours["fullpath"] == str(
        double.root.resolve() / "output" / ours["subfolder"] / ours["filename"]
    )
