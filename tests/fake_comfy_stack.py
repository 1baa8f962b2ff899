"""A stand-in ComfyUI for the GPU benchmarks' launcher (scripts/gpu_bench/comfy_launch.py): a
main.py, a comfy package with the two modules whose decisions the launcher makes as under the
image's torch, and a comfy_kitchen package, all without torch. main.py prints, as one JSON line on
stdout, what it saw."""

from __future__ import annotations

from pathlib import Path

# What ComfyUI 0.33's comfy/quant_ops.py does with comfy_kitchen at import, reduced to what the
# launcher touches, then a report of what main.py saw.
FAKE_MAIN = """
import importlib.resources, inspect, json, os, sys
seen_before = "comfy_kitchen" in sys.modules
import comfy_kitchen as ck
ck.registry.disable("triton")  # ComfyUI's own call without --enable-triton-backend
for name, state in sorted(ck.list_backends().items()):
    print(f"Found comfy_kitchen backend {name}: {state}", file=sys.stderr)
import comfy.ops
print(json.dumps({
    "conv3d": comfy.ops.conv3d_path(),
    "argv": sys.argv, "path0": sys.path[0], "name": __name__, "file": __file__,
    "cwd": os.getcwd(), "imported_before_main": seen_before,
    "disabled": sorted(ck.registry.disabled),
    "is_package": ck.__loader__.is_package("comfy_kitchen"),
    "resource": importlib.resources.files("comfy_kitchen").joinpath("__init__.py").is_file(),
    "source": "class _Registry" in inspect.getsource(ck),
    "triton_cache": os.environ.get("TRITON_CACHE_DIR"),
    "models_root": os.environ.get("MODELS_ROOT"),
}))
"""

FAKE_KITCHEN = """
class _Registry:
    def __init__(self):
        self.disabled = set()

    def disable(self, name):
        self.disabled.add(name)


registry = _Registry()


def list_backends():
    return {
        name: {"available": True, "disabled": name in registry.disabled,
               "unavailable_reason": None, "capabilities": ["apply_rope"]}
        for name in ("cuda", "eager", "triton")
    }
"""


# comfy/ops.py's workaround, reduced: a module global set at import from the torch and cuDNN
# versions (never here), read when a 3D convolution runs.
FAKE_OPS = """
import comfy.model_management
NVIDIA_MEMORY_CONV_BUG_WORKAROUND = False


def conv3d_path():
    return "cudnn_convolution" if NVIDIA_MEMORY_CONV_BUG_WORKAROUND else "conv3d"
"""

FAKE_MODEL_MANAGEMENT = """
import os


def is_nvidia():
    return os.environ.get("FAKE_DEVICE") == "nvidia"
"""


def make_fake_comfy(tmp_path: Path) -> tuple[Path, Path]:
    """(a ComfyUI folder with the stand-in main.py and comfy package, a site folder with
    comfy_kitchen): run main.py with the site folder on PYTHONPATH."""
    comfy = tmp_path / "ComfyUI"
    (comfy / "comfy").mkdir(parents=True)
    (comfy / "main.py").write_text(FAKE_MAIN, encoding="utf-8")
    (comfy / "comfy" / "__init__.py").write_text("", encoding="utf-8")
    (comfy / "comfy" / "ops.py").write_text(FAKE_OPS, encoding="utf-8")
    (comfy / "comfy" / "model_management.py").write_text(FAKE_MODEL_MANAGEMENT, encoding="utf-8")
    site = tmp_path / "site" / "comfy_kitchen"
    site.mkdir(parents=True)
    (site / "__init__.py").write_text(FAKE_KITCHEN, encoding="utf-8")
    return comfy, site.parent
