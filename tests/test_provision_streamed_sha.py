"""A download's sha256 is computed while its ranges arrive, in any order, so it is verified without
a second read of the file; where that cannot be vouched for, the file is read once instead.
Real servers on loopback; a real provisioning process killed mid-download."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests import provision_run
from tests.provision_servers import (
    Fault,
    FlakyFileServer,
    make_blob,
    partial_of,
    running,
    url_model,
    write_manifest,
)
from tests.support import wait_for
from tests.test_provision_download import run, settings_for
from wan_worker.provision import verify
from wan_worker.provision.transfer import STATE_SUFFIX, PartialState

pytestmark = pytest.mark.integration  # a provisioning process, loopback servers

ROOT = Path(__file__).resolve().parent.parent
MIB = 1024 * 1024
SIZE = 5 * MIB + 999  # six 1 MiB ranges, the last one short


def one_model(tmp_path: Path, url: str, data: bytes, *, pin_sha: bool = True) -> Path:
    return write_manifest(
        tmp_path / "m.json", [url_model("vae", "a.safetensors", data, url, pin_sha=pin_sha)]
    )


def test_ranges_arriving_out_of_order_are_hashed_without_reading_the_file_again(tmp_path, hashes):
    cdn = tmp_path / "cdn"
    data = make_blob(cdn / "a.bin", SIZE, seed=3)
    # The first range is answered last, after the five others: the file's prefix stays empty
    # until the very end, while every other byte has landed.
    server = FlakyFileServer(cdn, Fault(hold_first_range=5))
    lines: list[str] = []
    with running(server):
        manifest = one_model(tmp_path, f"{server.url}/a.bin", data)
        report = run(settings_for(tmp_path, manifest, connections=4, chunk_bytes=MIB), lines)

    expected = [f"bytes={s}-{min(s + MIB, SIZE) - 1}" for s in range(0, SIZE, MIB)]
    assert sorted(server.ranges) == sorted(expected)  # six ranges, each asked for once
    dest = tmp_path / "models" / "vae" / "a.safetensors"
    assert dest.read_bytes() == data
    marker = verify.read_marker(tmp_path / "models", "vae/a.safetensors")
    assert marker is not None and marker.sha256_checked
    assert marker.sha256 == hashlib.sha256(data).hexdigest()
    assert hashes == [] and report.hashed == 1  # hashed once, on the way in
    assert any("sha256 computed on the way" in line for line in lines)
    assert sorted(p.name for p in dest.parent.iterdir()) == ["a.safetensors"]


def test_unpinned_download_records_the_sha256_of_its_bytes(tmp_path, hashes):
    cdn = tmp_path / "cdn"
    data = make_blob(cdn / "a.bin", SIZE, seed=4)
    with running(FlakyFileServer(cdn)) as server:
        manifest = one_model(tmp_path, f"{server.url}/a.bin", data, pin_sha=False)
        run(settings_for(tmp_path, manifest, connections=3, chunk_bytes=MIB))
    marker = verify.read_marker(tmp_path / "models", "vae/a.safetensors")
    assert marker is not None and not marker.sha256_checked  # nothing published to check
    assert marker.sha256 == hashlib.sha256(data).hexdigest()
    assert hashes == []


def test_bytes_written_twice_are_hashed_from_the_file(tmp_path, hashes):
    """A server that ignores Range: the first range lands (damaged, here), then the whole file
    is fetched again over it. The running hash saw the bytes that were overwritten, so it
    cannot vouch for the file: the file is read once, and the good bytes are accepted."""
    cdn = tmp_path / "cdn"
    data = make_blob(cdn / "a.bin", SIZE, seed=5)
    lines: list[str] = []
    fault = Fault(ignore_range=True, corrupt_gets=1)
    with running(FlakyFileServer(cdn, fault)) as server:
        manifest = one_model(tmp_path, f"{server.url}/a.bin", data)
        report = run(settings_for(tmp_path, manifest, connections=1, chunk_bytes=MIB), lines)
        assert isinstance(server, FlakyFileServer)
        asked = list(server.ranges)
    # the first range (damaged), others (answered with the whole file), then all of it at once
    assert asked[0] == f"bytes=0-{MIB - 1}" and asked[-1] == f"bytes=0-{SIZE - 1}"
    dest = tmp_path / "models" / "vae" / "a.safetensors"
    assert dest.read_bytes() == data
    [hashed] = hashes  # the download's own partial, named by its owner's token
    assert hashed.parent == dest.parent and hashed.name.startswith(".a.safetensors.")
    assert hashed.name.endswith(".partial") and report.hashed == 1
    assert any("ignores Range" in line for line in lines)
    assert any("sha256 to be read from disk" in line for line in lines)
    marker = verify.read_marker(tmp_path / "models", "vae/a.safetensors")
    assert marker is not None and marker.sha256 == hashlib.sha256(data).hexdigest()


def test_download_killed_mid_file_resumes_and_hashes_what_was_on_disk(tmp_path, hashes):
    cdn = tmp_path / "cdn"
    size = 9 * MIB + 17
    data = make_blob(cdn / "a.bin", size, seed=6)
    block = 4 * MIB  # the HTTP reader's block: whole blocks reach the disk
    folder = tmp_path / "models" / "vae"
    # One connection, one range for the whole file; the server sends a block and a bit, then
    # hangs with the connection open. The worker is killed there (SIGKILL: no clean-up runs).
    with running(FlakyFileServer(cdn, Fault(stall_after=block + 1000))) as server:
        manifest = one_model(tmp_path, f"{server.url}/a.bin", data)
        env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")}
        env.update(
            PYTHONPATH=str(ROOT),
            MODELS_MANIFEST=str(manifest),
            MODELS_ROOT=str(tmp_path / "models"),
            HF_ENDPOINT="http://127.0.0.1:9",
        )
        # The state file is written every PERSIST_EVERY_BYTES; lowered so that a few MiB count.
        code = (
            "import sys; import wan_worker.provision.transfer as t; t.PERSIST_EVERY_BYTES = 1 << 20;"
            "from tests.provision_run import run; sys.exit(run(sys.argv[1:]))"
        )
        config = provision_run.config(settings={"connections": 1, "min_free_bytes": 0})
        worker = subprocess.Popen(
            [sys.executable, "-c", code, config], env=env, stderr=subprocess.PIPE
        )

        def a_block_recorded() -> PartialState | None:
            found = list(folder.glob(f".a.safetensors.*.partial{STATE_SUFFIX}"))
            state = PartialState.load(found[0]) if found else None
            return state if state is not None and state.done.total() >= block else None

        try:
            state = wait_for(
                a_block_recorded,
                "a whole block recorded in the download's state file",
                gone=lambda: worker.poll() is not None,
                context=lambda: (
                    worker.stderr.read().decode()
                    if worker.poll() is not None and worker.stderr
                    else ""
                ),
            )
            assert state.done.ranges() == [(0, block)], state
        finally:
            worker.send_signal(signal.SIGKILL)
            worker.wait()
            assert worker.stderr is not None
            worker.stderr.close()
    assert worker.returncode == -signal.SIGKILL
    tmp = partial_of(folder / "a.safetensors")
    assert tmp.stat().st_size == size and tmp.read_bytes()[:block] == data[:block]
    assert not (tmp_path / "models" / "vae" / "a.safetensors").exists()

    with running(FlakyFileServer(cdn)) as server:
        manifest = one_model(tmp_path, f"{server.url}/a.bin", data)
        report = run(settings_for(tmp_path, manifest, connections=1, chunk_bytes=64 * MIB))
        assert isinstance(server, FlakyFileServer)
        asked = list(server.ranges)

    assert asked == [f"bytes={block}-{size - 1}"]  # only what the killed worker had not got
    assert report.fetched_bytes == size - block
    dest = tmp_path / "models" / "vae" / "a.safetensors"
    assert dest.read_bytes() == data
    # The running hash read the 4 MiB already on disk, then followed the new bytes.
    assert hashes == []
    # The killed worker's claim was taken over at once (its pid is gone), its partial adopted.
    assert sorted(p.name for p in folder.iterdir()) == ["a.safetensors"]
    marker = verify.read_marker(tmp_path / "models", "vae/a.safetensors")
    assert marker is not None and marker.sha256 == hashlib.sha256(data).hexdigest()
    assert sorted(p.name for p in dest.parent.iterdir()) == ["a.safetensors"]


@pytest.mark.parametrize("connections", [1, 8])
def test_partial_with_a_hole_in_the_middle_resumes_to_the_right_sha256(
    tmp_path, hashes, connections
):
    """A partial left by an earlier run with ranges done past a gap (several connections stop
    at different places): the running hash must wait for the gap, then cover the rest."""
    cdn = tmp_path / "cdn"
    data = make_blob(cdn / "a.bin", SIZE, seed=7)
    tmp = tmp_path / "models" / "vae" / ".a.safetensors.0123456789abcdef.partial"  # left by a run
    tmp.parent.mkdir(parents=True)
    done = [(0, MIB // 2), (2 * MIB, 3 * MIB + 5), (4 * MIB, SIZE)]
    image = bytearray(SIZE)
    for start, end in done:
        image[start:end] = data[start:end]
    tmp.write_bytes(bytes(image))
    with running(FlakyFileServer(cdn)) as server:
        manifest = one_model(tmp_path, f"{server.url}/a.bin", data)
        state = PartialState(
            size=SIZE, identity=f"sha256:{hashlib.sha256(data).hexdigest()}", source="x"
        )
        for start, end in done:
            state.done.add(start, end)
        state.save(tmp.with_name(tmp.name + STATE_SUFFIX))
        report = run(settings_for(tmp_path, manifest, connections=connections, chunk_bytes=MIB))
    assert report.fetched_bytes == SIZE - sum(e - s for s, e in done)
    assert (tmp_path / "models" / "vae" / "a.safetensors").read_bytes() == data
    assert hashes == []
    marker = verify.read_marker(tmp_path / "models", "vae/a.safetensors")
    assert marker is not None and marker.sha256 == hashlib.sha256(data).hexdigest()
