"""The fixed Wan2.2 I2V workflow: its node roles, and the per-job prompt built from it.

The node ids are the user's and never change: 260 start image, 246/247 prompts, 834 seed,
500:1 target size, 500:22 frame count, 288/290 attention, 904 RIFE, 906 the MP4. The worker's
own nodes have new ids: 911/912 set fp16 accumulation on each expert's model (KJNodes'
ModelPatchTorchSettings: on while that model samples, off after), in place of ComfyUI's global
`--fast fp16_accumulation`, so one job can run without it.
`load_template` checks at start-up that each id still holds the class its role needs, so an
edited workflow file fails the boot with a clear message instead of failing jobs later.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wan_worker.errors import ConfigError
from wan_worker.node_classes import COMFY_LISTED_MODEL_INPUTS, RIFE_VFI, SAGE_ATTENTION_PATCH

START_IMAGE_NODE = "260"
POSITIVE_PROMPT_NODE = "246"
NEGATIVE_PROMPT_NODE = "247"
SEED_NODE = "834"
SIZE_NODE = "500:1"
FRAMES_NODE = "500:22"
ATTENTION_NODES = ("290", "288")  # high-noise expert, low-noise expert
FP16_ACCUMULATION_NODES = ("912", "911")  # high-noise expert, low-noise expert
RIFE_NODE = "904"
OUTPUT_NODE = "906"

ROLES: dict[str, str] = {
    START_IMAGE_NODE: "LoadImage",
    POSITIVE_PROMPT_NODE: "PrimitiveStringMultiline",
    NEGATIVE_PROMPT_NODE: "PrimitiveStringMultiline",
    SEED_NODE: "PrimitiveInt",
    SIZE_NODE: "EmptyImage",
    FRAMES_NODE: "INTConstant",
    ATTENTION_NODES[0]: SAGE_ATTENTION_PATCH,
    ATTENTION_NODES[1]: SAGE_ATTENTION_PATCH,
    FP16_ACCUMULATION_NODES[0]: "ModelPatchTorchSettings",
    FP16_ACCUMULATION_NODES[1]: "ModelPatchTorchSettings",
    RIFE_NODE: RIFE_VFI,
    OUTPUT_NODE: "VHS_VideoCombine",
}

#: Loader inputs that name a model file, with the folder of the model manifest
#: (workflows/models.json) that file is listed under: those ComfyUI lists from its model
#: folders, and RIFE VFI's, which lists its checkpoints itself.
MODEL_INPUTS: dict[tuple[str, str], str] = {
    **COMFY_LISTED_MODEL_INPUTS,
    (RIFE_VFI, "ckpt_name"): "rife",
}

#: Attention mode names the API reports, mapped to PathchSageAttentionKJ's `sage_attention`.
ATTENTION_MODES = {"sage": "auto", "sdpa": "disabled"}

# Stages of a job, by the node that does the work; used for progress and per-stage timings.
STAGES: dict[str, str] = {
    "907": "load_models",
    "908": "load_models",
    "910": "load_models",
    "226": "load_models",
    "228": "load_models",
    "6": "text_encode",
    "7": "text_encode",
    "481": "image_encode",
    "420:12": "sample_high_noise",
    "420:13": "sample_low_noise",
    "323": "vae_decode",
    RIFE_NODE: "interpolate",
    OUTPUT_NODE: "encode_mp4",
}


@dataclass(frozen=True)
class JobParameters:
    """What a job changes in the workflow."""

    prompt: str
    negative_prompt: str
    seed: int
    width: int
    height: int


@dataclass(frozen=True)
class WorkflowTemplate:
    """The workflow as loaded from disk; `build` returns a fresh prompt for one job."""

    graph: dict[str, Any]

    def _input(self, node_id: str, name: str) -> Any:
        return self.graph[node_id]["inputs"][name]

    @property
    def default_width(self) -> int:
        return int(self._input(SIZE_NODE, "width"))

    @property
    def default_height(self) -> int:
        return int(self._input(SIZE_NODE, "height"))

    @property
    def default_negative_prompt(self) -> str:
        return str(self._input(NEGATIVE_PROMPT_NODE, "value"))

    @property
    def fps(self) -> float:
        return float(self._input(OUTPUT_NODE, "frame_rate"))

    @property
    def output_frames(self) -> int:
        """Frames in the MP4: Wan's 4k+1 latent frames, then RIFE's (n - 1) * m + 1."""
        length = int(self._input(FRAMES_NODE, "value"))
        decoded = (length - 1) // 4 * 4 + 1
        multiplier = int(self._input(RIFE_NODE, "multiplier"))
        return (decoded - 1) * multiplier + 1

    def build(
        self,
        params: JobParameters,
        *,
        image_name: str,
        output_prefix: str,
        attention: str,
        fp16_accumulation: bool = True,
    ) -> dict[str, Any]:
        """The API-format prompt for one job. The template itself is never modified."""
        if attention not in ATTENTION_MODES:
            raise ValueError(f"unknown attention mode {attention!r}")
        prompt = copy.deepcopy(self.graph)
        prompt[START_IMAGE_NODE]["inputs"]["image"] = image_name
        prompt[POSITIVE_PROMPT_NODE]["inputs"]["value"] = params.prompt
        prompt[NEGATIVE_PROMPT_NODE]["inputs"]["value"] = params.negative_prompt
        prompt[SEED_NODE]["inputs"]["value"] = params.seed
        prompt[SIZE_NODE]["inputs"]["width"] = params.width
        prompt[SIZE_NODE]["inputs"]["height"] = params.height
        prompt[OUTPUT_NODE]["inputs"]["filename_prefix"] = output_prefix
        for node_id in ATTENTION_NODES:
            prompt[node_id]["inputs"]["sage_attention"] = ATTENTION_MODES[attention]
        for node_id in FP16_ACCUMULATION_NODES:
            prompt[node_id]["inputs"]["enable_fp16_accumulation"] = fp16_accumulation
        return prompt


def workflow_model_files(graph: dict[str, Any]) -> set[tuple[str, str]]:
    """(manifest folder, filename) for every model file the graph's loader nodes name."""
    found: set[tuple[str, str]] = set()
    for node in graph.values():
        if not isinstance(node, dict):
            continue
        for (class_type, input_name), folder in MODEL_INPUTS.items():
            value = node.get("inputs", {}).get(input_name)
            if node.get("class_type") == class_type and isinstance(value, str):
                found.add((folder, value))
    return found


def parse_template(graph: Any, source: str) -> WorkflowTemplate:
    """Check that every role's node exists with the expected class; raise ConfigError if not."""
    if not isinstance(graph, dict):
        raise ConfigError(f"{source}: the workflow must be a JSON object in ComfyUI API format")
    for node_id, class_type in ROLES.items():
        node = graph.get(node_id)
        if not isinstance(node, dict) or node.get("class_type") != class_type:
            found = node.get("class_type") if isinstance(node, dict) else "nothing"
            raise ConfigError(
                f"{source}: node {node_id} must be {class_type}, found {found}; "
                "the worker fills this node, so restore it from the project's workflow"
            )
    return WorkflowTemplate(graph)


def load_template(path: Path) -> WorkflowTemplate:
    try:
        graph = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"workflow file {path} does not exist; set WORKFLOW_PATH") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"workflow file {path} is not valid JSON: {exc}") from None
    return parse_template(graph, str(path))
