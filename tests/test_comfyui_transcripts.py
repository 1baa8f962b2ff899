"""The recorded ComfyUI transcripts: the facts the double and the client rely on hold in them.

When a re-recording (scripts/record_comfyui_transcripts.py) changes one of these facts, the
real protocol changed, and the double and the client must follow.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data" / "comfyui_transcripts"
RECORDER = ROOT / "scripts" / "record_comfyui_transcripts.py"


def load(name: str) -> dict:
    return json.loads((DATA / f"{name}.json").read_text())


def text_messages(record: dict) -> list[dict]:
    return [entry["message"] for entry in record["ws_messages"] if entry["kind"] == "text"]


def own(record: dict) -> list[dict]:
    """Messages about this prompt, without broadcasts such as crystools.monitor."""
    prompt_id = record["post_prompt"]["body"]["prompt_id"]
    return [m for m in text_messages(record) if m["data"].get("prompt_id") == prompt_id]


@pytest.fixture(scope="module")
def recorder() -> ModuleType:
    spec = importlib.util.spec_from_file_location("record_comfyui_transcripts", RECORDER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_every_transcript_is_json_without_local_paths():
    files = sorted(DATA.glob("*.json"))
    assert len(files) >= 15
    for path in files:
        text = path.read_text()
        json.loads(text)
        assert str(Path.home()) + "/" not in text, path.name
        assert str(ROOT) not in text, path.name


@pytest.mark.parametrize("name", ["success", "execution_error", "execution_interrupted"])
def test_a_run_ends_with_its_terminal_message_then_executing_null(name):
    kinds = [(m["type"], m["data"].get("node", "-")) for m in own(load(name))]
    terminal = {
        "success": "execution_success",
        "execution_error": "execution_error",
        "execution_interrupted": "execution_interrupted",
    }[name]

    assert kinds[0] == ("execution_start", "-")
    assert kinds[-1] == ("executing", None)
    assert [kind for kind, _ in kinds].index(terminal) < len(kinds) - 1
    assert all(kind != "executing" or node is not None for kind, node in kinds[:-1])


def test_success_reports_the_mp4_under_gifs_and_in_history():
    record = load("success")
    prompt_id = record["post_prompt"]["body"]["prompt_id"]
    executed = [m for m in own(record) if m["type"] == "executed"]
    history = record["get_history_prompt_id"]["body"][prompt_id]

    assert [m["data"]["node"] for m in executed] == ["906"]
    gifs = executed[0]["data"]["output"]["gifs"]
    assert gifs == history["outputs"]["906"]["gifs"]
    assert gifs[0]["format"] == "video/h264-mp4-fast.json"
    assert gifs[0]["filename"].endswith(".mp4")
    assert gifs[0]["workflow"] == gifs[0]["filename"].replace(".mp4", ".png")
    assert record["output_files"][0]["ffprobe"]["streams"][0]["codec_name"] == "h264"
    assert history["status"]["status_str"] == "success"
    assert history["status"]["completed"] is True
    assert history["status"]["messages"][-1][0] == "execution_success"


def test_failed_runs_leave_error_history_without_outputs():
    for name, kind in (
        ("execution_error", "execution_error"),
        ("execution_interrupted", "execution_interrupted"),
    ):
        record = load(name)
        prompt_id = record["post_prompt"]["body"]["prompt_id"]
        entry = record["get_history_prompt_id"]["body"][prompt_id]
        assert entry["status"]["status_str"] == "error"
        assert entry["status"]["completed"] is False
        assert entry["status"]["messages"][-1][0] == kind
        assert entry["outputs"] == {}


def test_execution_error_names_the_node_and_the_exception():
    error = next(m for m in own(load("execution_error")) if m["type"] == "execution_error")
    assert error["data"]["node_id"] == "908"
    assert error["data"]["node_type"] == "UNETLoader"
    assert error["data"]["exception_message"]
    assert isinstance(error["data"]["traceback"], list)


def test_rejections_are_400_with_typed_errors_and_no_run():
    expected = {
        "prompt_400_missing_required_input": "required_input_missing",
        "prompt_400_bad_enum": "value_not_in_list",
        "prompt_400_missing_model_file": "value_not_in_list",
        "prompt_400_missing_input_image": "custom_validation_failed",
        "prompt_400_value_below_min": "value_smaller_than_min",
    }
    for name, error_type in expected.items():
        record = load(name)
        reply = record["post_prompt"]
        assert reply["status"] == 400, name
        assert reply["body"]["error"]["type"] == "prompt_outputs_failed_validation"
        (node,) = reply["body"]["node_errors"].values()
        assert node["errors"][0]["type"] == error_type, name
        assert node["dependent_outputs"] == ["906"]
        assert [m["type"] for m in text_messages(record)] == ["status"], name
    assert load("prompt_400_no_output_node")["post_prompt"]["body"]["error"]["type"] == (
        "prompt_no_outputs"
    )
    assert load("prompt_500_invalid_json")["post_prompt"]["status"] == 500


def test_redactor_replaces_local_paths_and_refuses_leftovers(recorder):
    redactor = recorder.Redactor([("/srv/comfy", "/opt/ComfyUI")])
    cleaned = redactor.tree(
        {"fullpath": "/srv/comfy/output/a.mp4", "tb": ['File "/x/y/lib/python3.12/json/x.py"']}
    )

    assert cleaned == {
        "fullpath": "/opt/ComfyUI/output/a.mp4",
        "tb": ['File "/usr/local/lib/python3.12/json/x.py"'],
    }
    with pytest.raises(SystemExit, match="/srv/comfy"):
        redactor.check("x.json", '{"p": "/srv/comfy/main.py"}')


def test_render_keeps_one_message_per_line_and_valid_json(recorder):
    record = {"scenario": "s", "ws_messages": [{"t": 0.5, "kind": "text", "message": {"a": 1}}]}
    text = recorder.render(recorder.rebase(record, 0.5))

    assert json.loads(text)["ws_messages"][0]["t"] == 0.0
    assert '    {"t": 0.0, "kind": "text", "message": {"a": 1}}' in text.splitlines()


def test_recorder_removes_the_job_outputs_it_recorded(recorder, tmp_path):
    folder = tmp_path / "output" / "wan-i2v"
    folder.mkdir(parents=True)
    for name in ("output_00001.mp4", "output_00001.png", "other.mp4"):
        (folder / name).write_bytes(b"x")
    scenarios = recorder.Scenarios(recorder.Session("http://127.0.0.1:9"), tmp_path, tmp_path)
    gifs = load("success")["output_files"][0]["gifs_entry"]

    scenarios.remove_outputs({"output_files": [{"gifs_entry": gifs}]})

    assert sorted(p.name for p in folder.iterdir()) == ["other.mp4"]
