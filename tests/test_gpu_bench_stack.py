"""The GPU benchmark's stack options, on a CPU: the launcher that runs ComfyUI as the image's
torch 2.10 cu128 makes it run (comfy-kitchen's cuda backend disabled, comfy/ops.py's conv3d
workaround on), the Triton options, and each job's MP4 kept for the output check.

The launcher runs here for real, in a subprocess, on a stand-in ComfyUI (main.py and a comfy
package with model_management and ops) and a stand-in comfy_kitchen package (the real ones need
torch): what it must get right is when the backend is disabled and the workaround set (as
ComfyUI imports comfy_kitchen and comfy.ops, not before) and how main.py is run (argv, sys.path,
__name__), which does not depend on torch.
"""

from __future__ import annotations

import argparse
import base64
import importlib.util
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

from scripts.gpu_bench import BenchError, analysis, comfyui, jobs, report
from tests.fake_comfy_stack import make_fake_comfy

pytestmark = pytest.mark.integration  # the launcher and a stand-in ComfyUI as processes

ROOT = Path(__file__).resolve().parent.parent
LAUNCHER = ROOT / "scripts" / "gpu_bench" / "comfy_launch.py"


@pytest.fixture
def fake_comfy(tmp_path: Path) -> tuple[Path, Path]:
    """(a ComfyUI folder with the stand-in main.py and comfy package, a site folder with
    comfy_kitchen)."""
    return make_fake_comfy(tmp_path)


def load_bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_gpu", ROOT / "scripts" / "bench_gpu.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def run_launcher(
    comfy: Path, site: Path, *args: str, device: str = "nvidia"
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-u", str(LAUNCHER), *args],
        cwd=comfy,
        env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin", "FAKE_DEVICE": device},
        capture_output=True,
        text=True,
        check=False,
    )


def test_launcher_disables_the_backend_as_comfyui_imports_comfy_kitchen(fake_comfy):
    comfy, site = fake_comfy

    done = run_launcher(
        comfy, site, *comfyui.STACKS["image"].launcher_flags(), "--", "main.py", "--port", "9"
    )

    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    # Not imported before ComfyUI's own import (torch and the allocator set-up come first there)
    assert seen["imported_before_main"] is False
    assert seen["disabled"] == ["cuda", "triton"]
    # ComfyUI's 3D convolutions take the image's path
    assert seen["conv3d"] == "cudnn_convolution"
    # the module stays what its own loader made: source, resources, package
    assert seen["is_package"] and seen["resource"] and seen["source"]
    # main.py runs as `python main.py --port 9` would run it
    assert seen["argv"] == [str(comfy / "main.py"), "--port", "9"]
    assert seen["path0"] == str(comfy)
    assert seen["name"] == "__main__"
    assert seen["file"] == str(comfy / "main.py")
    # one line says so, before ComfyUI's own backend list, which shows it
    lines = done.stderr.splitlines()
    tagged = [i for i, line in enumerate(lines) if line.startswith("comfy_launch:")]
    assert len(tagged) == 2
    assert "backend(s) cuda disabled" in lines[tagged[0]]
    assert tagged[0] < min(i for i, line in enumerate(lines) if "Found comfy_kitchen" in line)
    assert lines[tagged[1]].startswith("comfy_launch: conv3d workaround on, as ComfyUI sets it")
    assert comfyui.conv3d_state(done.stderr) == "on"
    assert comfyui.kitchen_backends(done.stderr) == {
        "cuda": "disabled",
        "eager": "on",
        "triton": "disabled",
    }
    assert comfyui.stack_problem("image", done.stderr) is None


