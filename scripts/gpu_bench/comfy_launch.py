"""Run ComfyUI's main.py as the image's torch makes it run, without patching ComfyUI.

Why: ComfyUI 0.33 takes two decisions from the torch it runs on, and a GPU host with a newer
torch takes them the other way, so its times are not the image's:

- under a torch older than cu130 (the image's is cu128), ``comfy/quant_ops.py`` calls
  ``comfy_kitchen.registry.disable("cuda")``: ``--disable-ck-backend cuda`` does the same;
- under torch 2.9-2.10 with cuDNN 9.10-9.14 (the image's 2.10 and 9.10.2), ``comfy/ops.py``
  sets ``NVIDIA_MEMORY_CONV_BUG_WORKAROUND``, which runs the VAE's half-precision 3D
  convolutions through ``torch.cudnn_convolution``: ``--conv3d-workaround`` sets it on an
  NVIDIA GPU.

::

    python comfy_launch.py --disable-ck-backend cuda --conv3d-workaround -- main.py ...

Everything after ``--`` is ComfyUI's command line, run with ``runpy`` as ``python main.py ...``
would run it: ``sys.argv[0]`` is main.py, ``sys.path[0]`` its folder, ``__name__`` is
``"__main__"``. The backends are disabled at the moment ComfyUI itself first imports
comfy_kitchen (an import hook), not here and now: ComfyUI sets up its allocator and comfy-aimdo
before torch is imported, and importing comfy_kitchen (which imports torch) earlier would change
that. One line on stderr says when it is done (``comfy_launch: comfy-kitchen backend(s) cuda
disabled ...``); ComfyUI's own "Found comfy_kitchen backend" lines that follow show the state.
The workaround is set the same way, right after ComfyUI first imports ``comfy.ops`` (whose own
check has then run), with one line saying whether it is on.

Standard library only: it runs under whatever Python runs ComfyUI.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import runpy
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType

TAG = "comfy_launch:"
USAGE = (
    "usage: comfy_launch.py [--disable-ck-backend NAME]... [--conv3d-workaround] "
    "-- MAIN_PY [COMFYUI_ARGS...]"
)
CONV3D_FLAG = "NVIDIA_MEMORY_CONV_BUG_WORKAROUND"  # comfy/ops.py, ComfyUI 0.33


def parse(argv: Sequence[str]) -> tuple[list[str], bool, Path, list[str]]:
    """(backends to disable, whether to set the conv3d workaround, ComfyUI's main.py, ComfyUI's
    arguments) from our command line."""
    if "--" not in argv:
        raise SystemExit(f"{USAGE}\n(no '--' before ComfyUI's main.py)")
    split = list(argv).index("--")
    ours, theirs = list(argv[:split]), list(argv[split + 1 :])
    backends: list[str] = []
    conv3d = False
    while ours:
        flag = ours.pop(0)
        if flag == "--conv3d-workaround":
            conv3d = True
            continue
        if flag != "--disable-ck-backend" or not ours:
            raise SystemExit(f"{USAGE}\n(unexpected {flag!r})")
        backends.append(ours.pop(0))
    if not theirs:
        raise SystemExit(f"{USAGE}\n(no main.py after '--')")
    return backends, conv3d, Path(theirs[0]), theirs[1:]


class _AfterExec(importlib.abc.Loader):
    """A module's own loader, then ``after(module)``."""

    def __init__(self, loader: importlib.abc.Loader, after: Callable[[ModuleType], None]) -> None:
        self.loader = loader
        self.after = after

    def __getattr__(self, name: str) -> object:
        # everything else (get_source, is_package, get_resource_reader...) is the real loader's:
        # Triton reads its kernels' source, importlib.resources reads package data
        return getattr(self.loader, name)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self.loader.exec_module(module)
        self.after(module)


class AfterImport(importlib.abc.MetaPathFinder):
    """Calls ``after(module)`` once, right after the first import of module ``name``."""

    def __init__(self, name: str, after: Callable[[ModuleType], None]) -> None:
        self.name = name
        self.after = after

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != self.name:
            return None
        sys.meta_path.remove(self)  # once; and so that the real finders answer below
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        spec.loader = _AfterExec(spec.loader, self.after)
        return spec


def disable_backends(backends: list[str]) -> Callable[[ModuleType], None]:
    def after(module: ModuleType) -> None:
        registry = module.registry
        for name in backends:
            registry.disable(name)
        print(
            f"{TAG} comfy-kitchen backend(s) {', '.join(backends)} disabled at import, as "
            "ComfyUI does under a torch older than cu130 (the image's cu128)",
            file=sys.stderr,
            flush=True,
        )

    return after


def conv3d_workaround(ops: ModuleType) -> None:
    """Set comfy/ops.py's conv3d workaround as ComfyUI does under the image's torch and cuDNN:
    on an NVIDIA GPU only (its own condition starts with ``is_nvidia()``)."""
    if not hasattr(ops, CONV3D_FLAG):
        state = f"not set: comfy.ops has no {CONV3D_FLAG}"
    elif not sys.modules["comfy.model_management"].is_nvidia():
        state = "left off: not an NVIDIA device"
    else:
        setattr(ops, CONV3D_FLAG, True)
        state = "on, as ComfyUI sets it under the image's torch 2.10 and cuDNN 9.10"
    print(f"{TAG} conv3d workaround {state}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> None:
    backends, conv3d, main_py, comfy_args = parse(sys.argv[1:] if argv is None else argv)
    main_py = main_py.resolve()
    if not main_py.is_file():
        raise SystemExit(f"{TAG} no ComfyUI main.py at {main_py}")
    if backends:
        sys.meta_path.insert(0, AfterImport("comfy_kitchen", disable_backends(backends)))
    if conv3d:
        sys.meta_path.insert(0, AfterImport("comfy.ops", conv3d_workaround))
    sys.argv = [str(main_py), *comfy_args]
    sys.path[0] = str(main_py.parent)  # what `python main.py` puts first: ComfyUI's folder
    runpy.run_path(str(main_py), run_name="__main__")


if __name__ == "__main__":
    main()
