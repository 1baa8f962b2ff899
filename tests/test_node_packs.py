"""Which custom node packs ComfyUI loads: the workflow's own, derived from its node classes.

The class map (workflows/node_classes.json) is regenerated here from real /object_info data, so
the suite fails when the workflow, the map and the node schemas drift apart. With
REAL_COMFYUI_DIR and REAL_COMFYUI_PYTHON set, a real ComfyUI is started with the selection's
arguments and must serve every class of the workflow and none of the packs left out.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.support import free_port
from wan_worker.errors import ConfigError
from wan_worker.node_packs import (
    CLASS_MAP_PATH,
    PackSelection,
    build_class_map,
    class_map_document,
    load_class_map,
    pack_of,
    select,
    selection_from_env,
    whitelist_names,
    workflow_classes,
)

PROJECT = Path(__file__).resolve().parent.parent
WORKFLOW = PROJECT / "workflows" / "wan_flf_i2v_api.json"
VERSIONS = PROJECT / "docker" / "versions.json"
OBJECT_INFO = Path(
    os.environ.get("OBJECT_INFO_PATH", str(PROJECT / "tests" / "data" / "object_info.json"))
)
WORKFLOW_PACKS = ("ComfyUI-Frame-Interpolation", "ComfyUI-KJNodes", "ComfyUI-VideoHelperSuite")


@pytest.fixture(scope="module")
def workflow() -> dict[str, Any]:
    return json.loads(WORKFLOW.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def object_info() -> dict[str, Any]:
    return json.loads(OBJECT_INFO.read_text(encoding="utf-8"))


def test_the_committed_class_map_is_what_object_info_gives_for_the_workflow(
    workflow: dict[str, Any], object_info: dict[str, Any]
):
    recomputed = class_map_document(build_class_map(object_info, workflow))
    assert CLASS_MAP_PATH.read_text(encoding="utf-8") == recomputed, (
        "workflows/node_classes.json is stale: python -m wan_worker.node_packs map "
        "tests/data/object_info.json"
    )


def test_the_workflow_loads_only_its_three_pinned_packs(workflow: dict[str, Any]):
    selection = select(workflow, load_class_map())
    assert selection.packs == WORKFLOW_PACKS
    pinned = {node["name"] for node in json.loads(VERSIONS.read_text())["custom_nodes"]}
    assert len(pinned) == 9 and set(selection.packs) < pinned
    assert selection.comfyui_args() == [
        "--disable-all-custom-nodes",
        "--whitelist-custom-nodes",
        *WORKFLOW_PACKS,
        "--disable-api-nodes",
    ]
    assert "COMFYUI_NODE_PACKS=all" in selection.reason


def test_every_pack_comes_from_a_class_the_workflow_uses(workflow: dict[str, Any]):
    class_map = load_class_map()
    users = {pack_of(class_map[name]) for name in workflow_classes(workflow)}
    assert set(select(workflow, class_map).packs or ()) == users - {None}


def test_all_loads_every_pack_with_comfyuis_defaults(workflow: dict[str, Any]):
    selection = select(workflow, load_class_map(), "all")
    assert selection.packs is None
    assert selection.comfyui_args() == []


def test_a_class_missing_from_the_map_loads_every_pack_with_a_warning(workflow: dict[str, Any]):
    edited = {**workflow, "999": {"class_type": "ImageSharpen", "inputs": {}}}
    selection = select(edited, load_class_map())
    assert selection.comfyui_args() == []
    assert selection.reason.startswith("WARNING: node classes ImageSharpen are not in")
    assert "python -m wan_worker.node_packs map" in selection.reason


def test_a_workflow_with_an_api_node_keeps_api_nodes():
    graph = {
        "1": {"class_type": "LoadImage", "inputs": {}},
        "2": {"class_type": "SomeApiNode", "inputs": {}},
    }
    class_map = {"LoadImage": "nodes", "SomeApiNode": "comfy_api_nodes.nodes_kling"}
    selection = select(graph, class_map)
    assert selection.comfyui_args() == ["--disable-all-custom-nodes"]


def test_a_workflow_without_custom_nodes_disables_them_all():
    selection = PackSelection((), True, "")
    assert selection.comfyui_args() == ["--disable-all-custom-nodes", "--disable-api-nodes"]


def test_a_bad_setting_names_the_variable_and_its_values(workflow: dict[str, Any]):
    with pytest.raises(
        ConfigError, match=r"COMFYUI_NODE_PACKS='some' must be one of: workflow, all"
    ):
        select(workflow, load_class_map(), "some")


def test_object_info_without_a_workflow_class_is_refused(workflow: dict[str, Any]):
    with pytest.raises(ConfigError, match="lacks the workflow's node classes RIFE VFI"):
        build_class_map({"LoadImage": {"python_module": "nodes"}}, {
            "1": {"class_type": "LoadImage"}, "2": {"class_type": "RIFE VFI"},
        })  # fmt: skip


def test_whitelist_names_follow_what_is_installed(tmp_path: Path):
    (tmp_path / "PackDir").mkdir()
    (tmp_path / "single_file.py").write_text("NODE_CLASS_MAPPINGS = {}\n")
    assert whitelist_names(("PackDir", "single_file"), tmp_path) == ("PackDir", "single_file.py")
    with pytest.raises(ConfigError, match=r"'Missing', which is not installed in .*check COMFYUI"):
        whitelist_names(("PackDir", "Missing"), tmp_path)


def test_selection_from_env_reads_the_setting_and_checks_the_install(tmp_path: Path):
    for pack in WORKFLOW_PACKS:
        (tmp_path / "custom_nodes" / pack).mkdir(parents=True)
    selection = selection_from_env({}, tmp_path)
    assert selection.packs == WORKFLOW_PACKS
    assert selection_from_env({"COMFYUI_NODE_PACKS": " ALL "}, tmp_path).packs is None
    (tmp_path / "custom_nodes" / "ComfyUI-KJNodes").rmdir()
    with pytest.raises(ConfigError, match="'ComfyUI-KJNodes', which is not installed"):
        selection_from_env({}, tmp_path)
    with pytest.raises(ConfigError, match="cannot read the workflow"):
        selection_from_env({"WORKFLOW_PATH": str(tmp_path / "none.json")})


def run_cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wan_worker.node_packs", *args],
        cwd=PROJECT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.integration
def test_cli_prints_one_argument_a_line_and_fails_on_a_bad_setting(tmp_path: Path):
    for pack in WORKFLOW_PACKS:
        (tmp_path / "custom_nodes" / pack).mkdir(parents=True)
    done = run_cli("args", "--comfyui-dir", str(tmp_path), COMFYUI_NODE_PACKS="workflow")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "--disable-all-custom-nodes",
        "--whitelist-custom-nodes",
        *WORKFLOW_PACKS,
        "--disable-api-nodes",
    ]
    assert "[node_packs] loading only the custom node packs the workflow uses" in done.stderr
    everything = run_cli("args", COMFYUI_NODE_PACKS="all")
    assert (everything.returncode, everything.stdout) == (0, "")
    bad = run_cli("args", COMFYUI_NODE_PACKS="three")
    assert bad.returncode == 2
    assert "COMFYUI_NODE_PACKS='three' must be one of: workflow, all" in bad.stderr


@pytest.mark.integration
def test_cli_map_writes_the_committed_file(tmp_path: Path):
    out = tmp_path / "node_classes.json"
    done = run_cli("map", str(OBJECT_INFO), "--output", str(out))
    assert done.returncode == 0, done.stderr
    assert out.read_text() == CLASS_MAP_PATH.read_text()


REAL_DIR = os.environ.get("REAL_COMFYUI_DIR", "")
REAL_PYTHON = os.environ.get("REAL_COMFYUI_PYTHON", "")


@pytest.mark.integration
@pytest.mark.skipif(
    not (REAL_DIR and REAL_PYTHON),
    reason="needs REAL_COMFYUI_DIR and REAL_COMFYUI_PYTHON (a real ComfyUI with the nodes)",
)
def test_a_real_comfyui_serves_the_workflow_with_only_its_packs(tmp_path: Path, workflow):
    args = selection_from_env({}, Path(REAL_DIR)).comfyui_args()
    port = free_port()
    log = tmp_path / "comfyui.log"
    with log.open("wb") as log_file:
        proc = subprocess.Popen(
            [
                REAL_PYTHON, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port),
                "--disable-auto-launch", "--database-url", f"sqlite:///{tmp_path / 'db.sqlite'}",
                *args,
            ],
            cwd=REAL_DIR, stdout=log_file, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            info = wait_for_object_info(proc, f"http://127.0.0.1:{port}", log)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    assert workflow_classes(workflow) <= set(info)
    loaded = {pack_of(schema["python_module"]) for schema in info.values()} - {None}
    assert loaded == set(WORKFLOW_PACKS)
    assert not any(
        schema["python_module"].startswith("comfy_api_nodes.") for schema in info.values()
    )


def wait_for_object_info(
    proc: subprocess.Popen[bytes], url: str, log: Path, timeout_s: float = 300.0
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text(errors="replace")[-3000:]
        try:
            reply = requests.get(f"{url}/object_info", timeout=30)
        except (requests.ConnectionError, requests.Timeout):
            # Not listening yet, or listening but still busy starting (a read time-out):
            # poll again in half a second, or at once if ComfyUI exits meanwhile.
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=0.5)
            continue
        reply.raise_for_status()
        return reply.json()
    raise AssertionError(f"ComfyUI did not answer in {timeout_s}s: {log.read_text()[-3000:]}")