def test_launcher_without_backends_changes_nothing(fake_comfy):
    comfy, site = fake_comfy

    done = run_launcher(comfy, site, "--", "main.py")

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["disabled"] == ["triton"]
    assert json.loads(done.stdout)["conv3d"] == "conv3d"
    assert "comfy_launch:" not in done.stderr
    assert comfyui.conv3d_state(done.stderr) == ""
    assert comfyui.kitchen_backends(done.stderr)["cuda"] == "on"
    assert comfyui.stack_problem("host", done.stderr) is None
    assert "launcher never disabled" in str(comfyui.stack_problem("image", done.stderr))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["main.py"], "no '--'"),
        (["--disable-ck-backend", "--", "main.py"], "unexpected"),
        (["--", "missing.py"], "no ComfyUI main.py"),
        (["--"], "no main.py after"),
    ],
)
def test_launcher_refuses_a_wrong_command_line(fake_comfy, args, message):
    comfy, site = fake_comfy
    done = run_launcher(comfy, site, *args)
    assert done.returncode != 0
    assert message in done.stderr


def test_a_log_whose_backend_is_on_is_not_the_image_stack():
    log = (
        "comfy_launch: comfy-kitchen backend(s) cuda disabled at import\n"
        "Found comfy_kitchen backend cuda: {'available': True, 'disabled': False, "
        "'unavailable_reason': None, 'capabilities': ['apply_rope', 'scaled_mm_nvfp4']}\n"
        "Found comfy_kitchen backend triton: {'available': False, 'disabled': True, "
        "'unavailable_reason': 'no triton', 'capabilities': []}\n"
    )
    assert comfyui.kitchen_backends(log) == {"cuda": "on", "triton": "disabled"}
    assert comfyui.stack_problem("image", log) == (
        "comfy-kitchen's 'cuda' backend is on in ComfyUI's log"
    )


def test_the_conv3d_workaround_stays_off_where_comfyui_would_leave_it_off(fake_comfy):
    """Not an NVIDIA device (a CPU dry run): ComfyUI's own check starts with is_nvidia(), so
    the launcher leaves the workaround off and says so; the stack is still the image's."""
    comfy, site = fake_comfy

    done = run_launcher(
        comfy, site, *comfyui.STACKS["image"].launcher_flags(), "--", "main.py", device="cpu"
    )

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["conv3d"] == "conv3d"
    assert "comfy_launch: conv3d workaround left off: not an NVIDIA device" in done.stderr
    assert comfyui.conv3d_state(done.stderr) == "left off"
    assert comfyui.stack_problem("image", done.stderr) is None


def test_a_comfyui_without_the_workaround_is_told_apart(fake_comfy):
    comfy, site = fake_comfy
    (comfy / "comfy" / "ops.py").write_text("def conv3d_path():\n    return 'conv3d'\n")

    done = run_launcher(comfy, site, "--conv3d-workaround", "--", "main.py")

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["conv3d"] == "conv3d"
    assert "conv3d workaround not set: comfy.ops has no NVIDIA_MEMORY_CONV_BUG_WORKAROUND" in (
        done.stderr
    )
    assert comfyui.conv3d_state(done.stderr) == "not set"


def test_a_log_without_the_workaround_line_is_not_the_image_stack():
    log = (
        "comfy_launch: comfy-kitchen backend(s) cuda disabled at import\n"
        "Found comfy_kitchen backend cuda: {'available': True, 'disabled': True}\n"
    )
    assert comfyui.stack_problem("host", log) is None
    assert comfyui.stack_problem("image", log) == (
        "the launcher never set ComfyUI's conv3d workaround (comfy.ops was not imported)"
    )
    assert comfyui.stack_problem("image", log + "comfy_launch: conv3d workaround on, as\n") is None


def test_stack_commands():
    args = ["--listen", "127.0.0.1"]
    assert comfyui.launch_command("py", "host", args) == ["py", "-u", "main.py", *args]
    assert comfyui.launch_command("py", "image", args) == [
        "py", "-u", str(LAUNCHER), "--disable-ck-backend", "cuda", "--conv3d-workaround",
        "--", "main.py", *args,
    ]  # fmt: skip
    with pytest.raises(ValueError, match="unknown stack"):
        comfyui.launch_command("py", "cu128", args)


