"""What the worker knows about some of ComfyUI's node classes, by their class names.

Facts about ComfyUI and its node packs, not about one workflow: the fixed workflow
(`wan_worker.workflow`) uses these classes, and ComfyUI's failures (`wan_worker.comfy.failures`)
are read with them, so both import them from here. (`workflows/node_classes.json` is another
table: the Python module each of the workflow's classes comes from, for `wan_worker.node_packs`.)
"""

from __future__ import annotations

#: KJNodes' node that patches a model's attention (the misspelling is KJNodes'); with
#: `sage_attention` other than `disabled` it imports the sageattention package and nothing else.
SAGE_ATTENTION_PATCH = "PathchSageAttentionKJ"
#: The frame interpolation node of ComfyUI-Frame-Interpolation.
RIFE_VFI = "RIFE VFI"

#: Loader inputs whose allowed values ComfyUI lists from the files in its model folders, so a
#: missing file shows as `value_not_in_list`; each with the folder of the model manifest
#: (workflows/models.json) that file is listed under.
COMFY_LISTED_MODEL_INPUTS: dict[tuple[str, str], str] = {
    ("UNETLoader", "unet_name"): "diffusion_models",
    ("LoraLoaderModelOnly", "lora_name"): "loras",
    ("CLIPLoader", "clip_name"): "text_encoders",
    ("VAELoader", "vae_name"): "vae",
}

#: VideoHelperSuite's Video Combine input that names its ffmpeg format; ComfyUI lists the
#: formats from VideoHelperSuite's own folder and the `VHS_video_formats` folders, so the
#: workflow's own format (workflows/video_formats/, added by extra_model_paths.yaml) is missing
#: from a ComfyUI started without the worker's extra_model_paths.yaml.
VIDEO_FORMAT_INPUT = ("VHS_VideoCombine", "format")
