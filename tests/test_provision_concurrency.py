"""Many workers, one models root: real provisioning processes (`python -m wan_worker.provision`,
through tests/provision_run.py for shorter claim timings) started at once against a throttled HTTP server and against moto's S3 server (R2 style, behind a throttling
proxy), some SIGKILLed in the middle of a download; and the claim protocol's takeover and wait
bound, in one process.

Every wait here is on state the processes leave on disk (a claim file, the bytes a partial's
state file records) or on their exit; the servers are throttled only so that a download lasts
long enough to be interrupted.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypeVar

import boto3
import pytest
from moto.server import ThreadedMotoServer

from tests import provision_run, support
from tests.provision_servers import (
    Fault,
    FlakyFileServer,
    S3Proxy,
    make_blob,
    running,
    write_manifest,
)
from tests.support import closed_port, tcp_ports
from tests.test_provision_download import settings_for
from wan_worker.provision import claims, verify
from wan_worker.provision.claims import Claim, Heartbeat, ModelFilePaths, Owner
from wan_worker.provision.provisioner import Provisioner
from wan_worker.provision.transfer import PartialState, state_path

pytestmark = pytest.mark.integration  # provisioning processes, loopback and moto servers

ROOT = Path(__file__).resolve().parent.parent
MIB = 1024 * 1024
RATE = 512 * 1024  # bytes a second per response: two connections fetch a MiB a second
# Three files, different sizes, so that a range tells which file it belongs to.
SIZES = {"diffusion_models/high.safetensors": 6 * MIB + 11, "vae/vae.safetensors": 5 * MIB + 7}
SIZES["loras/lora.safetensors"] = 4 * MIB + 3
T = TypeVar("T")


# ---------------------------------------------------------------- helpers
def base_env(tmp_path: Path, manifest: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")}
    env.update(
        PYTHONPATH=str(ROOT),
        MODELS_MANIFEST=str(manifest),
        MODELS_ROOT=str(tmp_path / "models"),
        COMFYUI_DIR=str(tmp_path / "comfy"),
        HF_ENDPOINT=f"http://127.0.0.1:{closed_port()}",
    )
    env.update(extra)
    return env


#: The provisioner's fixed values, shortened so that a test's downloads and takeovers take
#: seconds: small ranges, a quick failure, frequent progress lines, a 3 s stale bound.
QUICK = {
    "connections": 2,
    "chunk_bytes": MIB,
    "min_free_bytes": 0,
    "retries": 2,
    "backoff_s": 0,
    "progress_interval_s": 0.5,
    "claim_stale_s": 3,
    "wait_s": 120,
}


def provisioning(tmp_path: Path, **changes: object) -> list[str]:
    """The command line of one provisioning process with the QUICK values (and `changes`)."""
    return provision_run.command(
        mounts={"hf_cache": tmp_path / "hf-cache"}, settings={**QUICK, **changes}
    )


def wait_for(found: Callable[[], T | None], what: str, workers: list[Worker]) -> T:
    """Poll observable state until `found` returns something; fail (with the logs) if the
    workers all exit first or a minute passes."""
    return support.wait_for(
        found,
        what,
        gone=lambda: all(w.proc.poll() is not None for w in workers),
        context=lambda: (
            "the workers' logs:\n" + "\n".join(w.log.read_text(encoding="utf-8") for w in workers)
        ),
    )


@dataclass
class Worker:
    proc: subprocess.Popen[bytes]
    log: Path

    def text(self) -> str:
        return self.log.read_text(encoding="utf-8")


@contextmanager
def workers_running(
    count: int, env: dict[str, str], logs: Path, command: list[str]
) -> Iterator[list[Worker]]:
    """`count` provisioning processes started at once, as workers boot at once; any still
    running when the test ends (a failure) are killed."""
    logs.mkdir(exist_ok=True)
    workers = []
    try:
        for i in range(count):
            log = logs / f"worker-{i}.log"
            with log.open("wb") as out:
                proc = subprocess.Popen(
                    command,
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=out,
                )
            workers.append(Worker(proc, log))
        yield workers
    finally:
        for worker in workers:
            if worker.proc.poll() is None:
                worker.proc.kill()
                worker.proc.wait()


def manifest_for(tmp_path: Path, data: dict[str, bytes], source: Callable[[str], dict]) -> Path:
    """A manifest of these files (`folder/filename` keys), sizes and sums pinned."""
    return write_manifest(
        tmp_path / "m.json",
        [
            {
                "folder": rel.split("/")[0],
                "filename": rel.split("/")[1],
                "size": len(blob),
                "sha256": sha(blob),
                "sources": [source(rel)],
            }
            for rel, blob in data.items()
        ],
    )


@dataclass
class Kill:
    pid: int
    at_request: int  # how many requests the server had seen when it was killed
    persisted: dict[str, int] = field(default_factory=dict)  # its files: bytes its state held
    ports: frozenset[int] = frozenset()  # its TCP connections' ports when it was stopped


def claim_holders(root: Path) -> dict[str, Owner]:
    held = {}
    for rel in SIZES:
        view = claims.read_claim(ModelFilePaths(root / rel).claim)
        if view is not None and view.owner is not None:
            held[rel] = view.owner
    return held


def persisted(root: Path, rel: str, owner: Owner) -> int:
    state = PartialState.load(
        state_path(ModelFilePaths(root / rel).of_owner(owner.token, "partial"))
    )
    return state.done.total() if state is not None else 0


def kill_mid_download(
    root: Path, workers: list[Worker], requests: list, killed: list[Kill], least: int
) -> None:
    """SIGKILL a live worker once a file it holds has at least `least` bytes recorded on disk
    and at least a MiB still to fetch."""
    gone = {k.pid for k in killed}

    def target() -> Owner | None:
        for rel, owner in claim_holders(root).items():
            done = persisted(root, rel, owner)
            if owner.pid not in gone and least <= done <= SIZES[rel] - MIB:
                return owner
        return None

    owner = wait_for(target, f"a download with {least} bytes on disk", workers)
    [worker] = [w for w in workers if w.proc.pid == owner.pid]
    # Stopped first, so that it opens no connection and sends nothing more while its state is
    # read. A request it sent just before may still reach the server's log after the mark:
    # its ports tell those apart (`stretches`).
    worker.proc.send_signal(signal.SIGSTOP)
    kill = Kill(owner.pid, 0, ports=tcp_ports(owner.pid))
    for rel, holder in claim_holders(root).items():
        if holder.token == owner.token:
            kill.persisted[rel] = persisted(root, rel, owner)
    kill.at_request = len(requests)
    worker.proc.send_signal(signal.SIGKILL)
    worker.proc.wait()  # reaped: its pid is gone, as after a container's process dies
    killed.append(kill)


def span(rng: str | None, size: int) -> tuple[int, int]:
    if rng is None:
        return 0, size
    first, last = rng.removeprefix("bytes=").split("-")
    return int(first), int(last) + 1 if last else size


def stretches(ports: list[int], killed: list[Kill]) -> list[int]:
    """Which stretch each logged request belongs to: stretch k is what was sent after the k-th
    kill and before the next (0: before the first). A killed worker's last requests can reach
    the log after its kill's mark; each of its connections carries at most one request at a
    time, so the first request logged after the mark from each of its ports is its own, sent
    before it died, and belongs to the stretch before its kill."""
    stretch = [sum(kill.at_request <= j for kill in killed) for j in range(len(ports))]
    for k, kill in enumerate(killed):
        late = set(kill.ports)
        for j in range(kill.at_request, len(ports)):
            if ports[j] in late:
                late.discard(ports[j])
                stretch[j] = k
    return stretch


def fetched(
    requests: list, path_of: dict[str, str], rel: str, stretch: list[int] | None = None, k: int = 0
) -> list:
    """The byte ranges of `rel` asked for by GETs: all of them, or those of stretch `k`."""
    return [
        span(rng, SIZES[rel])
        for j, (method, path, rng) in enumerate(requests)
        if method == "GET" and path == path_of[rel] and (stretch is None or stretch[j] == k)
    ]


def assert_disjoint(ranges: list[tuple[int, int]], what: str) -> None:
    ordered = sorted(ranges)
    for (_, end), (start, _) in itertools.pairwise(ordered):
        assert end <= start, f"{what}: bytes fetched twice: {ordered}"


def check_run(
    root: Path,
    data: dict[str, bytes],
    workers: list[Worker],
    killed: list[Kill],
    requests: list,
    ports: list[int],
    path_of: dict[str, str],
    label: Callable[[str], str],
) -> None:
    for worker in workers:
        worker.proc.wait(timeout=120)
    gone = {k.pid for k in killed}
    logs = {w.proc.pid: w.text() for w in workers}
    everything = "\n".join(logs.values())
    for worker in workers:
        expected = -signal.SIGKILL if worker.proc.pid in gone else 0
        assert worker.proc.returncode == expected, logs[worker.proc.pid]

    # Every file in place with the right bytes, a marker for it, and nothing else left behind:
    # no partial, state file, claim, takeover or owner file.
    for rel, blob in data.items():
        assert hashlib.sha256((root / rel).read_bytes()).hexdigest() == sha(blob)
        marker = verify.read_marker(root, rel)
        assert marker is not None and marker.sha256 == sha(blob) and marker.sha256_checked
    left = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    markers = [f".provision/{rel}.verified.json" for rel in data]
    assert left == sorted([*data, *markers]), left

    # Who fetched what. While a file's owner lives nobody else fetches it: within each stretch
    # between two kills, no byte of a file is asked for twice. After a kill, the new owner
    # fetches only what its predecessor had not recorded (the partial was adopted and resumed).
    stretch = stretches(ports[: len(requests)], killed)
    taken_over = {rel for k in killed for rel in k.persisted}
    for rel in data:
        for k in range(len(killed) + 1):
            assert_disjoint(fetched(requests, path_of, rel, stretch, k), rel)
        for k, kill in enumerate(killed):
            if rel in kill.persisted:
                after = fetched(requests, path_of, rel, stretch, k + 1)
                assert sum(e - s for s, e in after) <= SIZES[rel] - kill.persisted[rel], rel
        if rel not in taken_over:  # fetched exactly once, by one process
            assert sum(e - s for s, e in fetched(requests, path_of, rel)) == SIZES[rel]
        # One process put it in place.
        assert everything.count(f"[provision] {rel}: ready ({label(rel)})") == 1, everything

    # Each killed owner's files were taken over by exactly one waiter, at once (its pid gone
    # on this host), and the partial adopted where it held bytes.
    host = socket.gethostname()
    for kill in killed:
        was = f"its process (host {host} pid {kill.pid}) is gone"
        for rel, done in kill.persisted.items():
            assert everything.count(f"[provision] {rel}: took over the claim: {was}") == 1
            if done:
                assert f"{Path(rel).name}: adopted the partial download" in everything
    # The waiters said what they waited for, naming the owner.
    first = killed[0].pid
    assert f"waiting for host {host} pid {first}, which holds its claim (" in everything
    # Every survivor ended with all models ready; together with what a killed worker put in
    # place before it died, each file was downloaded once, and the rest of the survivors'
    # files were made ready by another worker.
    by_killed = sum(f"{rel}: ready ({label(rel)})" in logs[pid] for pid in gone for rel in data)
    downloaded = shared = 0
    for worker in workers:
        if worker.proc.pid in gone:
            continue
        text = logs[worker.proc.pid]
        summary = re.search(
            r"all (\d+) models ready .* (\d+) downloaded, (\d+) made ready by", text
        )
        assert summary is not None and int(summary.group(1)) == len(data), text
        downloaded += int(summary.group(2))
        shared += int(summary.group(3))
    assert downloaded + by_killed == len(data)
    survivors = len(workers) - len(killed)
    assert downloaded + shared == survivors * len(data)


def sha(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()


# ---------------------------------------------------------------- HTTP
def test_five_workers_on_one_root_over_http_two_killed_mid_download(tmp_path):
    cdn = tmp_path / "cdn"
    data = {rel: make_blob(cdn / f"{i}.bin", size, seed=i) for i, (rel, size) in
            enumerate(SIZES.items())}  # fmt: skip
    path_of = {rel: f"/{i}.bin" for i, rel in enumerate(SIZES)}
    with running(FlakyFileServer(cdn, Fault(rate=RATE))) as server:
        assert isinstance(server, FlakyFileServer)
        manifest = manifest_for(
            tmp_path, data, lambda rel: {"type": "url", "url": f"{server.url}{path_of[rel]}"}
        )
        root = tmp_path / "models"
        killed: list[Kill] = []
        env = base_env(tmp_path, manifest)
        with workers_running(5, env, tmp_path / "logs", provisioning(tmp_path)) as workers:
            kill_mid_download(root, workers, server.requests, killed, least=MIB)
            assert all(w.proc.poll() is None for w in workers if w.proc.pid != killed[0].pid)
            kill_mid_download(root, workers, server.requests, killed, least=2 * MIB)
            check_run(
                root, data, workers, killed, server.requests, server.ports, path_of,
                lambda rel: f"{server.url}{path_of[rel]}",
            )  # fmt: skip
    # Each file's source was opened (HEAD) by its owners only: once, plus once per takeover.
    heads = [path for method, path, _ in server.requests if method == "HEAD"]
    for rel in data:
        owners = 1 + sum(1 for k in killed if rel in k.persisted)
        assert 1 <= heads.count(path_of[rel]) <= owners


# ---------------------------------------------------------------- S3 (R2 style)
@pytest.fixture
def s3_behind_proxy() -> Iterator[tuple[str, S3Proxy]]:
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    host, port = moto.get_host_and_port()
    proxy = S3Proxy(f"http://{host}:{port}", rate=RATE)
    proxy.start()
    try:
        yield f"http://{host}:{port}", proxy
    finally:
        proxy.stop()
        moto.stop()


def test_four_workers_on_one_root_over_s3_one_killed_mid_download(tmp_path, s3_behind_proxy):
    moto_url, proxy = s3_behind_proxy
    keys = {"AKIATESTCONCURRENCY": "secret-of-the-concurrency-test"}
    [(access, secret)] = keys.items()
    s3 = boto3.client(
        "s3",
        endpoint_url=moto_url,
        region_name="us-east-1",
        aws_access_key_id=access,
        aws_secret_access_key=secret,
    )
    s3.create_bucket(Bucket="wan-models")
    data = {}
    for i, (rel, size) in enumerate(SIZES.items()):
        data[rel] = make_blob(tmp_path / "src" / f"{i}.bin", size, seed=10 + i)
        s3.put_object(Bucket="wan-models", Key=rel, Body=data[rel])
    path_of = {rel: f"/wan-models/{rel}" for rel in SIZES}
    manifest = manifest_for(tmp_path, data, lambda rel: {"type": "r2", "key": rel})
    env = base_env(
        tmp_path,
        manifest,
        R2_ENDPOINT=proxy.url,
        R2_BUCKET="wan-models",
        R2_ACCESS_KEY=access,
        R2_SECRET_KEY=secret,
    )
    root = tmp_path / "models"
    killed: list[Kill] = []
    with workers_running(4, env, tmp_path / "logs", provisioning(tmp_path)) as workers:
        kill_mid_download(root, workers, proxy.requests, killed, least=MIB)
        check_run(
            root, data, workers, killed, proxy.requests, proxy.ports, path_of,
            lambda rel: f"r2://wan-models/{rel}",
        )  # fmt: skip
    for worker in workers:
        assert secret not in worker.text()


# ---------------------------------------------------------------- an owner frozen past the bound
def test_an_owner_frozen_past_the_stale_bound_stops_when_it_wakes(tmp_path):
    """A SIGSTOPped owner's claim is taken over; SIGCONTed, it must not download on beside the
    new owner. Its own heartbeat is not due for seconds when it wakes (a 60 s stale bound: a
    beat every 10 s), as after a pause its monotonic clock did not see (a VM paused by its
    host): so only its own check of the claim, on waking, can stop it."""
    size = 10 * MIB + 9
    cdn = tmp_path / "cdn"
    blob = make_blob(cdn / "a.bin", size, seed=5)
    rel = "vae/a.safetensors"
    with running(FlakyFileServer(cdn, Fault(rate=RATE))) as server:
        assert isinstance(server, FlakyFileServer)
        manifest = manifest_for(
            tmp_path, {rel: blob}, lambda _rel: {"type": "url", "url": f"{server.url}/a.bin"}
        )
        env = base_env(tmp_path, manifest)
        root = tmp_path / "models"
        paths = ModelFilePaths(root / rel)
        frozen = tmp_path / "frozen"
        with workers_running(1, env, frozen, provisioning(tmp_path, claim_stale_s=60)) as first:
            [owner] = first

            def holds_a_mib() -> Owner | None:
                view = claims.read_claim(paths.claim)
                if view is None or view.owner is None:
                    return None
                return view.owner if persisted(root, rel, view.owner) >= MIB else None

            old = wait_for(holds_a_mib, "the first owner with a MiB on disk", first)
            owner.proc.send_signal(signal.SIGSTOP)
            frozen_ports = tcp_ports(owner.proc.pid)
            try:
                with workers_running(1, env, tmp_path / "new", provisioning(tmp_path)) as second:

                    def new_owner(least: int) -> Owner | None:
                        view = claims.read_claim(paths.claim)
                        if view is None or view.owner is None or view.owner == old:
                            return None
                        return view.owner if persisted(root, rel, view.owner) >= least else None

                    new = wait_for(lambda: new_owner(0), "the claim taken over", second)
                    # From here on, asking for a range is the new owner's job alone: what the
                    # old one had asked for before it froze is in the log already (seconds ago).
                    taken_at = len(server.requests)
                    wait_for(lambda: new_owner(MIB + 1), "the new owner fetching", second)
                    owner.proc.send_signal(signal.SIGCONT)
                    for worker in [*first, *second]:
                        worker.proc.wait(timeout=120)
            finally:
                owner.proc.send_signal(signal.SIGCONT)
        requests = list(server.requests)
        ports = list(server.ports)
    logs = {"frozen": first[0].text(), "new": second[0].text()}
    assert [w.proc.returncode for w in (*first, *second)] == [0, 0], logs
    assert (root / rel).read_bytes() == blob
    assert new.token != old.token
    # Since the takeover, the ranges fetched are the new owner's, none twice. Woken, the old
    # owner may send the one request each of its connections had passed its claim check for
    # as it froze (no check is atomic with a send), but no other: each of its threads checks
    # the claim again before it writes or asks for more, and finds it lost.
    after = [
        (span(r, size), port)
        for (method, _path, r), port in zip(requests[taken_at:], ports[taken_at:], strict=True)
        if method == "GET"
    ]
    fetched = [rng for rng, port in after if port not in frozen_ports]
    woken = [port for _rng, port in after if port in frozen_ports]
    assert fetched, (requests, ports, frozen_ports)
    since = f"{rel}; since the takeover (range, client port): {after}; frozen: {frozen_ports}"
    assert_disjoint(fetched, since)
    assert sum(e - s for s, e in fetched) <= size - MIB, since
    assert len(woken) == len(set(woken)) <= len(frozen_ports), (after, frozen_ports)
    assert f"{rel}: another worker took its download over" in logs["frozen"]
    assert f"{rel}: ready (made ready by another worker)" in logs["frozen"]
    assert logs["new"].count(f"{rel}: ready ({server.url}/a.bin)") == 1


# ---------------------------------------------------------------- the protocol, in one process
def ghost(host: str = "vanished-host", pid: int = 4242) -> Owner:
    """An owner on another host (another pid namespace): only its heartbeat can tell."""
    return Owner(host, pid, os.urandom(8).hex(), "another-host-namespace")


def one_file(tmp_path: Path, url_base: str, size: int = 3 * MIB + 5) -> tuple[bytes, Path]:
    blob = make_blob(tmp_path / "cdn" / "a.bin", size, seed=3)
    manifest = write_manifest(
        tmp_path / "m.json",
        [
            {
                "folder": "vae",
                "filename": "a.safetensors",
                "size": size,
                "sha256": sha(blob),
                "sources": [{"type": "url", "url": f"{url_base}/a.bin"}],
            }
        ],
    )
    return blob, manifest


def test_a_vanished_hosts_claim_is_taken_over_after_the_stale_bound(tmp_path):
    (tmp_path / "cdn").mkdir()
    with running(FlakyFileServer(tmp_path / "cdn")) as server:
        assert isinstance(server, FlakyFileServer)
        blob, manifest = one_file(tmp_path, server.url)
        dest = tmp_path / "models" / "vae" / "a.safetensors"
        paths = ModelFilePaths(dest)
        dest.parent.mkdir(parents=True)
        gone = ghost()
        assert claims.create(paths.claim, gone)
        # Its partial: the first MiB recorded as done (as its last state write left it).
        partial = paths.of_owner(gone.token, "partial")
        partial.write_bytes(blob[:MIB] + bytes(len(blob) - MIB))
        state = PartialState(len(blob), f"sha256:{sha(blob)}", "x")
        state.done.add(0, MIB)
        state.save(state_path(partial))
        stale_s = 0.6
        settings = settings_for(
            tmp_path, manifest, claim_stale_s=stale_s, connections=1, chunk_bytes=8 * MIB
        )
        lines: list[str] = []
        started = time.monotonic()
        report = Provisioner(settings, log=lines.append).run()
        took = time.monotonic() - started
        asked = list(server.ranges)
    text = "\n".join(lines)
    assert took >= stale_s  # never before the bound: its heartbeat might only have been late
    assert "vae/a.safetensors: waiting for host vanished-host pid 4242, which holds its claim" in (
        text
    )
    assert (
        "vae/a.safetensors: took over the claim: no heartbeat from host vanished-host pid 4242"
        in (text)
    )
    assert "a.safetensors: adopted the partial download a previous owner left (1.0 MiB" in text
    assert asked == [f"bytes={MIB}-{len(blob) - 1}"]  # resumed: only what it lacked
    assert dest.read_bytes() == blob and report.count("downloaded") == 1
    assert sorted(p.name for p in dest.parent.iterdir()) == ["a.safetensors"]


def test_a_live_claim_past_the_wait_bound_fails_saying_what_it_waited_for(tmp_path):
    (tmp_path / "cdn").mkdir()
    with running(FlakyFileServer(tmp_path / "cdn")) as server:
        assert isinstance(server, FlakyFileServer)
        blob, manifest = one_file(tmp_path, server.url)
        dest = tmp_path / "models" / "vae" / "a.safetensors"
        dest.parent.mkdir(parents=True)
        busy = ghost("busy-host", 777)
        paths = ModelFilePaths(dest)
        assert claims.create(paths.claim, busy)
        with paths.of_owner(busy.token, "partial").open("wb") as f:  # a MiB so far, the rest a hole
            f.truncate(len(blob))
            f.write(blob[:MIB])
        beating = Heartbeat(0.1)  # the busy owner's heartbeat, alive all along
        beating.add(Claim(paths, busy))
        try:
            done = subprocess.run(
                provisioning(tmp_path, wait_s=1.5, claim_stale_s=1, progress_interval_s=0.5),
                env=base_env(tmp_path, manifest),
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
        finally:
            beating.stop()
        asked = list(server.requests)
    assert done.returncode == 3, done.stderr
    failed = [line for line in done.stderr.splitlines() if line.startswith("[provision] FAILED")]
    assert failed == [
        "[provision] FAILED: vae/a.safetensors: waited 2s (at most 1.5s) for another "
        f"worker (host busy-host pid 777) that holds its download claim {paths.claim} with a "
        "live heartbeat (1.0 MiB of 3.0 MiB on disk so far). Fix: if that worker is still "
        "downloading from a slow source, start this one again (RunPod does that itself for a "
        "serverless worker): it waits anew; if it is stuck, stop it (its claim is taken over "
        f"1s after its heartbeat stops); if no worker is running, delete {paths.claim}"
    ], done.stderr
    waiting = [line for line in done.stderr.splitlines() if ": waiting for host busy-host" in line]
    # Logged every progress interval (0.5 s here), not at every poll (six polls a second here).
    assert 2 <= len(waiting) <= 4, waiting
    assert "(1.0 MiB of 3.0 MiB on disk so far; heartbeat seen" in waiting[0]
    assert asked == []  # it never touched the source
    view = claims.read_claim(paths.claim)
    assert view is not None and view.owner == busy  # and did not take a live claim over
    assert not dest.exists()


def test_one_waiter_wins_a_takeover_and_a_late_one_leaves_the_new_claim_alone(tmp_path):
    paths = ModelFilePaths(tmp_path / "vae" / "a.safetensors")
    paths.dir.mkdir(parents=True)
    dead, first, second, newcomer = ghost(), ghost("a"), ghost("b"), ghost("c")
    assert claims.create(paths.claim, dead)
    stale = claims.read_claim(paths.claim)
    assert stale is not None and stale.claim_id == dead.token
    assert not claims.create(paths.claim, first)  # held: the name exists

    assert claims.break_stale(paths, stale, first)  # the first waiter takes it over
    assert claims.read_claim(paths.claim) is None
    assert claims.create(paths.claim, newcomer)  # someone claims it anew
    fresh = os.stat(paths.claim).st_ino
    # A second waiter that judged the same dead claim stale loses: the takeover is taken.
    assert not claims.break_stale(paths, stale, second)
    # Even without the takeover name (say it was cleaned up), it moves the new claim aside,
    # sees it is not the stale one, and puts it back: the newcomer still holds its claim.
    paths.takeover(dead.token).unlink()
    assert not claims.break_stale(paths, stale, second)
    view = claims.read_claim(paths.claim)
    assert view is not None and view.owner == newcomer and os.stat(paths.claim).st_ino == fresh
    assert sorted(p.name for p in paths.dir.iterdir()) == [
        ".a.safetensors.claim",
        f".a.safetensors.claim.takeover-{dead.token}",
    ]
    assert paths.leftovers() == [paths.takeover(dead.token)]


def test_a_link_whose_reply_was_lost_still_counts_as_won(tmp_path, monkeypatch):
    """NFS: a retried `link` fails with EEXIST though the first one worked."""
    paths = ModelFilePaths(tmp_path / "a.safetensors")
    real_link = os.link

    def link_then_lose_the_reply(src: Path, dst: Path) -> None:
        real_link(src, dst)
        raise FileExistsError(17, "File exists")

    monkeypatch.setattr(claims.os, "link", link_then_lose_the_reply)
    me = ghost("me")
    assert claims.create(paths.claim, me)
    monkeypatch.setattr(claims.os, "link", real_link)
    assert not claims.create(paths.claim, ghost("other"))
    view = claims.read_claim(paths.claim)
    assert view is not None and view.owner == me
    assert [p.name for p in tmp_path.iterdir()] == [".a.safetensors.claim"]  # no owner file left


def test_a_claim_taken_over_stops_its_old_owner_from_publishing(tmp_path):
    paths = ModelFilePaths(tmp_path / "a.safetensors")
    me = ghost("me")
    assert claims.create(paths.claim, me)
    mine = Claim(paths, me)
    mine.beat()
    mine.check()  # still ours: no error
    stale = claims.read_claim(paths.claim)
    assert stale is not None and claims.break_stale(paths, stale, ghost("waiter"))
    assert claims.create(paths.claim, ghost("new owner"))
    mine.beat()  # the heartbeat notices
    with pytest.raises(claims.ClaimLost):
        mine.check()
    with pytest.raises(claims.ClaimLost):
        mine.confirm()


def test_the_claim_timings_are_fixed_and_tests_give_their_own(tmp_path):
    from wan_worker.settings.provisioning import ProvisionSettings

    env = {"MODELS_ROOT": str(tmp_path), "PROVISION_CLAIM_STALE_S": "5", "PROVISION_WAIT_S": "x"}
    default = ProvisionSettings.from_env(env)  # no longer read: neither value, nor the bad one
    assert (default.claim_stale_s, default.wait_s) == (60.0, 1800.0)
    assert (Provisioner(default).timing.heartbeat_s, Provisioner(default).timing.poll_s) == (10, 1)
    tuned = replace(default, claim_stale_s=5.0, wait_s=90.0)
    timing = Provisioner(tuned).timing
    assert (timing.heartbeat_s, timing.poll_s, timing.wait_s) == (5 / 6, 5 / 6, 90.0)


def test_clean_up_after_publishing_keeps_only_a_fresh_owner_file_of_another_creator(tmp_path):
    paths = ModelFilePaths(tmp_path / "a.safetensors")
    me, other, killed = ghost("me"), ghost("other"), ghost("killed")
    assert claims.create(paths.claim, me)
    left = [
        paths.of_owner(other.token, "partial"),
        state_path(paths.of_owner(other.token, "partial")),
        paths.takeover(other.token),
        paths.of_owner(other.token, "stale"),
    ]
    fresh = paths.claim.with_name(f"{paths.claim.name}.{other.token}.owner")  # being created now
    abandoned = paths.claim.with_name(f"{paths.claim.name}.{killed.token}.owner")
    unrelated = tmp_path / ".a.safetensors.x.partial"  # not a name this code makes
    for path in [*left, fresh, abandoned, unrelated]:
        path.write_bytes(b"x")
    claim_mtime = os.stat(paths.claim).st_mtime_ns
    os.utime(abandoned, ns=(claim_mtime - 61 * 10**9, claim_mtime - 61 * 10**9))
    Claim(paths, me).clean()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted([paths.claim.name, fresh.name, unrelated.name])