def test_comfy_server_starts_comfyui_through_the_launcher_with_its_triton_cache(
    fake_comfy, tmp_path
):
    comfy, site = fake_comfy
    server = comfyui.ComfyServer(
        sys.executable,
        comfy,
        8199,
        ["--enable-triton-backend"],
        tmp_path / "models",
        tmp_path / "comfyui.log",
        tmp_path / "comfyui.pid",
        stack="image",
        env={"PYTHONPATH": str(site), "TRITON_CACHE_DIR": str(tmp_path / "tc")},
    )
    server.start()
    assert server.proc is not None
    assert server.proc.wait(timeout=60) == 0
    server.stop()

    log = (tmp_path / "comfyui.log").read_text()
    seen = json.loads(next(line for line in log.splitlines() if line.startswith("{")))
    assert seen["disabled"] == ["cuda", "triton"]
    assert seen["argv"][1:3] == ["--listen", "127.0.0.1"]
    assert seen["argv"][-1] == "--enable-triton-backend"
    assert seen["triton_cache"] == str(tmp_path / "tc")
    assert seen["models_root"] == str(tmp_path / "models")
    assert not (tmp_path / "comfyui.pid").exists()


def test_bench_options_default_to_the_image_stack(tmp_path):
    bench = load_bench()
    (tmp_path / "main.py").write_text("")
    common = ["--out", str(tmp_path / "out"), "--comfyui-dir", str(tmp_path),
              "--models-root", str(tmp_path)]  # fmt: skip

    args = bench.parse_args(common)
    assert args.stack == "image"
    assert args.triton_backend is False and args.triton_cache_dir is None
    assert args.videos == (tmp_path / "out" / "videos").resolve()
    assert jobs.server_flags(args) == ["--preview-method", "none", "--disable-auto-launch"]
    assert jobs.server_env(args) == {}

    args = bench.parse_args([*common, "--stack", "host", "--triton-backend",
                             "--triton-cache-dir", str(tmp_path / "tc"),
                             "--videos", str(tmp_path / "v"), "--fast", "autotune"])  # fmt: skip
    assert args.stack == "host"
    assert jobs.server_flags(args) == [
        "--preview-method", "none", "--disable-auto-launch", "--fast", "autotune",
        "--enable-triton-backend",
    ]  # fmt: skip
    assert jobs.server_env(args) == {"TRITON_CACHE_DIR": str((tmp_path / "tc").resolve())}
    assert args.videos == (tmp_path / "v").resolve()

    # the flag given in --extra-comfyui-args as well is not given twice
    args = bench.parse_args([*common, "--triton-backend",
                             "--extra-comfyui-args=--enable-triton-backend"])  # fmt: skip
    assert jobs.server_flags(args).count("--enable-triton-backend") == 1

    with pytest.raises(SystemExit):
        bench.parse_args([*common, "--stack", "cu128"])
    # files already written (the GPU kit's): none are checked or written
    assert bench.parse_args([*common, "--weights", "none"]).weights == "none"


def test_triton_cache_files_are_counted(tmp_path):
    assert jobs.cache_files(None) is None
    assert jobs.cache_files(tmp_path / "none") == 0
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "k.cubin").write_bytes(b"x")
    (tmp_path / "a" / "b" / "k.json").write_bytes(b"{}")
    assert jobs.cache_files(tmp_path) == 2


def test_each_job_keeps_its_mp4_under_a_name_that_pairs_across_runs(tmp_path, monkeypatch):
    import wan_worker.handler

    video = b"\x00\x00\x00\x18ftypisom" + bytes(range(256))
    result = {
        "video": base64.b64encode(video).decode(),
        "bytes": len(video),
        "frames": 161,
        "attention": "sage",
        "timings": {"total_s": 3.0, "inference_s": 2.0, "stages": {"encode_mp4": 1.0}},
    }
    monkeypatch.setattr(wan_worker.handler, "handle", lambda job, worker: result)
    path = tmp_path / "videos" / jobs.video_name("720x1280", "sage", 2)
    record = analysis.JobRecord("720x1280", "sage", "warm", seed=jobs.seed_for(2))

    jobs.run_job(None, jobs.ProgressLog(), record, {"id": "j"}, None, None, path)

    assert path.read_bytes() == video
    assert record.video == "720x1280-sage-job2.mp4"
    assert record.ok and record.seed == 1002 and record.video_bytes == len(video)
    # without a folder nothing is written
    other = analysis.JobRecord("720x1280", "sage", "warm")
    jobs.run_job(None, jobs.ProgressLog(), other, {"id": "j"}, None, None)
    assert other.video == "" and sorted(p.name for p in path.parent.iterdir()) == [path.name]


