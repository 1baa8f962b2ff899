"""The client's `--out`, checked before the job is submitted (a RunPod job is paid once it runs).

Run against RunPod's API double over real HTTP (tests/runpod_double.py), which records every
job submitted, so a refused `--out` is shown to cost no job.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.runpod_double import RunPodDouble
from tests.test_client import FACTS, completed, image, mp4, run_client, runpod  # noqa: F401
from wan_worker.client import ExitCode

pytestmark = pytest.mark.integration  # the client as a subprocess against RunPod's API double


@pytest.fixture
def cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The client's current folder, so that `--out` can be given as a user types it."""
    path = tmp_path / "cwd"
    path.mkdir()
    monkeypatch.chdir(path)
    return path


@pytest.fixture
def unwritable(cwd: Path) -> Iterator[Path]:
    """A folder this user cannot create files in: read-only, or immutable where the user is
    root (whom permissions do not stop)."""
    folder = cwd / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    immutable = False
    if os.access(folder, os.W_OK):
        chattr = shutil.which("chattr")
        if chattr:
            made = subprocess.run([chattr, "+i", str(folder)], check=False, capture_output=True)
            immutable = made.returncode == 0
        if not immutable:
            folder.chmod(0o755)
            pytest.skip("no folder this user cannot write in (root without chattr)")
    try:
        yield folder
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
        folder.chmod(0o755)


def no_job_submitted(double: RunPodDouble) -> bool:
    return double.jobs == {} and all(not s.path.endswith("/run") for s in double.seen)


def test_a_path_ending_in_a_slash_is_a_folder_created_before_the_job(
    runpod: tuple[RunPodDouble, str],  # noqa: F811
    image: Path,  # noqa: F811
    mp4: bytes,  # noqa: F811
    cwd: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    double, _ = runpod
    video = base64.b64encode(mp4).decode()
    double.add_script(completed({**FACTS, "video": video}))
    code, out, err = run_client(capsys, str(image), "p", "--out", "new-dir/")

    assert code == ExitCode.OK, err
    job_id = next(iter(double.jobs))
    assert (cwd / "new-dir").is_dir()
    assert [p.name for p in (cwd / "new-dir").iterdir()] == [f"wan-{job_id}.mp4"]
    assert (cwd / "new-dir" / f"wan-{job_id}.mp4").read_bytes() == mp4
    assert f"saved new-dir/wan-{job_id}.mp4 ({len(mp4):,} bytes" in out

    # The next job names a file in that folder.
    double.add_script(completed({**FACTS, "video": video}))
    code, out, err = run_client(capsys, str(image), "p", "--out", "new-dir/x.mp4")
    assert code == ExitCode.OK, err
    assert (cwd / "new-dir" / "x.mp4").read_bytes() == mp4
    assert sorted(p.name for p in (cwd / "new-dir").iterdir()) == [f"wan-{job_id}.mp4", "x.mp4"]


def test_the_folder_is_there_before_the_job_ends(
    runpod: tuple[RunPodDouble, str],  # noqa: F811
    image: Path,  # noqa: F811
    cwd: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A job that fails still finds the folder made: it was made before the job was sent."""
    double, _ = runpod
    double.add_script({"status": "FAILED", "error": "execution_error: boom"})
    code, _, err = run_client(capsys, str(image), "p", "--out", "a/b/c/")
    assert code == ExitCode.FAILED, err
    assert (cwd / "a" / "b" / "c").is_dir()
    assert list((cwd / "a" / "b" / "c").iterdir()) == []


@pytest.mark.parametrize(
    ("out", "says"),
    [
        ("new-dir/", "--out new-dir/: new-dir is a file, not a folder"),
        ("new-dir/x.mp4", "--out new-dir/x.mp4: new-dir is a file, not a folder"),
        (
            "new-dir/sub/x.mp4",
            "--out new-dir/sub/x.mp4: cannot create the folder new-dir/sub: "
            "new-dir is a file, not a folder",
        ),
        ("pipe", "--out pipe: exists and is not a file or a folder"),
        ("", "--out: is empty"),
    ],
)
def test_an_out_that_cannot_take_the_video_is_refused_before_the_job(
    runpod: tuple[RunPodDouble, str],  # noqa: F811
    image: Path,  # noqa: F811
    cwd: Path,
    capsys: pytest.CaptureFixture[str],
    out: str,
    says: str,
) -> None:
    double, _ = runpod
    (cwd / "new-dir").write_bytes(b"a file the user has")
    os.mkfifo(cwd / "pipe")
    code, stdout, err = run_client(capsys, str(image), "p", "--out", out)

    assert code == ExitCode.USAGE
    assert f"error: {says}\n" in err
    assert stdout == ""
    assert no_job_submitted(double)
    assert (cwd / "new-dir").read_bytes() == b"a file the user has"
    assert sorted(p.name for p in cwd.iterdir()) == ["new-dir", "pipe"]


@pytest.mark.parametrize(
    ("out", "says"),
    [
        ("ro/", "--out ro/: cannot write in the folder ro: "),
        ("ro/x.mp4", "--out ro/x.mp4: cannot write in the folder ro: "),
        ("ro/sub/", "--out ro/sub/: cannot create the folder ro/sub: "),
    ],
)
def test_a_folder_that_cannot_be_written_is_refused_before_the_job(
    runpod: tuple[RunPodDouble, str],  # noqa: F811
    image: Path,  # noqa: F811
    unwritable: Path,
    capsys: pytest.CaptureFixture[str],
    out: str,
    says: str,
) -> None:
    double, _ = runpod
    code, _, err = run_client(capsys, str(image), "p", "--out", out)
    assert code == ExitCode.USAGE
    assert f"error: {says}" in err
    assert ("Permission denied" in err) or ("Operation not permitted" in err), err
    assert no_job_submitted(double)
    assert list(unwritable.iterdir()) == []


def test_the_current_folder_is_checked_without_out(
    runpod: tuple[RunPodDouble, str],  # noqa: F811
    image: Path,  # noqa: F811
    unwritable: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    double, _ = runpod
    monkeypatch.chdir(unwritable)
    code, _, err = run_client(capsys, str(image), "p")
    assert code == ExitCode.USAGE
    assert f"error: no --out, so the current folder: cannot write in the folder {unwritable}" in err
    assert no_job_submitted(double)


def test_an_existing_file_is_replaced_only_by_a_whole_video(
    runpod: tuple[RunPodDouble, str],  # noqa: F811
    image: Path,  # noqa: F811
    mp4: bytes,  # noqa: F811
    cwd: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    double, _ = runpod
    target = cwd / "v.mp4"
    target.write_bytes(b"the old video")
    double.add_script(completed({**FACTS, "video": "not base64!"}))
    code, _, err = run_client(capsys, str(image), "p", "--out", "v.mp4")
    assert code == ExitCode.NOT_SAVED, err
    assert target.read_bytes() == b"the old video"

    double.add_script(completed({**FACTS, "video": base64.b64encode(mp4).decode()}))
    code, _, err = run_client(capsys, str(image), "p", "--out", "v.mp4")
    assert code == ExitCode.OK, err
    assert target.read_bytes() == mp4
    assert [p.name for p in cwd.iterdir()] == ["v.mp4"]
