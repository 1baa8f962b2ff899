"""The client against a RunPod-shaped API over real HTTP (tests/runpod_double.py)."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.runpod_double import RunPodDouble, progress
from tests.support import free_port, make_png, serve
from wan_worker import errors
from wan_worker.client import ExitCode, main
from wan_worker.client.errors import ApiError, ClientError
from wan_worker.client.outcome import failure

pytestmark = pytest.mark.integration  # the client against loopback servers, and as a subprocess

PROJECT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def mp4(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A real, small H.264 MP4."""
    path = tmp_path_factory.mktemp("mp4") / "clip.mp4"
    subprocess.run(
        [
            "ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc=size=64x48:rate=24",
            "-frames:v", "12", "-c:v", "libx264", "-pix_fmt", "yuv420p", str(path),
        ],
        check=True,
    )  # fmt: skip
    return path.read_bytes()


@pytest.fixture
def runpod(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[RunPodDouble, str]]:
    double = RunPodDouble()
    with serve(double.app()) as url:
        monkeypatch.setenv("RUNPOD_ENDPOINT_BASE_URL", f"{url}/v2")
        monkeypatch.setenv("RUNPOD_ENDPOINT_ID", double.endpoint_id)
        monkeypatch.setenv("RUNPOD_API_KEY", double.api_key)
        yield double, url


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "start.png"
    path.write_bytes(make_png(96, 64))
    return path


def completed(output: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"status": "COMPLETED", "output": output, **extra}


FACTS = {
    "format": "mp4",
    "seed": 1234,
    "width": 720,
    "height": 1280,
    "frames": 161,
    "fps": 24.0,
    "attention": "sage",
    "fp16_accumulation": True,
    "attention_fallback": False,
    "attention_fallback_reason": None,
    "timings": {"inference_s": 61.2, "total_s": 61.8},
}