def bench_args(comfy: Path, tmp_path: Path, **overrides: object) -> argparse.Namespace:
    """bench_gpu's arguments for a stand-in ComfyUI at `comfy`: host stack, two jobs."""
    values: dict[str, object] = {
        "python": sys.executable, "comfyui_dir": comfy, "port": 8199, "comfyui_args": "",
        "extra_comfyui_args": "", "fast": [], "models_root": tmp_path, "out": tmp_path,
        "stack": "host", "ready_timeout": 5.0, "jobs": 2, "videos": tmp_path / "videos",
    }  # fmt: skip
    return argparse.Namespace(**{**values, **overrides})


def handler_result(video: bytes) -> dict:
    """What the worker's handler returns for a job whose MP4 is `video` (3 s, sdpa)."""
    return {
        "video": base64.b64encode(video).decode(), "bytes": len(video), "frames": 161,
        "attention": "sdpa",
        "timings": {"total_s": 3.0, "inference_s": 2.0, "stages": {"encode_mp4": 1.0}},
    }  # fmt: skip


def exited(proc: subprocess.Popen) -> None:
    proc.wait(timeout=60)


def stand_in_worker(ready: Callable[[subprocess.Popen], None]) -> type:
    """A make_worker stand-in whose client is ready once `ready(ComfyUI's process)` returns."""

    class StandIn:
        def __init__(self, server, *args, **kwargs):
            self.server = server
            self.client = self

        def wait_ready(self, timeout):
            ready(self.server.proc)

    return StandIn


def test_a_bench_error_names_the_stack_when_the_log_disagrees(tmp_path, monkeypatch):
    """run_config stops at once when ComfyUI's log shows the wrong stack, before any job."""
    comfy = tmp_path / "ComfyUI"
    comfy.mkdir()
    # A ComfyUI that logs the cuda backend on (and exits: "ready" below waits for that).
    (comfy / "main.py").write_text(
        "import sys\n"
        "print(\"Found comfy_kitchen backend cuda: {'available': True, 'disabled': False}\","
        " file=sys.stderr)\n"
    )
    args = bench_args(comfy, tmp_path, stack="image", jobs=1, triton_cache_dir=None, videos=None)

    # its log is complete once it has exited
    monkeypatch.setattr(jobs, "make_worker", stand_in_worker(exited))
    with pytest.raises(BenchError, match="not running on the image stack: the launcher never"):
        jobs.run_config(args, (64, 64), "sdpa", tmp_path / "wf.json", None)
    assert not (tmp_path / "comfyui.pid").exists()  # the server was stopped


def test_run_config_keeps_each_job_as_it_ends_with_its_seed_video_and_triton_cache(
    tmp_path, monkeypatch
):
    """A configuration's jobs on a stand-in ComfyUI (host stack) with a stand-in handler: every
    job is handed to `after_job` as it ends, keeps its MP4 under its pairing name, and the
    Triton cache is counted before and after."""
    import wan_worker.handler

    comfy = tmp_path / "ComfyUI"
    comfy.mkdir()
    (comfy / "main.py").write_text("print('ComfyUI stand-in')\n")
    cache = tmp_path / "tc"
    args = bench_args(comfy, tmp_path, triton_cache_dir=cache)
    seeds: list[int] = []

    def handle(job, worker):
        seeds.append(job["input"]["seed"])
        cache.mkdir(exist_ok=True)  # as Triton writes a kernel during the first job
        (cache / f"kernel{len(seeds)}.cubin").write_bytes(b"k")
        video = f"video of seed {job['input']['seed']}".encode()
        return handler_result(video)

    monkeypatch.setattr(jobs, "make_worker", stand_in_worker(exited))
    monkeypatch.setattr(wan_worker.handler, "handle", handle)
    seen: list[list[str]] = []

    record = jobs.run_config(
        args, (64, 64), "sdpa", tmp_path / "wf.json", None,
        lambda r: seen.append([j.video for j in r.jobs]),
    )  # fmt: skip

    assert seen == [["64x64-sdpa-job0.mp4"], ["64x64-sdpa-job0.mp4", "64x64-sdpa-job1.mp4"]]
    assert seeds == [1000, 1001] and [j.seed for j in record.jobs] == [1000, 1001]
    assert [j.kind for j in record.jobs] == ["cold", "warm"]
    assert (tmp_path / "videos" / "64x64-sdpa-job1.mp4").read_bytes() == b"video of seed 1001"
    assert record.triton_cache == {"dir": str(cache), "files_before": 0, "files_after": 2}
    assert record.stack == "host" and record.comfyui_command[2] == "main.py"


