"""The returned MP4 carries no workflow: VHS's `save_metadata` is off in the fixed workflow.

With `save_metadata` on, VideoHelperSuite writes the whole API prompt (model file names, the
graph, the job's input file name) and the UI workflow into the MP4's `prompt` and `workflow`
tags. The double writes them the same way, so these tests can see the leak when it is there.
"""

from __future__ import annotations

import base64
import copy
import json

import pytest

from tests.media import graph_tags, probe, tags
from tests.support import ComfyServer
from tests.test_handler import job
from wan_worker.handler import handle
from wan_worker.settings.worker import DEFAULT_WORKFLOW
from wan_worker.workflow import OUTPUT_NODE, WorkflowTemplate, load_template

pytestmark = pytest.mark.integration  # the ComfyUI double, ffmpeg


def test_the_fixed_workflow_does_not_embed_itself_in_the_video():
    graph = json.loads(DEFAULT_WORKFLOW.read_text())
    assert graph[OUTPUT_NODE]["class_type"] == "VHS_VideoCombine"
    assert graph[OUTPUT_NODE]["inputs"]["save_metadata"] is False


def test_with_save_metadata_on_the_double_embeds_the_prompt_as_vhs_does(comfy_double):
    """The check below can fail: with VHS's default the graph is in the file."""
    worker = comfy_double.worker()
    graph = copy.deepcopy(worker.template.graph)
    graph[OUTPUT_NODE]["inputs"]["save_metadata"] = True
    worker.template = WorkflowTemplate(graph)
    result = handle(job(), worker)
    assert "error" not in result, result
    video = base64.b64decode(result["video"])
    leaked = graph_tags(video)
    assert set(leaked) == {"prompt"}
    embedded = json.loads(leaked["prompt"])
    assert embedded[OUTPUT_NODE]["class_type"] == "VHS_VideoCombine"
    assert embedded["260"]["inputs"]["image"].startswith("wan-i2v-test-job-")
    assert "creation_time" in tags(video)
    assert comfy_double.job_files() == []


def test_a_jobs_video_carries_no_workflow_tags(comfy: ComfyServer):
    worker = comfy.worker()
    assert worker.template == load_template(DEFAULT_WORKFLOW)
    result = handle(job(), worker)
    assert "error" not in result, result
    video = base64.b64decode(result["video"])
    assert probe(video).frames == 161
    assert graph_tags(video) == {}
    assert b"class_type" not in video
    assert b"wan-i2v-test-job" not in video  # the job's input file name