def run_client(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["--poll-interval", "0", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_completed_job_saves_the_mp4_shows_progress_and_prints_unknown_fields(
    runpod, image, mp4, tmp_path, capsys
):
    double, _ = runpod
    double.add_script(
        {"status": "IN_QUEUE"},
        {"status": "IN_PROGRESS"},
        progress("load_models", 0, 0, 0),
        progress("sample_high_noise", 1, 3, 27),
        progress("sample_high_noise", 2, 3, 40),
        progress("sample_low_noise", 3, 3, 91),
        progress("encode_mp4", 0, 0, 99),
        completed(
            {**FACTS, "video": base64.b64encode(mp4).decode(), "bytes": len(mp4),
             "fitted": True, "worker_build": "2.2.1"},
            delayTime=2500, executionTime=61900,
        ),
    )  # fmt: skip
    out_path = tmp_path / "videos" / "wave.mp4"
    code, out, err = run_client(
        capsys, str(image), "waves roll in", "--seed", "1234", "--width", "720",
        "--height", "1280", "--negative-prompt", "blur", "--out", str(out_path),
    )  # fmt: skip

    assert code == ExitCode.OK, err
    assert out_path.read_bytes() == mp4
    assert list(out_path.parent.iterdir()) == [out_path]  # no partial file left beside it
    umask = os.umask(0)
    os.umask(umask)
    assert out_path.stat().st_mode & 0o777 == 0o666 & ~umask
    job = next(iter(double.jobs.values()))
    assert job.input == {
        "start_image": base64.b64encode(image.read_bytes()).decode(),
        "prompt": "waves roll in",
        "negative_prompt": "blur",
        "seed": 1234,
        "width": 720,
        "height": 1280,
    }
    assert f"job {job.id} submitted to RunPod endpoint wan-ep-1" in err
    # Not a terminal (tests/test_client_progress.py has one): one line per stage, no bar.
    assert [re.sub(r"^(\d+:)?\d\d:\d\d ", "", line) for line in err.splitlines()[1:]] == [
        "waiting for a worker", "running", "load_models 0%", "sample_high_noise 27%",
        "sample_low_noise 91%", "encode_mp4 99%", "done",
    ]  # fmt: skip
    assert out.splitlines() == [
        f"saved {out_path} ({len(mp4):,} bytes, from inline base64)",
        "seed 1234, 720x1280, 161 frames at 24 fps, attention sage with fp16 accumulation",
        "time: worker 61.8 s, inference 61.2 s, queue 2.5 s, execution 61.9 s",
        "fitted: true",  # fields the client does not know, as they come
        "worker_build: 2.2.1",
    ]
    assert double.api_key not in out + err
    assert {s.authorization for s in double.seen} == {f"Bearer {double.api_key}"}


def test_video_url_is_downloaded_without_the_api_key(runpod, image, mp4, tmp_path, capsys):
    double, url = runpod
    double.files["abc.mp4"] = mp4
    double.add_script(
        progress("vae_decode", 0, 0, 93),
        completed(
            {**FACTS, "video_url": f"{url}/files/abc.mp4?X-Amz-Signature=deadbeef",
             "video_key": "wan-i2v/job-1/abc.mp4", "url_expires_in_s": 86400},
        ),
    )  # fmt: skip
    code, out, err = run_client(capsys, str(image), "p", "--out", str(tmp_path))

    assert code == ExitCode.OK, err
    job_id = next(iter(double.jobs))
    saved = tmp_path / f"wan-{job_id}.mp4"
    assert saved.read_bytes() == mp4
    assert "from video_url" in out
    assert "stored: wan-i2v/job-1/abc.mp4 (URL valid 86400 s)" in out
    downloads = [s for s in double.seen if s.path.startswith("/files/")]
    assert len(downloads) == 1 and downloads[0].authorization is None


def test_image_urls_are_sent_as_given(runpod, mp4, tmp_path, capsys):
    double, _ = runpod
    double.add_script(completed({**FACTS, "video": base64.b64encode(mp4).decode()}))
    code, _, err = run_client(
        capsys, "https://example.com/a.jpg", "p", "--out", str(tmp_path / "a.mp4")
    )
    assert code == ExitCode.OK, err
    assert next(iter(double.jobs.values())).input == {
        "start_image": "https://example.com/a.jpg",
        "prompt": "p",
    }


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        pytest.param(
            {"error": "invalid_input: seed: must be an integer, got a string (\"x\").",
             "output": {"error_code": "invalid_input", "field": "seed", "fields": ["seed"]}},
            ["FAILED: invalid_input: seed: must be an integer", "  field: seed",
             '  fields: ["seed"]'],
            id="code-in-error-and-output",
        ),
        pytest.param(
            {"error": "seed: must be an integer.", "output": {"error_code": "invalid_input"}},
            ["FAILED: invalid_input: seed: must be an integer."],
            id="code-in-output-only",
        ),
        pytest.param(
            {"error": "execution_error: node 12 (KSamplerAdvanced) failed: RuntimeError: x"},
            ["FAILED: execution_error: node 12 (KSamplerAdvanced) failed: RuntimeError: x"],
            id="code-in-error-only",
        ),
        pytest.param(
            {"error": json.dumps({"error_type": "<class 'ValueError'>",
                                  "error_message": "boom", "error_traceback": "..."})},
            ["FAILED: ValueError: boom"],
            id="sdk-exception-report",
        ),
    ],
)  # fmt: skip
def test_failed_job_prints_code_message_and_fields(
    runpod, image, tmp_path, capsys, answer, expected
):
    double, _ = runpod
    double.add_script(progress("text_encode", 0, 0, 10), {"status": "FAILED", **answer})
    code, out, err = run_client(capsys, str(image), "p", "--out", str(tmp_path / "x.mp4"))

    assert code == ExitCode.FAILED
    for line in expected:
        assert line in err, (line, err)
    assert out == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["start.png"]


@pytest.mark.parametrize(
    ("status", "exit_code", "says"),
    [
        ("TIMED_OUT", ExitCode.TIMED_OUT, "execution timeout"),
        ("CANCELLED", ExitCode.CANCELLED, "CANCELLED"),
    ],
)
def test_jobs_ended_by_runpod_exit_with_their_own_codes(
    runpod, image, capsys, status, exit_code, says
):
    double, _ = runpod
    double.add_script(progress("sample_low_noise", 1, 3, 70), {"status": status})
    code, _, err = run_client(capsys, str(image), "p")
    assert code == exit_code
    assert f"job {next(iter(double.jobs))} {status}" in err
    assert says in err
    assert double.cancels() == []


