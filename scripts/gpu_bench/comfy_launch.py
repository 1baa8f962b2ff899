"""Run ComfyUI's main.py with some of comfy-kitchen's backends disabled, without patching ComfyUI.

Why: the image runs torch cu128, under which ComfyUI 0.33 (``comfy/quant_ops.py``) calls
``comfy_kitchen.registry.disable("cuda")``; a GPU host with a cu130 torch keeps that backend on,
so its step times are not the image's. This launcher makes a cu130 host run ComfyUI as the image
runs it::

    python comfy_launch.py --disable-ck-backend cuda -- main.py --listen 127.0.0.1 ...

Everything after ``--`` is ComfyUI's command line, run with ``runpy`` as ``python main.py ...``
would run it: ``sys.argv[0]`` is main.py, ``sys.path[0]`` its folder, ``__name__`` is
``"__main__"``. The backends are disabled at the moment ComfyUI itself first imports
comfy_kitchen (an import hook), not here and now: ComfyUI sets up its allocator and comfy-aimdo
before torch is imported, and importing comfy_kitchen (which imports torch) earlier would change
that. One line on stderr says when it is done (``comfy_launch: comfy-kitchen backend(s) cuda
disabled ...``); ComfyUI's own "Found comfy_kitchen backend" lines that follow show the state.

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
USAGE = "usage: comfy_launch.py [--disable-ck-backend NAME]... -- MAIN_PY [COMFYUI_ARGS...]"


def parse(argv: Sequence[str]) -> tuple[list[str], Path, list[str]]:
    """(backends to disable, ComfyUI's main.py, ComfyUI's arguments) from our command line."""
    if "--" not in argv:
        raise SystemExit(f"{USAGE}\n(no '--' before ComfyUI's main.py)")
    split = list(argv).index("--")
    ours, theirs = list(argv[:split]), list(argv[split + 1 :])
    backends: list[str] = []
    while ours:
        flag = ours.pop(0)
        if flag != "--disable-ck-backend" or not ours:
            raise SystemExit(f"{USAGE}\n(unexpected {flag!r})")
        backends.append(ours.pop(0))
    if not theirs:
        raise SystemExit(f"{USAGE}\n(no main.py after '--')")
    return backends, Path(theirs[0]), theirs[1:]


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


def main(argv: Sequence[str] | None = None) -> None:
    backends, main_py, comfy_args = parse(sys.argv[1:] if argv is None else argv)
    main_py = main_py.resolve()
    if not main_py.is_file():
        raise SystemExit(f"{TAG} no ComfyUI main.py at {main_py}")
    if backends:
        sys.meta_path.insert(0, AfterImport("comfy_kitchen", disable_backends(backends)))
    sys.argv = [str(main_py), *comfy_args]
    sys.path[0] = str(main_py.parent)  # what `python main.py` puts first: ComfyUI's folder
    runpy.run_path(str(main_py), run_name="__main__")


if __name__ == "__main__":
    main()
