"""A protocol-faithful stand-in for ComfyUI 0.33, for tests and local runs without a GPU.

It serves ComfyUI's routes with the same payloads (`/prompt`, `/upload/image`, `/history`,
`/view`, `/queue`, `/interrupt`, `/system_stats`, `/object_info`, `/ws`), validates `/prompt`
against the node schemas of a real ComfyUI (tests/data/object_info.json) the way ComfyUI does,
and "runs" a prompt by sending the websocket messages ComfyUI sends, in ComfyUI's order:
`execution_start`, `execution_cached`, then per node `executing`, `progress` and
`progress_state`, `executed` for the output node, `execution_success`; the history entry is
written after `execution_success` and before the final `executing` with `node: null`, as in
ComfyUI. The output node writes a real H.264 MP4 with ffmpeg, from the uploaded start image,
with the frame count the workflow implies, and with `save_metadata` on writes the prompt into
its tags as VideoHelperSuite does; with no ffmpeg on PATH that node fails with
VideoHelperSuite's own error, as in ComfyUI.

Faults for tests are set with `POST /__double__/fault` (or `--fault` JSON at start):
  {"crash_at": node}          the process dies when that node starts (`"oom": true` logs a
                              CUDA out-of-memory error first)
  {"error_at": node}          that node fails with an execution error (`"message"`, `"type"`)
  {"hang_at": node}           that node never finishes (until /interrupt, unless
                              `"ignore_interrupt": true`)
  {"drop_ws_at": node}        every websocket is closed when that node starts (once)
  {"black_when": "auto"|"disabled"|"always"|"fp16_accumulation"}   the video is black for
                              that attention mode, always, or while fp16 accumulation is on
  {"sage_fails": kind}        SageAttention fails the way ComfyUI reports it (KJNodes'
                              PathchSageAttentionKJ with sage_attention != disabled):
                              "missing_module" (the package is not installed: the patch node
                              fails, as recorded from a real ComfyUI), "no_kernel" (no kernel
                              for this GPU), "kernel_error" (a CUDA launch error in its kernel)
                              and "illegal_memory_access" (a sticky CUDA error: every later
                              GPU node of this process fails too) in the first sampler
  {"step_delay_s": seconds}   each sampling step takes this long

Run it alone: `python -m tests.comfy_double --root /tmp/comfy --port 8188`. It also takes
ComfyUI's own command line (`--listen`, `--port`; other ComfyUI flags are ignored, and the root
defaults to the working directory, as ComfyUI's folders do), so the boot can start it as
COMFYUI_MAIN in place of ComfyUI's main.py. `/__double__/stats` reports the prompts received
and the prompt ids interrupted while running.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import json
import logging
import mimetypes
import os
import shutil
import struct
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

from tests.comfy_graph_validation import model_file_choices, validate_prompt

HERE = Path(__file__).resolve().parent
PROJECT = HERE.parent
DEFAULT_OBJECT_INFO = HERE / "data" / "object_info.json"
DEFAULT_MODELS = PROJECT / "workflows" / "models.json"
SAMPLER_CLASSES = {"SamplerCustomAdvanced", "KSampler"}

log = logging.getLogger("comfy_double")


def _ms() -> int:
    return int(time.time() * 1000)


VHS_NO_FFMPEG = (
    "ffmpeg is required for video outputs and could not be found.\n"
    "In order to use video outputs, you must either:\n"
    "- Install imageio-ffmpeg with pip,\n"
    "- Place a ffmpeg executable in {cwd}, or\n"
    "- Install ffmpeg and add it to the system path."
)


class Interrupted(Exception):
    pass


async def run_detached(args: list[str]) -> tuple[bytes, str | None]:
    """Run a command away from the terminal: stdin from /dev/null, its output captured. Run
    as a background job of an interactive shell (README's local mode), a child that reads or
    sets up the terminal (ffmpeg does, without -nostdin) is stopped by the shell's job control
    (SIGTTIN/SIGTTOU), and with it the double. Returns its stdout, and its stderr if it
    failed (None if it succeeded)."""
    proc = await asyncio.create_subprocess_exec(
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    return out, (err.decode(errors="replace") if proc.returncode != 0 else None)


class NodeFailure(Exception):
    def __init__(self, exc_type: str, message: str, traceback: list[str] | None = None) -> None:
        super().__init__(message)
        self.exc_type = exc_type
        self.message = message
        self.traceback = traceback or [f'  File "nodes.py", line 1, in {exc_type}\n']


# -- SageAttention failures, as ComfyUI reports them ----------------------------------------
# The frames are those of the pinned sources (ComfyUI, KJNodes, SageAttention 2.2.0); the
# missing module is recorded (comfyui_transcripts/execution_error_sageattention_missing.json).
_COMFY = "/opt/ComfyUI"
_SITE = "/opt/venv/lib/python3.12/site-packages"
_EXECUTION_FRAMES = [
    f'  File "{_COMFY}/execution.py", line 545, in execute\n    output_data, output_ui, '
    "has_subgraph, has_pending_tasks = await get_output_data(prompt_id, unique_id, obj, "
    "input_data_all, execution_block_cb=execution_block_cb, pre_execute_cb=pre_execute_cb, "
    "v3_data=v3_data)\n",
    f'  File "{_COMFY}/execution.py", line 344, in get_output_data\n    return_values = await '
    "_async_map_node_over_list(prompt_id, unique_id, obj, input_data_all, obj.FUNCTION, "
    "allow_interrupt=True, execution_block_cb=execution_block_cb, pre_execute_cb="
    "pre_execute_cb, v3_data=v3_data)\n",
    f'  File "{_COMFY}/execution.py", line 318, in _async_map_node_over_list\n    await '
    "process_inputs(input_dict, i)\n",
    f'  File "{_COMFY}/execution.py", line 306, in process_inputs\n    result = f(**inputs)\n',
]
_KJ = f"{_COMFY}/custom_nodes/ComfyUI-KJNodes/nodes/model_optimization_nodes.py"
_MISSING_MODULE_FRAMES = [
    *_EXECUTION_FRAMES,
    f'  File "{_KJ}", line 129, in patch\n    new_attention = get_sage_func(sage_attention, '
    "allow_compile=allow_compile)\n",
    f'  File "{_KJ}", line 31, in get_sage_func\n    from sageattention import sageattn\n',
]
_SAMPLER_FRAMES = [
    *_EXECUTION_FRAMES,
    f'  File "{_COMFY}/comfy/samplers.py", line 1335, in sample\n    output = '
    "executor.execute(noise, latent_image, sampler, sigmas, denoise_mask, callback, "
    "disable_pbar, seed, latent_shapes=latent_shapes)\n",
]
_KERNEL_FRAMES = [
    *_SAMPLER_FRAMES,
    f'  File "{_COMFY}/comfy/ldm/modules/attention.py", line 193, in wrapper\n    return '
    "optimized_attention_override(func, *args, **kwargs)\n",
    f'  File "{_KJ}", line 131, in attention_override_sage\n    return '
    "new_attention.__wrapped__(*args, **kwargs)\n",
    f'  File "{_KJ}", line 89, in attention_sage\n    out = sage_func(q, k, v, attn_mask=mask, '
    "is_causal=False, tensor_layout=tensor_layout).to(in_dtype)\n",
    f'  File "{_SITE}/torch/_dynamo/eval_frame.py", line 953, in _fn\n    return fn(*args, '
    "**kwargs)\n",
    f'  File "{_KJ}", line 33, in sage_func\n    return sageattn(q, k, v, is_causal=is_causal, '
    "attn_mask=attn_mask, tensor_layout=tensor_layout)\n",
    f'  File "{_SITE}/sageattention/core.py", line 153, in sageattn\n    return '
    "sageattn_qk_int8_pv_fp8_cuda(q, k, v, tensor_layout=tensor_layout, is_causal=is_causal, "
    'qk_quant_gran="per_warp", sm_scale=sm_scale, return_lse=return_lse, '
    'pv_accum_dtype="fp32+fp16")\n',
    f'  File "{_SITE}/sageattention/core.py", line 791, in sageattn_qk_int8_pv_fp8_cuda\n    '
    "q_int8, q_scale, k_int8, k_scale = per_warp_int8_cuda(q, k, km, tensor_layout="
    "tensor_layout, BLKQ=128, WARPQ=32, BLKK=64)\n",
    f'  File "{_SITE}/sageattention/quant.py", line 172, in per_warp_int8\n    '
    "_fused.quant_per_warp_int8_cuda(q, q_int8, q_scale, BLKQ, WARPQ, _tensor_layout)\n",
]
_CUDA_TAIL = (
    "\nCUDA kernel errors might be asynchronously reported at some other API call, so the "
    "stacktrace below might be incorrect.\nFor debugging consider passing "
    "CUDA_LAUNCH_BLOCKING=1\nCompile with `TORCH_USE_CUDA_DSA` to enable device-side "
    "assertions.\n\n"
)
SAGE_FAILURES: dict[str, tuple[str, str, list[str]]] = {
    "missing_module": (
        "ModuleNotFoundError",
        "No module named 'sageattention'\n",
        _MISSING_MODULE_FRAMES,
    ),
    "no_kernel": (
        "torch.AcceleratorError",
        "CUDA error: no kernel image is available for execution on the device" + _CUDA_TAIL,
        _KERNEL_FRAMES,
    ),
    "kernel_error": (
        "torch.AcceleratorError",
        "CUDA error: too many resources requested for launch" + _CUDA_TAIL,
        _KERNEL_FRAMES,
    ),
    "illegal_memory_access": (
        "torch.AcceleratorError",
        "CUDA error: an illegal memory access was encountered" + _CUDA_TAIL,
        _KERNEL_FRAMES,
    ),
}


class Double:
    def __init__(self, root: Path, object_info: dict[str, Any], models: dict[str, list[str]]):
        self.root = root
        self.input_dir = root / "input"
        self.output_dir = root / "output"
        self.temp_dir = root / "temp"
        for folder in (self.input_dir, self.output_dir, self.temp_dir):
            folder.mkdir(parents=True, exist_ok=True)
        self.object_info = object_info
        self.models = models
        self.sockets: dict[str, web.WebSocketResponse] = {}
        self.queue: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()
        self.pending: list[tuple[Any, ...]] = []
        self.running: tuple[Any, ...] | None = None
        self.history: dict[str, Any] = {}
        self.number = 0
        self.client_id: str | None = None
        self.last_node_id: str | None = None
        self.interrupt = asyncio.Event()
        self.faults: dict[str, Any] = {}
        self.dropped = False
        self.prompts_received = 0
        self.interrupted: list[str] = []
        self.monitor_interval = 1.0
        #: A sticky CUDA error happened: every later GPU node fails, as in a real process.
        self.cuda_broken: str | None = None

    # -- messaging ---------------------------------------------------------------------------

    def queue_info(self) -> dict[str, Any]:
        remaining = len(self.pending) + (1 if self.running else 0)
        return {"exec_info": {"queue_remaining": remaining}}

    async def send(self, event: str, data: dict[str, Any], sid: str | None) -> None:
        message = {"type": event, "data": data}
        targets = list(self.sockets.values()) if sid is None else [self.sockets.get(sid)]
        for ws in targets:
            if ws is not None and not ws.closed:
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await ws.send_json(message)

    async def send_text(self, node_id: str, text: str) -> None:
        """A binary TEXT frame (event type 3), as ComfyUI sends node text to the client."""
        body = node_id.encode()
        payload = struct.pack(">I", 3) + struct.pack(">I", len(body)) + body + text.encode()
        ws = self.sockets.get(self.client_id or "")
        if ws is not None and not ws.closed:
            with contextlib.suppress(ConnectionError, RuntimeError):
                await ws.send_bytes(payload)

    async def monitor(self, interval: float) -> None:
        """Crystools' resource monitor: a broadcast every `interval` seconds, job or not."""
        while True:
            await asyncio.sleep(interval)
            await self.send(
                "crystools.monitor",
                {"cpu_utilization": 50.0, "ram_used_percent": 20.0, "device_type": "cpu"},
                None,
            )

    async def queue_updated(self) -> None:
        await self.send("status", {"status": self.queue_info()}, None)

    # -- validation --------------------------------------------------------------------------

    def input_files(self) -> list[str]:
        return sorted(
            str(p.relative_to(self.input_dir)) for p in self.input_dir.rglob("*") if p.is_file()
        )

    def choices(self) -> dict[tuple[str, str], list[Any]]:
        return dict(model_file_choices(self.models))

    def custom_checks(self) -> dict[tuple[str, str], Callable[[Any], str | None]]:
        """LoadImage's own VALIDATE_INPUTS: the file must exist in the input folder."""

        def image_exists(value: Any) -> str | None:
            path = _safe_join(self.input_dir, str(value))
            return None if path is not None and path.is_file() else f"Invalid image file: {value}"

        return {("LoadImage", "image"): image_exists}

    # -- execution ---------------------------------------------------------------------------

    def order(self, prompt: dict[str, Any], outputs: list[str]) -> list[str]:
        seen: dict[str, None] = {}

        def visit(node_id: str) -> None:
            if node_id in seen:
                return
            for value in prompt[node_id].get("inputs", {}).values():
                if isinstance(value, list) and len(value) == 2 and str(value[0]) in prompt:
                    visit(str(value[0]))
            seen[node_id] = None

        for output in outputs:
            visit(output)
        return list(seen)

    def literal(self, prompt: dict[str, Any], node_id: str, name: str) -> Any:
        value = prompt[node_id]["inputs"][name]
        while isinstance(value, list):
            source = prompt[str(value[0])]
            inputs = source["inputs"]
            value = inputs.get("value", inputs.get(name))
            if value is None and source["class_type"] == "GetImageSize":
                return None
        return value

    def video_shape(self, prompt: dict[str, Any]) -> tuple[int, int, int, float, str]:
        """Width, height, frames, fps and attention of a Wan workflow; plain defaults otherwise."""
        size = next((n for n in prompt.values() if n["class_type"] == "EmptyImage"), None)
        width = round(int(size["inputs"]["width"]) / 16) * 16 if size else 64
        height = round(int(size["inputs"]["height"]) / 16) * 16 if size else 64
        frames_node = next((n for n in prompt.values() if n["class_type"] == "INTConstant"), None)
        length = int(frames_node["inputs"]["value"]) if frames_node else 9
        decoded = (length - 1) // 4 * 4 + 1
        rife = next((n for n in prompt.values() if n["class_type"] == "RIFE VFI"), None)
        multiplier = int(rife["inputs"]["multiplier"]) if rife else 1
        combine = next((n for n in prompt.values() if n["class_type"] == "VHS_VideoCombine"), None)
        fps = float(combine["inputs"]["frame_rate"]) if combine else 24.0
        return width, height, (decoded - 1) * multiplier + 1, fps, self.attention(prompt)

    @staticmethod
    def attention(prompt: dict[str, Any]) -> str:
        patch = next(
            (n for n in prompt.values() if n["class_type"] == "PathchSageAttentionKJ"), None
        )
        return str(patch["inputs"]["sage_attention"]) if patch else "disabled"

    @staticmethod
    def fp16_accumulation(prompt: dict[str, Any]) -> bool:
        return any(
            n["class_type"] == "ModelPatchTorchSettings"
            and n["inputs"].get("enable_fp16_accumulation") is True
            for n in prompt.values()
        )

    async def progress(self, prompt_id: str, node_id: str, value: int, total: int) -> None:
        await self.send(
            "progress",
            {"value": value, "max": total, "prompt_id": prompt_id, "node": node_id},
            self.client_id,
        )
        await self.send(
            "progress_state",
            {
                "prompt_id": prompt_id,
                "nodes": {
                    node_id: {
                        "value": float(value),
                        "max": float(total),
                        "state": "running",
                        "node_id": node_id,
                        "prompt_id": prompt_id,
                        "display_node_id": node_id,
                        "parent_node_id": None,
                        "real_node_id": node_id,
                    }
                },
            },
            self.client_id,
        )

    def check_interrupt(self) -> None:
        if self.interrupt.is_set() and not self.faults.get("ignore_interrupt"):
            raise Interrupted

    async def run_node(
        self,
        prompt_id: str,
        prompt: dict[str, Any],
        node_id: str,
        extra_data: dict[str, Any] | None = None,
    ) -> Any:
        node = prompt[node_id]
        faults = self.faults
        if faults.get("crash_at") == node_id:
            if faults.get("oom"):
                print(
                    "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.50 GiB. "
                    "GPU 0 has a total capacity of 31.36 GiB",
                    file=sys.stderr,
                    flush=True,
                )
            else:
                print("Segmentation fault (core dumped)", file=sys.stderr, flush=True)
            os._exit(137 if faults.get("oom") else 139)
        if faults.get("drop_ws_at") == node_id and not self.dropped:
            self.dropped = True
            for ws in list(self.sockets.values()):
                await ws.close()
        if faults.get("error_at") == node_id:
            raise NodeFailure(
                faults.get("type", "RuntimeError"), faults.get("message", "simulated failure")
            )
        self.sage_failure(prompt, node)
        if faults.get("hang_at") == node_id:
            while True:
                self.check_interrupt()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.interrupt.wait(), timeout=0.5)
        if node["class_type"] in SAMPLER_CLASSES:
            steps = 3
            for step in range(1, steps + 1):
                self.check_interrupt()
                delay = float(faults.get("step_delay_s", 0))
                if delay:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.interrupt.wait(), timeout=delay)
                    self.check_interrupt()
                await self.progress(prompt_id, node_id, step, steps)
        if node["class_type"] == "GetImageSize":
            await self.send_text(node_id, "width: 0, height: 0\n batch size: 1")
        if node["class_type"] == "VHS_VideoCombine":
            return await self.write_video(prompt_id, prompt, node_id, extra_data)
        if node["class_type"] == "SaveImage":
            return {"images": []}
        return None

    def sage_failure(self, prompt: dict[str, Any], node: dict[str, Any]) -> None:
        """Raise the SageAttention failure the fault asks for, where ComfyUI would raise it."""
        gpu_node = node["class_type"] in SAMPLER_CLASSES
        if self.cuda_broken is not None and gpu_node:
            raise NodeFailure("torch.AcceleratorError", self.cuda_broken, _SAMPLER_FRAMES)
        kind = self.faults.get("sage_fails")
        if kind is None:
            return
        exc_type, message, frames = SAGE_FAILURES[kind]
        sage_on = node["class_type"] == "PathchSageAttentionKJ" and (
            node["inputs"]["sage_attention"] != "disabled"
        )
        if kind == "missing_module" and sage_on:
            raise NodeFailure(exc_type, message, frames)
        if kind != "missing_module" and gpu_node and self.attention(prompt) != "disabled":
            if kind == "illegal_memory_access":
                self.cuda_broken = message
            raise NodeFailure(exc_type, message, frames)

    def metadata_args(
        self, prompt: dict[str, Any], node_id: str, extra_data: dict[str, Any], stem: str
    ) -> tuple[list[str], list[str]]:
        """VHS's `save_metadata`: the prompt (and extra_pnginfo) as MP4 tags, as VHS writes them.

        VideoHelperSuite (videohelpersuite/nodes.py, ffmpeg_process) writes an FFMETADATA file
        with `prompt` and `workflow` as JSON, puts it before the frames as ffmpeg's first
        input, and adds `-metadata creation_time=now -movflags use_metadata_tags`.
        """
        if not prompt[node_id]["inputs"].get("save_metadata", True):
            return [], []
        tags: dict[str, Any] = {"prompt": prompt}
        tags.update(extra_data.get("extra_pnginfo") or {})

        def escape(key: str, value: Any) -> str:
            text = json.dumps(value)
            for char in ("\\", ";", "#", "=", "\n"):
                text = text.replace(char, "\\" + char)
            return f"{key}={text}"

        path = self.temp_dir / f"{stem}.ffmetadata"
        path.write_text(
            ";FFMETADATA1\n" + "".join(escape(k, v) + "\n" for k, v in tags.items()),
            encoding="utf-8",
        )
        return (
            ["-i", str(path)],
            ["-metadata", "creation_time=now", "-movflags", "use_metadata_tags"],
        )

    async def write_video(
        self,
        prompt_id: str,
        prompt: dict[str, Any],
        node_id: str,
        extra_data: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        width, height, frames, fps, attention = self.video_shape(prompt)
        prefix = str(prompt[node_id]["inputs"]["filename_prefix"])
        subfolder, _, base = prefix.rpartition("/")
        folder = self.output_dir / subfolder
        if not folder.resolve().is_relative_to(self.output_dir.resolve()):
            raise NodeFailure("ValueError", "filename_prefix escapes the output folder")
        folder.mkdir(parents=True, exist_ok=True)
        counter = 1 + sum(1 for _ in folder.glob(f"{base}_*.mp4"))
        stem = f"{base}_{counter:05}"
        mp4, png = folder / f"{stem}.mp4", folder / f"{stem}.png"
        black_when = self.faults.get("black_when")
        black = black_when in (attention, "always") or (
            black_when == "fp16_accumulation" and self.fp16_accumulation(prompt)
        )
        image_node = next((n for n in prompt.values() if n["class_type"] == "LoadImage"), None)
        if black or image_node is None:
            source = ["-f", "lavfi", "-i", f"color=c=black:s={width}x{height}:r={fps:g}"]
            filters = "null"
        else:
            image = self.input_dir / str(image_node["inputs"]["image"])
            source = ["-loop", "1", "-framerate", f"{fps:g}", "-i", str(image)]
            filters = (
                f"scale={width}:{height}:force_original_aspect_ratio=increase,"
                f"crop={width}:{height},hue=H=2*PI*t/3"
            )
        if shutil.which("ffmpeg") is None:
            # VideoHelperSuite (videohelpersuite/nodes.py) when it found no ffmpeg at import.
            raise NodeFailure("ProcessLookupError", VHS_NO_FFMPEG.format(cwd=os.path.abspath("")))
        meta_in, meta_out = self.metadata_args(prompt, node_id, extra_data or {}, stem)
        args = [
            "ffmpeg", "-v", "error", "-nostdin", "-n", *meta_in, *source, "-vf", filters,
            "-frames:v", str(frames), "-c:v", "libx264", "-preset", "ultrafast", "-crf", "15",
            "-pix_fmt", "yuv420p", *meta_out, str(mp4),
        ]  # fmt: skip
        _, err = await run_detached(args)
        if meta_in:
            Path(meta_in[1]).unlink()
        if err is not None:
            raise NodeFailure("Exception", "An error occured in the ffmpeg subprocess:\n" + err)
        first = [
            "ffmpeg", "-v", "error", "-nostdin", "-n", "-i", str(mp4), "-frames:v", "1", str(png),
        ]  # fmt: skip
        await run_detached(first)
        for step in range(1, frames + 1, max(1, frames // 4)):
            await self.progress(prompt_id, node_id, step, frames)
        return {
            "gifs": [
                {
                    "filename": mp4.name,
                    "subfolder": subfolder,
                    "type": "output",
                    "format": str(prompt[node_id]["inputs"]["format"]),
                    "frame_rate": fps,
                    "workflow": png.name,
                    "fullpath": str(mp4),
                }
            ]
        }

    async def execute(self, item: tuple[Any, ...]) -> None:
        number, prompt_id, prompt, extra_data, outputs, _sensitive = item
        self.client_id = extra_data.get("client_id")
        self.interrupt.clear()
        messages: list[list[Any]] = []

        async def add(event: str, data: dict[str, Any], broadcast: bool = False) -> None:
            data = {**data, "timestamp": _ms()}
            messages.append([event, data])
            if self.client_id is not None or broadcast:
                await self.send(event, data, self.client_id)

        await add("execution_start", {"prompt_id": prompt_id})
        await add("execution_cached", {"nodes": [], "prompt_id": prompt_id})
        executed: list[str] = []
        ui_outputs: dict[str, Any] = {}
        success = True
        current = None
        try:
            for node_id in self.order(prompt, outputs):
                current = node_id
                self.last_node_id = node_id
                await self.send(
                    "executing",
                    {"node": node_id, "display_node": node_id, "prompt_id": prompt_id},
                    self.client_id,
                )
                ui = await self.run_node(prompt_id, prompt, node_id, extra_data)
                executed.append(node_id)
                if ui is not None:
                    ui_outputs[node_id] = ui
                    await self.send(
                        "executed",
                        {
                            "node": node_id,
                            "display_node": node_id,
                            "output": ui,
                            "prompt_id": prompt_id,
                        },
                        self.client_id,
                    )
            await add("execution_success", {"prompt_id": prompt_id})
        except Interrupted:
            success = False
            self.interrupted.append(prompt_id)
            await add(
                "execution_interrupted",
                {
                    "prompt_id": prompt_id,
                    "node_id": current,
                    "node_type": prompt[current]["class_type"] if current else None,
                    "executed": executed,
                },
                broadcast=True,
            )
        except NodeFailure as exc:
            success = False
            await add(
                "execution_error",
                {
                    "prompt_id": prompt_id,
                    "node_id": current,
                    "node_type": prompt[current]["class_type"] if current else None,
                    "executed": executed,
                    "exception_message": exc.message,
                    "exception_type": exc.exc_type,
                    "traceback": exc.traceback,
                    "current_inputs": {},
                    "current_outputs": [],
                },
            )
        self.last_node_id = None
        self.history[prompt_id] = {
            "prompt": [number, prompt_id, prompt, extra_data, outputs],
            "outputs": ui_outputs,
            "status": {
                "status_str": "success" if success else "error",
                "completed": success,
                "messages": messages,
            },
            "meta": {
                node: {
                    "node_id": node,
                    "display_node": node,
                    "parent_node": None,
                    "real_node_id": node,
                }
                for node in ui_outputs
            },
        }
        self.running = None
        await self.queue_updated()
        if self.client_id is not None:
            await self.send("executing", {"node": None, "prompt_id": prompt_id}, self.client_id)

    async def worker(self) -> None:
        while True:
            item = await self.queue.get()
            if item not in self.pending:
                continue  # deleted from the queue before it ran
            self.pending.remove(item)
            self.running = item
            await self.execute(item)


# -- HTTP routes ----------------------------------------------------------------------------


def _safe_join(root: Path, *parts: str) -> Path | None:
    path = root.joinpath(*parts).resolve()
    return path if path.is_relative_to(root.resolve()) else None


def build_app(double: Double) -> web.Application:
    routes = web.RouteTableDef()

    @routes.get("/ws")
    async def ws_handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        sid = request.rel_url.query.get("clientId", "") or uuid.uuid4().hex
        double.sockets.pop(sid, None)
        double.sockets[sid] = ws
        try:
            await double.send("status", {"status": double.queue_info(), "sid": sid}, sid)
            if double.client_id == sid and double.last_node_id is not None:
                await double.send("executing", {"node": double.last_node_id}, sid)
            async for msg in ws:
                if msg.type == WSMsgType.ERROR:
                    break
        finally:
            if double.sockets.get(sid) is ws:
                double.sockets.pop(sid, None)
        return ws

    @routes.get("/system_stats")
    async def system_stats(_request: web.Request) -> web.Response:
        return web.json_response(
            {
                "system": {
                    "os": "posix",
                    "comfyui_version": "0.33.0",
                    "python_version": sys.version,
                    "embedded_python": False,
                },
                "devices": [{"name": "cpu", "type": "cpu", "index": None}],
            }
        )

    @routes.get("/internal/folder_paths")
    async def folder_paths(_request: web.Request) -> web.Response:
        """ComfyUI's folders as its frontend reads them: each name's first folder list. The
        base folder (here the root) is the parent of `custom_nodes`, as in ComfyUI."""
        root = str(double.root.resolve())
        # RIFE VFI keeps its checkpoints in its own folder, which ComfyUI does not list.
        folders = sorted(name for name in double.models if name != "rife")
        paths = {name: [f"{root}/models/{name}"] for name in folders}
        paths["custom_nodes"] = [f"{root}/custom_nodes"]
        return web.json_response(paths)

    @routes.get("/object_info")
    async def object_info(_request: web.Request) -> web.Response:
        return web.json_response(double.object_info)

    @routes.get("/object_info/{node_class}")
    async def object_info_one(request: web.Request) -> web.Response:
        name = request.match_info["node_class"]
        return web.json_response(
            {name: double.object_info[name]} if name in double.object_info else {}
        )

    @routes.post("/upload/image")
    async def upload_image(request: web.Request) -> web.Response:
        post = await request.post()
        image = post.get("image")
        if not isinstance(image, web.FileField) or not image.filename:
            return web.Response(status=400)
        kind = str(post.get("type") or "input")
        root = {"input": double.input_dir, "temp": double.temp_dir, "output": double.output_dir}
        upload_dir = root.get(kind, double.input_dir)
        subfolder = str(post.get("subfolder") or "")
        target = _safe_join(upload_dir, subfolder, image.filename)
        if target is None:
            return web.Response(status=400)
        target.parent.mkdir(parents=True, exist_ok=True)
        data = image.file.read()
        name = image.filename
        if str(post.get("overwrite")) not in ("true", "1"):
            stem, ext = os.path.splitext(image.filename)
            counter = 1
            while target.exists() and target.read_bytes() != data:
                name = f"{stem} ({counter}){ext}"
                target = target.with_name(name)
                counter += 1
        target.write_bytes(data)
        return web.json_response({"name": name, "subfolder": subfolder, "type": kind})

    @routes.get("/view")
    async def view(request: web.Request) -> web.StreamResponse:
        query = request.rel_url.query
        filename = query.get("filename", "")
        if not filename or filename[0] == "/" or ".." in filename:
            return web.Response(status=400)
        root = {"input": double.input_dir, "temp": double.temp_dir, "output": double.output_dir}
        folder = root.get(query.get("type", "output"))
        if folder is None:
            return web.Response(status=400)
        path = _safe_join(folder, query.get("subfolder", ""), os.path.basename(filename))
        if path is None:
            return web.Response(status=403)
        if not path.is_file():
            return web.Response(status=404)
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return web.FileResponse(
            path,
            headers={
                "Content-Type": content_type,
                "Content-Disposition": f'filename="{path.name}"',
                "X-Content-Type-Options": "nosniff",
            },
        )

    @routes.post("/prompt")
    async def post_prompt(request: web.Request) -> web.Response:
        double.prompts_received += 1
        body = await request.json()
        if "prompt" not in body:
            error = {
                "type": "no_prompt",
                "message": "No prompt provided",
                "details": "No prompt provided",
                "extra_info": {},
            }
            return web.json_response({"error": error, "node_errors": {}}, status=400)
        prompt_id = body.get("prompt_id")
        if prompt_id is None:
            prompt_id = str(uuid.uuid4())
        else:
            try:
                if str(uuid.UUID(str(prompt_id))) != prompt_id:
                    raise ValueError(prompt_id)
            except ValueError:
                error = {
                    "type": "invalid_prompt_id",
                    "message": "prompt_id must be a valid UUID",
                    "details": "prompt_id must be a UUID string in canonical lowercase hyphenated "
                    "form; omit it to let the server generate one",
                    "extra_info": {},
                }
                return web.json_response({"error": error, "node_errors": {}}, status=400)
        prompt = body["prompt"]
        result = validate_prompt(
            prompt, double.object_info, double.choices(), double.custom_checks()
        )
        if not result.ok:
            return web.json_response(
                {"error": result.error, "node_errors": result.node_errors}, status=400
            )
        number = double.number
        double.number += 1
        extra = dict(body.get("extra_data") or {})
        if "client_id" in body:
            extra["client_id"] = body["client_id"]
        extra["create_time"] = _ms()
        item = (number, prompt_id, prompt, extra, result.outputs, {})
        double.pending.append(item)
        await double.queue.put(item)
        await double.queue_updated()
        return web.json_response(
            {"prompt_id": prompt_id, "number": number, "node_errors": result.node_errors}
        )

    @routes.get("/prompt")
    async def get_prompt(_request: web.Request) -> web.Response:
        """The queue's length: the worker's liveness probe asks it while a job runs."""
        return web.json_response(double.queue_info())

    @routes.get("/queue")
    async def get_queue(_request: web.Request) -> web.Response:
        strip = [list(item[:5]) for item in ([double.running] if double.running else [])]
        return web.json_response(
            {"queue_running": strip, "queue_pending": [list(i[:5]) for i in double.pending]}
        )

    @routes.post("/queue")
    async def post_queue(request: web.Request) -> web.Response:
        body = await request.json()
        if body.get("clear"):
            double.pending.clear()
        for prompt_id in body.get("delete", []):
            double.pending = [i for i in double.pending if i[1] != prompt_id]
        return web.Response(status=200)

    @routes.post("/interrupt")
    async def interrupt(request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except json.JSONDecodeError:
            body = {}
        target = body.get("prompt_id")
        if not target or (double.running is not None and double.running[1] == target):
            double.interrupt.set()
        return web.Response(status=200)

    @routes.get("/history")
    async def history(_request: web.Request) -> web.Response:
        return web.json_response(double.history)

    @routes.get("/history/{prompt_id}")
    async def history_one(request: web.Request) -> web.Response:
        prompt_id = request.match_info["prompt_id"]
        entry = double.history.get(prompt_id)
        return web.json_response({prompt_id: entry} if entry is not None else {})

    @routes.post("/__double__/fault")
    async def set_fault(request: web.Request) -> web.Response:
        double.faults = await request.json()
        double.dropped = False
        return web.json_response(double.faults)

    @routes.get("/__double__/stats")
    async def stats(_request: web.Request) -> web.Response:
        return web.json_response(
            {"prompts_received": double.prompts_received, "interrupted": double.interrupted}
        )

    app = web.Application(client_max_size=256 * 1024 * 1024)
    app.add_routes(routes)

    async def start_worker(app: web.Application) -> None:
        app["worker"] = asyncio.create_task(double.worker())
        if double.monitor_interval > 0:
            app["monitor"] = asyncio.create_task(double.monitor(double.monitor_interval))

    app.on_startup.append(start_worker)
    return app


def load_models(path: Path) -> dict[str, list[str]]:
    files: dict[str, list[str]] = {}
    for entry in json.loads(path.read_text(encoding="utf-8"))["models"]:
        files.setdefault(entry["folder"], []).append(entry["filename"])
    return files


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="A protocol-faithful ComfyUI double.", allow_abbrev=False
    )
    parser.add_argument(
        "--root", type=Path, default=Path("."), help="holds input/, output/, temp/ (default .)"
    )
    parser.add_argument("--host", "--listen", dest="host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8188, help="0 picks a free port")
    parser.add_argument("--object-info", type=Path, default=DEFAULT_OBJECT_INFO)
    parser.add_argument("--models", type=Path, default=DEFAULT_MODELS)
    parser.add_argument("--pid-file", type=Path)
    parser.add_argument("--fault", default="{}", help="faults as JSON, as for /__double__/fault")
    parser.add_argument(
        "--monitor-interval",
        type=float,
        default=1.0,
        help="seconds between Crystools-style monitor broadcasts; 0 turns them off",
    )
    parser.add_argument(
        "--start-delay-s",
        type=float,
        default=0.0,
        help="wait this long before listening (ComfyUI's imports take 15-30 s)",
    )
    args, _comfyui_flags = parser.parse_known_args(argv)
    return args


async def serve(args: argparse.Namespace) -> None:
    await asyncio.sleep(args.start_delay_s)
    double = Double(
        args.root,
        json.loads(args.object_info.read_text(encoding="utf-8")),
        load_models(args.models),
    )
    double.faults = json.loads(args.fault)
    double.monitor_interval = args.monitor_interval
    runner = web.AppRunner(build_app(double))
    await runner.setup()
    site = web.TCPSite(runner, args.host, args.port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        if exc.errno != errno.EADDRINUSE:
            raise
        # On stderr, which README's local mode leaves on the terminal: the job that would
        # follow cannot say why nothing (or something else) answers on this port.
        raise SystemExit(
            f"comfy_double: port {args.port} on {args.host} is already in use (another "
            "ComfyUI, or another program, listens there). Stop it, or start the double on "
            f"a free port (--port {args.port + 1}) and give the worker that address "
            f"(COMFYUI_URL=http://{args.host}:{args.port + 1})."
        ) from None
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    if args.pid_file:
        args.pid_file.write_text(str(os.getpid()), encoding="ascii")
    print(f"To see the GUI go to: http://{args.host}:{port}", flush=True)
    print(f"READY {port}", flush=True)
    await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> None:
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(parse_args(argv)))


if __name__ == "__main__":
    main()