def test_timeout_gives_up_and_cancels_the_job(runpod, image, capsys):
    double, _ = runpod
    double.add_script(progress("sample_high_noise", 1, 3, 20))  # forever
    code, _, err = run_client(capsys, str(image), "p", "--timeout", "0.3")
    job_id = next(iter(double.jobs))
    assert code == ExitCode.GAVE_UP
    assert "no result after" in err and "--timeout 0.3" in err
    assert f"cancelled job {job_id} (status CANCELLED)" in err
    assert double.cancels() == [job_id]


def test_ctrl_c_cancels_the_job(runpod, image, tmp_path):
    double, _ = runpod
    double.add_script(progress("sample_high_noise", 1, 3, 20))  # forever
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    # A shell that runs the suite in the background ignores SIGINT, and its children inherit
    # that, so Python would install no handler; a user's terminal delivers it.
    run_client = (
        "import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
        "sys.argv[0] = 'wan-i2v'; runpy.run_module('wan_worker.client', run_name='__main__')"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", run_client, str(image), "p", "--poll-interval", "0.05"],
        cwd=workdir,
        env={**os.environ, "PYTHONPATH": str(PROJECT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert double.polled.wait(timeout=30), "the client never polled"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    job_id = next(iter(double.jobs))
    assert proc.returncode == ExitCode.INTERRUPTED, err
    assert "interrupted" in err and f"cancelled job {job_id}" in err
    assert double.cancels() == [job_id]
    assert list(workdir.iterdir()) == []


def test_a_passing_upstream_error_on_status_is_retried(runpod, image, mp4, tmp_path, capsys):
    double, _ = runpod
    double.add_script(
        {"http": 503},
        progress("interpolate", 0, 0, 97),
        completed({**FACTS, "video": base64.b64encode(mp4).decode()}),
    )
    code, _, err = run_client(capsys, str(image), "p", "--out", str(tmp_path / "v.mp4"))
    assert code == ExitCode.OK, err
    assert (tmp_path / "v.mp4").read_bytes() == mp4
    assert "interpolate" in err


def test_a_wrong_api_key_is_an_http_error_and_never_printed(runpod, image, capsys, monkeypatch):
    double, _ = runpod
    monkeypatch.setenv("RUNPOD_API_KEY", "rpa_WRONG_KEY_987")
    code, out, err = run_client(capsys, str(image), "p")
    assert code == ExitCode.HTTP_ERROR
    assert "POST /run to RunPod endpoint wan-ep-1: HTTP 401" in err
    assert "check RUNPOD_API_KEY" in err
    assert "rpa_WRONG_KEY_987" not in out + err
    assert double.jobs == {}


def test_an_unknown_endpoint_and_a_vanished_job_are_http_errors(runpod, image, capsys):
    double, _ = runpod
    code, _, err = run_client(capsys, str(image), "p", "--endpoint", "no-such-endpoint")
    assert code == ExitCode.HTTP_ERROR
    assert "POST /run" in err and "HTTP 404" in err and "check the endpoint id" in err

    double.add_script({"status": "IN_QUEUE"}, {"http": 404})
    code, _, err = run_client(capsys, str(image), "p")
    assert code == ExitCode.HTTP_ERROR
    assert "GET /status" in err and "HTTP 404" in err and "the job is gone" in err


def test_an_unreachable_endpoint_exits_7(image, capsys, monkeypatch):
    monkeypatch.setenv("RUNPOD_ENDPOINT_BASE_URL", f"http://127.0.0.1:{free_port()}/v2")
    monkeypatch.setenv("RUNPOD_ENDPOINT_ID", "ep")
    monkeypatch.setenv("RUNPOD_API_KEY", "rpa_X")
    code, _, err = run_client(capsys, str(image), "p")
    assert code == ExitCode.UNREACHABLE
    assert "POST /run to RunPod endpoint ep: no answer: Connection refused" in err


@pytest.mark.parametrize(
    ("output", "says"),
    [
        ({"video": "not base64!"}, "not valid base64"),
        ({"video_url": "{url}/files/missing.mp4?sig=1"}, "failed: HTTP 404"),
        ({"seed": 1, "upload_error": "bucket said no"}, "neither video nor video_url"),
    ],
)
def test_a_completed_job_whose_video_cannot_be_saved_exits_8(
    runpod, image, tmp_path, capsys, output, says
):
    double, url = runpod
    output = {k: v.replace("{url}", url) if isinstance(v, str) else v for k, v in output.items()}
    double.add_script(completed(output))
    out_dir = tmp_path / "out"
    code, _, err = run_client(capsys, str(image), "p", "--out", str(out_dir / "v.mp4"))
    assert code == ExitCode.NOT_SAVED
    assert says in err
    assert not out_dir.exists() or list(out_dir.iterdir()) == []


def test_usage_errors_exit_2_before_any_request(runpod, image, tmp_path, capsys, monkeypatch):
    double, _ = runpod
    assert main([str(tmp_path / "missing.png"), "p"]) == ExitCode.USAGE
    assert "image: cannot read" in capsys.readouterr().err

    big = tmp_path / "big.png"
    big.write_bytes(os.urandom(7_600_000))  # 10.1 MB as base64
    assert main([str(big), "p"]) == ExitCode.USAGE
    assert "over RunPod's 10 MB limit for /run" in capsys.readouterr().err

    monkeypatch.delenv("RUNPOD_API_KEY")
    assert main([str(image), "p"]) == ExitCode.USAGE
    err = capsys.readouterr().err
    assert "set RUNPOD_API_KEY for a RunPod endpoint, or pass --url" in err

    for bad in (["--timeout", "nan"], ["--timeout", "-1"], ["--seed", "x"]):
        with pytest.raises(SystemExit) as exit_info:
            main([str(image), "p", *bad])
        assert exit_info.value.code == ExitCode.USAGE
    assert double.jobs == {}
    assert all(not s.path.endswith("/run") for s in double.seen)


def test_every_worker_error_code_is_read_from_the_error_text():
    """Every code a job result can carry (the job errors of wan_worker.errors, and
    internal_error) is taken off the front of `error` when the structured fields are lost, as
    through the SDK's local API; a field name in the same place is not a code."""
    classes = [
        value
        for value in vars(errors).values()
        if isinstance(value, type)
        and issubclass(value, errors.WorkerError)
        and value is not errors.WorkerError
    ]
    worker_codes = {cls.code for cls in classes} | {"internal_error"}
    assert len(worker_codes) >= 10
    for code in worker_codes:
        read = failure({"status": "FAILED", "error": f"{code}: what went wrong. What to do."})
        assert (read.code, read.message) == (code, "what went wrong. What to do.")
    field_first = failure({"status": "FAILED", "error": "seed: must be an integer"})
    assert (field_first.code, field_first.message) == (None, "seed: must be an integer")


def test_every_client_error_exits_with_a_code_that_the_client_docs_list():
    table = (PROJECT / "docs" / "client.md").read_text().split("| code | meaning |", 1)[1]
    listed = {int(code) for code in re.findall(r"^\| (\d+) \|", table.split("\n\n")[0], re.M)}
    assert listed == {int(code) for code in ExitCode}

    def tree(cls: type[ClientError]) -> list[type[ClientError]]:
        return [cls, *(c for sub in cls.__subclasses__() for c in tree(sub))]

    raised = [cls for cls in tree(ClientError) if cls not in (ClientError, ApiError)]
    assert {cls.__name__: int(cls.exit_code) for cls in raised} == {
        "UsageError": 2,
        "ApiHttpError": 6,
        "ApiUnreachable": 7,
        "ApiNoAnswerInTime": 7,
        "ResultError": 8,
    }


def test_pyproject_declares_the_console_script_and_the_client_extra():
    project = tomllib.loads((PROJECT / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["wan-i2v"] == "wan_worker.client:main"
    pins = {
        line.strip()
        for line in (PROJECT / "requirements-dev.txt").read_text().splitlines()
        + (PROJECT / "requirements.txt").read_text().splitlines()
    }
    assert set(project["optional-dependencies"]["client"]) <= pins
    assert {r.split("==")[0] for r in project["optional-dependencies"]["client"]} == {
        "requests",
        "tqdm",
    }