def test_one_server_runs_each_size_in_turn_and_marks_the_size_change(tmp_path, monkeypatch):
    """--one-server: one stand-in ComfyUI, two sizes; a record per size, the first job at the
    second size is "new-size", and each record counts the Triton cache over its own jobs."""
    import wan_worker.handler

    comfy = tmp_path / "ComfyUI"
    comfy.mkdir()
    # A stand-in that counts its starts and stays up until it is stopped, as ComfyUI does.
    (comfy / "main.py").write_text(
        "import pathlib, signal\n"
        "starts = pathlib.Path(__file__).with_name('starts')\n"
        "starts.write_text(starts.read_text() + 'x' if starts.exists() else 'x')\n"
        "signal.pause()\n"
    )
    cache = tmp_path / "tc"
    args = bench_args(comfy, tmp_path, triton_cache_dir=cache)
    sizes_seen: list[tuple[int, int]] = []

    def handle(job, worker):
        size = (job["input"]["width"], job["input"]["height"])
        if size not in sizes_seen:  # a kernel compiled for each new shape
            cache.mkdir(exist_ok=True)
            (cache / f"graph{len(sizes_seen)}.py").write_text("g")
        sizes_seen.append(size)
        video = f"{size} seed {job['input']['seed']}".encode()
        return handler_result(video)

    def started(proc: subprocess.Popen) -> None:
        deadline = time.monotonic() + 60
        while not (comfy / "starts").exists():  # its one line of "start-up"
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)

    monkeypatch.setattr(jobs, "make_worker", stand_in_worker(started))
    monkeypatch.setattr(wan_worker.handler, "handle", handle)
    seen: list[list[str]] = []

    records = jobs.run_server(
        args, [(64, 64), (32, 48)], "sdpa", tmp_path / "wf.json", None,
        lambda rs: seen.append([r.size for r in rs]),
    )  # fmt: skip

    assert (comfy / "starts").read_text() == "x"  # one ComfyUI for both sizes
    assert sizes_seen == [(64, 64), (64, 64), (32, 48), (32, 48)]
    assert [r.size for r in records] == ["64x64", "32x48"]
    assert [j.kind for j in records[0].jobs] == ["cold", "warm"]
    assert [j.kind for j in records[1].jobs] == ["new-size", "warm"]
    assert records[0].after_sizes == [] and records[1].after_sizes == ["64x64"]
    assert records[0].log == records[1].log == "comfyui-64x64+32x48-sdpa.log"
    assert records[0].triton_cache == {"dir": str(cache), "files_before": 0, "files_after": 1}
    assert records[1].triton_cache == {"dir": str(cache), "files_before": 1, "files_after": 2}
    assert seen == [["64x64"], ["64x64"], ["64x64", "32x48"], ["64x64", "32x48"]]
    assert (tmp_path / "videos" / "32x48-sdpa-job0.mp4").read_bytes() == b"(32, 48) seed 1000"
    table = report.markdown(records, report.verdicts(records, 0))
    assert "| 32x48 sdpa (after 64x64) |" in table
    assert "Triton 1 / 2" in table
