"""Build-time smoke test of the worker image: the build fails unless this passes.

Three commands:

  smoke_image.py wheel WHEEL...
      In the builder stage, with cuobjdump on PATH: every SageAttention extension in the
      wheel holds sm_120a device code, and no other architecture.

  smoke_image.py requirement-files [--comfyui-dir DIR] [--kept DIR]
      After fetching ComfyUI and the nodes: each requirement file the image installed from
      docker/requirements/ (listed in its sources.json) is byte for byte the fetched one.

  smoke_image.py image [--comfyui-dir DIR] [--workflow FILE] [--extra-model-paths FILE]
                       [--lock FILE]...
                       [--models-manifest FILE] [--skip-gpu-build-checks]
                       [--without-sageattention]
      In the finished image, with the image's Python:
      - torch is the pinned release, built for CUDA 12.8 and compiled for sm_120;
      - sageattention imports, with its compiled sm80/sm89 kernels and fused ops;
      - (--lock, repeatable) every installed package is pinned by one of the locks
        (docker/torch.lock, docker/requirements.lock) or is SageAttention at its pin;
      - cv2 is the contrib build (Frame-Interpolation needs cv2.optflow);
      - the nine custom nodes are present, ComfyUI-Manager and QwenVL are not;
      - `main.py --cpu --quick-test-for-ci` loads every node, read from ComfyUI's own
        report: each of the nine listed under "Import times for custom nodes:" without
        "(IMPORT FAILED)", and no built-in node file reported as "IMPORT FAILED: ...";
      - (--workflow) a ComfyUI started on loopback (with --extra-model-paths FILE, the
        worker's extra_model_paths.yaml, as the worker starts it) registers every node class
        the workflow uses, and lists the video format each Video Combine node names, read
        back from /object_info;
      - (--models-manifest) Frame-Interpolation reads RIFE checkpoints from the folder the
        manifest links rife47.pth into, so RIFE never downloads at job time.

--skip-gpu-build-checks skips the torch CUDA and sageattention checks and says so: for a run
on a CPU-only machine against a fetched ComfyUI and a CPU build of torch.
--without-sageattention skips only the sageattention check and says so: for a run outside the
image with its own torch (PyPI's CUDA 12.8 build, which needs no GPU to import) but without
the SageAttention wheel that only the image's builder stage compiles.

Standard library only; runs on Python 3.11 and 3.12.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import importlib.metadata
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_VERSIONS = REPO / "docker" / "versions.json"
DEFAULT_KEPT = REPO / "docker" / "requirements"
FORBIDDEN_NODES = re.compile(r"manager|qwen[-_]?vl", re.IGNORECASE)
# ComfyUI's own import report (nodes.py): after loading the custom nodes it logs
#   Import times for custom nodes:
#      0.1 seconds: /opt/ComfyUI/custom_nodes/rgthree-comfy
#      0.0 seconds (IMPORT FAILED): /opt/ComfyUI/custom_nodes/RES4LYF
# where IMPORT FAILED means load_custom_node() returned False, having logged the reason as
# "Cannot import <path> module for custom nodes: <error>" (or "Skip <path> module ..."). A
# built-in node file that fails is reported as "IMPORT FAILED: nodes_x.py".
IMPORT_TIMES = "Import times for custom nodes:"
IMPORT_TIME_LINE = re.compile(r"^\s*[\d.]+ seconds( \(IMPORT FAILED\))?: (.+?)\s*$")
BUILTIN_FAILED = re.compile(r"^IMPORT FAILED: (.+?)\s*$")
CANNOT_IMPORT = re.compile(
    r"^(?:Cannot import|Skip) (.+?) module for custom nodes(?::| due to) ?(.*)$"
)
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")
# ComfyUI's console formatter (app/logger.py) puts the level before each message: "[INFO] ".
LEVEL_TAG = re.compile(r"^\[(?:DEBUG|DETAIL|INFO|WARNING|ERROR|CRITICAL)\] ?")
SAGE_EXTENSIONS = ("_qattn_sm80", "_qattn_sm89", "_fused")
WANTED_SM = "sm_120a"
QUICK_TEST_TIMEOUT_S = 900.0
SERVER_TIMEOUT_S = 900.0


class SmokeError(Exception):
    """A check failed; the message says what and how to fix it."""


def canonical(name: str) -> str:
    """PEP 503 normalised distribution name."""
    return re.sub(r"[-_.]+", "-", name).lower()


# ---------------------------------------------------------------- parsing (pure, tested)


def parse_pins(text: str) -> dict[str, str]:
    """name -> version of every `name==version` line of a lock or constraints file."""
    pins: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*([^\s;]+)", line)
        if match:
            pins[canonical(match.group(1))] = match.group(2)
    return pins


def unpinned(installed: Mapping[str, str], pins: Iterable[Mapping[str, str]]) -> list[str]:
    """Problems with installed packages that no pin allows, one line each."""
    problems = []
    for name, version in sorted(installed.items()):
        allowed = [pin[name] for pin in pins if name in pin]
        if not allowed:
            problems.append(f"{name}=={version} is installed but pinned nowhere")
        elif version not in allowed:
            problems.append(f"{name}=={version} is installed, pinned {' / '.join(allowed)}")
    return problems


def log_lines(log: str) -> list[str]:
    """The log's lines as ComfyUI's messages: colours and level tags removed."""
    return [LEVEL_TAG.sub("", ANSI_ESCAPE.sub("", line)) for line in log.splitlines()]


def import_report(log: str) -> tuple[dict[str, bool], list[str]]:
    """ComfyUI's own import report: {custom node folder name: imported?} and failed built-ins.

    Only the last "Import times for custom nodes:" section counts: ComfyUI lists prestartup
    scripts in the same format, and a node's own log lines may say anything.
    """
    lines = log_lines(log)
    builtin_failed = [m.group(1) for line in lines if (m := BUILTIN_FAILED.match(line.strip()))]
    starts = [i for i, line in enumerate(lines) if line.strip() == IMPORT_TIMES]
    nodes: dict[str, bool] = {}
    if starts:
        for line in lines[starts[-1] + 1 :]:
            if not line.strip():  # the report ends with an empty message
                break
            match = IMPORT_TIME_LINE.match(line)
            if match:  # other threads may log in between
                nodes[Path(match.group(2)).name] = match.group(1) is None
    return nodes, builtin_failed


def node_import_problems(log: str, nodes: Iterable[str]) -> list[str]:
    """What ComfyUI's import report says went wrong, with ComfyUI's reason where it gave one."""
    report, builtin_failed = import_report(log)
    if not report:
        return [f'ComfyUI printed no "{IMPORT_TIMES}" report: it did not load the custom nodes']
    reasons = {}
    for line in log_lines(log):
        match = CANNOT_IMPORT.match(line.strip())
        if match:
            reasons[Path(match.group(1)).name] = match.group(2).strip() or line.strip()
    problems = []
    for node in nodes:
        if node not in report:
            problems.append(f"custom node {node} is not in ComfyUI's import report")
        elif not report[node]:
            reason = reasons.get(node, "see the log above")
            problems.append(f"custom node {node}: IMPORT FAILED ({reason})")
    problems += [
        f"custom node {name}: IMPORT FAILED ({reasons.get(name, 'see the log above')})"
        for name, imported in report.items()
        if not imported and name not in nodes
    ]
    problems += [f"built-in node file {name}: IMPORT FAILED" for name in builtin_failed]
    return problems


def cuobjdump_archs(listing: str) -> set[str]:
    """The SM targets named by `cuobjdump --list-elf` output."""
    return set(re.findall(r"\.(sm_\d+a?)\.cubin", listing))


def workflow_class_types(workflow: Mapping[str, object]) -> set[str]:
    """Every class_type an API-format workflow uses."""
    return {
        str(node["class_type"])
        for node in workflow.values()
        if isinstance(node, dict) and "class_type" in node
    }


# ---------------------------------------------------------------- checks


def check_wheel(wheel: Path) -> list[str]:
    """Every CUDA extension in the wheel holds sm_120a code and nothing else."""
    cuobjdump = shutil.which("cuobjdump")
    if cuobjdump is None:
        raise SmokeError("cuobjdump is not on PATH: run this in the CUDA devel (builder) stage")
    lines = []
    with tempfile.TemporaryDirectory() as tmp, zipfile.ZipFile(wheel) as archive:
        archive.extractall(tmp)
        libraries = sorted(Path(tmp).glob("sageattention/*.so"))
        found = {lib.name.split(".", 1)[0] for lib in libraries}
        missing = [ext for ext in SAGE_EXTENSIONS if ext not in found]
        if missing:
            raise SmokeError(f"{wheel.name} lacks the extensions {', '.join(missing)}")
        for lib in libraries:
            listing = subprocess.run(
                [cuobjdump, "--list-elf", str(lib)], capture_output=True, text=True, check=True
            ).stdout
            archs = cuobjdump_archs(listing)
            if archs != {WANTED_SM}:
                raise SmokeError(
                    f"{lib.name} holds {sorted(archs) or 'no device code'}, expected only "
                    f"{WANTED_SM}: build with TORCH_CUDA_ARCH_LIST=12.0"
                )
            lines.append(f"{lib.name}: {WANTED_SM}")
    return lines


def check_torch(versions: Mapping) -> str:
    torch = importlib.import_module("torch")
    expected = versions["torch"]["packages"]["torch"]
    installed = importlib.metadata.version("torch")
    if installed != expected:
        raise SmokeError(f"torch is {installed}, expected {expected}")
    cuda = versions["torch"]["cuda"]
    if torch.version.cuda != cuda:
        raise SmokeError(f"torch was built for CUDA {torch.version.cuda}, expected {cuda}")
    # get_arch_list() answers [] without a GPU; the compiled-in flags do not need one.
    archs = torch._C._cuda_getArchFlags().split()
    if "sm_120" not in archs:
        raise SmokeError(f"torch was not compiled for sm_120: {archs}")
    return (
        f"torch {installed} ({torch.__version__}), CUDA {torch.version.cuda}, "
        f"archs {' '.join(archs)}"
    )


def check_sageattention(versions: Mapping) -> str:
    sage = importlib.import_module("sageattention")
    for ext in SAGE_EXTENSIONS:
        importlib.import_module(f"sageattention.{ext}")
    core = importlib.import_module("sageattention.core")
    # core.py swallows a failed import of its kernels and silently disables them.
    if not (core.SM80_ENABLED and core.SM89_ENABLED):
        raise SmokeError("sageattention imported, but its sm80/sm89 kernels did not load")
    version = importlib.metadata.version("sageattention")
    if version != versions["sageattention"]["version"]:
        expected = versions["sageattention"]["version"]
        raise SmokeError(f"sageattention is {version}, expected {expected}")
    return f"sageattention {version} from {Path(sage.__file__).parent}, kernels loaded"


def check_pins(locks: list[Path], versions: Mapping) -> str:
    installed = {
        canonical(dist.metadata["Name"]): dist.version
        for dist in importlib.metadata.distributions()
    }
    pins = [parse_pins(lock.read_text()) for lock in locks]
    pins.append({"sageattention": versions["sageattention"]["version"]})
    problems = unpinned(installed, pins)
    if problems:
        raise SmokeError(
            "installed packages outside the pins (regenerate the locks with "
            "docker/lock_requirements.py):\n  " + "\n  ".join(problems)
        )
    return f"{len(installed)} installed packages, each pinned"


def requirement_file_problems(comfyui: Path, kept: Path) -> list[str]:
    """Differences between the kept requirement files and the ones fetched at the pins."""
    record = json.loads((kept / "sources.json").read_text())["files"]
    problems = []
    for rel, source in sorted(record.items()):
        copy = kept / rel
        fetched = comfyui / Path(rel).relative_to("ComfyUI")
        if hashlib.sha256(copy.read_bytes()).hexdigest() != source["sha256"]:
            problems.append(f"{copy} is not the file recorded in sources.json")
        elif not fetched.is_file():
            problems.append(f"{fetched} does not exist at {source['commit']}")
        elif fetched.read_bytes() != copy.read_bytes():
            problems.append(f"{fetched} differs from docker/requirements/{rel}")
    return problems


def check_requirement_files(comfyui: Path, kept: Path) -> str:
    problems = requirement_file_problems(comfyui, kept)
    if problems:
        raise SmokeError(
            "the image installed requirement files that are not the fetched ones; copy them "
            "from a checkout at the pins with docker/lock_requirements.py --refresh-from:\n  "
            + "\n  ".join(problems)
        )
    count = len(json.loads((kept / "sources.json").read_text())["files"])
    return f"{count} requirement files identical to the fetched ones"


def check_opencv() -> str:
    cv2 = importlib.import_module("cv2")
    if not hasattr(cv2, "optflow"):
        raise SmokeError(
            f"cv2 {cv2.__version__} is not the contrib build (no cv2.optflow): several "
            "opencv wheels share the cv2 package; reinstall opencv-contrib-python last"
        )
    return f"cv2 {cv2.__version__} (contrib)"


def check_node_dirs(comfyui: Path, nodes: list[str]) -> str:
    present = {p.name for p in (comfyui / "custom_nodes").iterdir() if p.is_dir()}
    missing = [node for node in nodes if node not in present]
    forbidden = sorted(name for name in present if FORBIDDEN_NODES.search(name))
    if missing or forbidden:
        raise SmokeError(f"custom nodes missing: {missing}; forbidden present: {forbidden}")
    return f"{len(nodes)} custom nodes present; no Manager, no QwenVL"


def frame_interpolation_reads(comfyui: Path, model_type: str) -> Path:
    """The folder ComfyUI-Frame-Interpolation loads `model_type` checkpoints from.

    The node joins its own directory, config.yaml's ckpts_path and the model type, and downloads
    into that folder whatever it does not find there.
    """
    node = comfyui / "custom_nodes" / "ComfyUI-Frame-Interpolation"
    config = (node / "config.yaml").read_text()
    match = re.search(r"^ckpts_path:\s*[\"']?([^\"'#\n]+?)[\"']?\s*(#.*)?$", config, re.MULTILINE)
    if match is None:
        raise SmokeError(f"{node / 'config.yaml'} has no ckpts_path")
    return Path(os.path.normpath(node / match.group(1).strip() / model_type))


def check_rife_folder(comfyui: Path, manifest: Path) -> str:
    """Provisioning links rife47.pth where the RIFE VFI node looks, so it never downloads it."""
    reads = frame_interpolation_reads(comfyui, "rife")
    models = json.loads(manifest.read_text())["models"]
    rife = [m for m in models if m.get("folder") == "rife"]
    if not rife:
        raise SmokeError(f"{manifest} has no model in folder 'rife'")
    links = {
        Path(os.path.normpath(t.format(comfyui_dir=comfyui, models_root="/models-root")))
        for model in rife
        for t in model.get("link_into", [])
    }
    if reads not in links:
        raise SmokeError(
            f"RIFE VFI reads checkpoints from {reads}, but {manifest.name} links "
            f"{rife[0]['filename']} into {sorted(map(str, links))}: RIFE would download at "
            "job time"
        )
    if reads.is_symlink() and not reads.exists():
        raise SmokeError(f"{reads} is a dangling link")
    return f"RIFE VFI reads {reads}, where provisioning links {rife[0]['filename']}"


def comfyui_command(comfyui: Path, scratch: Path, *extra: str) -> list[str]:
    dirs = {}
    for name in ("user", "input", "output", "temp"):
        dirs[name] = scratch / name
        dirs[name].mkdir(exist_ok=True)
    return [
        sys.executable, str(comfyui / "main.py"), "--cpu", "--disable-auto-launch",
        "--user-directory", str(dirs["user"]), "--input-directory", str(dirs["input"]),
        "--output-directory", str(dirs["output"]), "--temp-directory", str(dirs["temp"]),
        "--database-url", "sqlite:///:memory:", *extra,
    ]  # fmt: skip


def check_quick_test(comfyui: Path, nodes: list[str]) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        command = comfyui_command(comfyui, Path(tmp), "--quick-test-for-ci")
        result = subprocess.run(
            command,
            cwd=comfyui,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=QUICK_TEST_TIMEOUT_S,
            check=False,
        )
    problems = node_import_problems(result.stdout, nodes)
    if result.returncode != 0:
        problems.insert(0, f"main.py --quick-test-for-ci exited {result.returncode}")
    if problems:
        tail = "\n".join(result.stdout.splitlines()[-40:])
        raise SmokeError("\n  ".join(["ComfyUI did not load cleanly:", *problems]) + f"\n{tail}")
    return f"main.py --cpu --quick-test-for-ci: all {len(nodes)} custom nodes imported"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


#: Inputs whose choices ComfyUI lists from files that the image ships (not models, which arrive
#: at run time): VideoHelperSuite's formats, the workflow's own among them.
LISTED_CHOICES = (("VHS_VideoCombine", "format"),)


def unlisted_choices(workflow: Mapping, object_info: Mapping) -> list[str]:
    """Each LISTED_CHOICES value in the workflow that ComfyUI does not offer."""
    problems = []
    for node_id, node in workflow.items():
        for class_type, name in LISTED_CHOICES:
            if node.get("class_type") != class_type or name not in node.get("inputs", {}):
                continue
            spec = object_info.get(class_type, {}).get("input", {}).get("required", {}).get(name)
            offered = spec[0] if spec and isinstance(spec[0], list) else []
            value = node["inputs"][name]
            if value not in offered:
                problems.append(f"node {node_id} ({class_type}) {name} {value!r} is not offered")
    return problems


def check_workflow_nodes(comfyui: Path, workflow: Path, extra_paths: Path | None = None) -> str:
    graph = json.loads(workflow.read_text())
    wanted = workflow_class_types(graph)
    port = free_port()
    url = f"http://127.0.0.1:{port}/object_info"
    extra = ["--extra-model-paths-config", str(extra_paths.resolve())] if extra_paths else []
    with tempfile.TemporaryDirectory() as tmp:
        log_path = Path(tmp) / "comfyui.log"
        command = comfyui_command(
            comfyui, Path(tmp), "--listen", "127.0.0.1", "--port", str(port), *extra
        )
        with log_path.open("w") as log:
            server = subprocess.Popen(command, cwd=comfyui, stdout=log, stderr=subprocess.STDOUT)
        try:
            object_info = wait_for_json(url, server, log_path, SERVER_TIMEOUT_S)
        finally:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
    missing = sorted(wanted - set(object_info))
    if missing:
        raise SmokeError(f"{workflow.name} uses node classes ComfyUI does not have: {missing}")
    unlisted = unlisted_choices(graph, object_info)
    if unlisted:
        hint = "" if extra_paths else " (pass --extra-model-paths, the worker's yaml)"
        raise SmokeError(f"{workflow.name}: " + "; ".join(unlisted) + hint)
    return f"{workflow.name}: all {len(wanted)} node classes registered, its video format listed"


def wait_for_json(url: str, server: subprocess.Popen, log_path: Path, timeout_s: float) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            tail = "\n".join(log_path.read_text().splitlines()[-40:])
            raise SmokeError(f"ComfyUI exited {server.returncode} before serving:\n{tail}")
        try:
            with urllib.request.urlopen(url, timeout=10) as reply:  # noqa: S310 - loopback
                return json.load(reply)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.5)
    raise SmokeError(f"ComfyUI did not answer {url} within {timeout_s:.0f} s")


# ---------------------------------------------------------------- driver


def run_checks(checks: list[tuple[str, Callable[[], str]]]) -> int:
    failures = 0
    for label, check in checks:
        try:
            print(f"ok      {label}: {check()}", flush=True)
        except (SmokeError, ImportError, AttributeError, OSError, subprocess.SubprocessError) as e:
            failures += 1
            print(f"FAILED  {label}: {e}", flush=True)
    return failures


def image_checks(args: argparse.Namespace, versions: Mapping) -> list:
    comfyui = args.comfyui_dir
    nodes = [node["name"] for node in versions["custom_nodes"]]
    checks: list[tuple[str, Callable[[], str]]] = []
    if args.skip_gpu_build_checks:
        print("skipped torch CUDA 12.8/sm_120 and sageattention checks (--skip-gpu-build-checks)")
    else:
        checks.append(("torch", lambda: check_torch(versions)))
        if args.without_sageattention:
            print("skipped the sageattention check (--without-sageattention)")
        else:
            checks.append(("sageattention", lambda: check_sageattention(versions)))
    if args.lock:
        checks.append(("pins", lambda: check_pins(args.lock, versions)))
    checks += [
        ("opencv", check_opencv),
        ("custom nodes", lambda: check_node_dirs(comfyui, nodes)),
        ("node import", lambda: check_quick_test(comfyui, nodes)),
    ]
    if args.workflow:
        checks.append(
            (
                "workflow",
                lambda: check_workflow_nodes(comfyui, args.workflow, args.extra_model_paths),
            )
        )
    if args.models_manifest:
        checks.append(("rife", lambda: check_rife_folder(comfyui, args.models_manifest)))
    return checks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--versions", type=Path, default=DEFAULT_VERSIONS)
    commands = parser.add_subparsers(dest="command", required=True)
    wheel = commands.add_parser("wheel", help="check SageAttention wheels (builder stage)")
    wheel.add_argument("wheels", type=Path, nargs="+")
    files = commands.add_parser(
        "requirement-files", help="the kept requirement files are the fetched ones"
    )
    files.add_argument("--comfyui-dir", type=Path, default=Path("/opt/ComfyUI"))
    files.add_argument("--kept", type=Path, default=DEFAULT_KEPT)
    image = commands.add_parser("image", help="check the finished image")
    image.add_argument("--comfyui-dir", type=Path, default=Path("/opt/ComfyUI"))
    image.add_argument("--workflow", type=Path, help="API workflow whose node classes must exist")
    image.add_argument(
        "--extra-model-paths",
        type=Path,
        help="the worker's extra_model_paths.yaml, for ComfyUI started by --workflow's check",
    )
    image.add_argument(
        "--lock",
        type=Path,
        action="append",
        help="fail on installed packages that none of these locks pins (repeatable)",
    )
    image.add_argument(
        "--models-manifest", type=Path, help="models.json whose RIFE link_into the node must read"
    )
    image.add_argument(
        "--skip-gpu-build-checks",
        action="store_true",
        help="skip the torch CUDA/sm_120 and sageattention checks (CPU-only test runs)",
    )
    image.add_argument(
        "--without-sageattention",
        action="store_true",
        help="skip the sageattention check (runs outside the image, with the image's torch)",
    )
    args = parser.parse_args(argv)

    if args.command == "wheel":
        checks = [(w.name, lambda w=w: "; ".join(check_wheel(w))) for w in args.wheels]
    elif args.command == "requirement-files":
        checks = [
            ("requirement files", lambda: check_requirement_files(args.comfyui_dir, args.kept))
        ]
    else:
        checks = image_checks(args, json.loads(args.versions.read_text()))
    failures = run_checks(checks)
    if failures:
        print(f"smoke test FAILED: {failures} of {len(checks)} checks failed")
        return 1
    print(f"smoke test passed: all {len(checks)} checks")
    return 0


if __name__ == "__main__":
    sys.exit(main())
