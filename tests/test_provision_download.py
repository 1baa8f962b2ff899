"""The provisioner against real loopback servers: a Hub-like front with nginx behind it (Range),
a file server that drops or corrupts responses, and moto's S3 server standing in for R2."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import boto3
import pytest
from moto.server import ThreadedMotoServer

from tests.provision_servers import (
    Fault,
    FlakyFileServer,
    HubStub,
    Nginx,
    make_blob,
    nginx_server,
    partial_of,
    running,
    url_model,
    write_manifest,
)
from tests.support import closed_port
from wan_worker.errors import DiskSpaceError, ProvisionError
from wan_worker.provision import verify
from wan_worker.provision.manifest import load_manifest
from wan_worker.provision.provisioner import Provisioner
from wan_worker.provision.transfer import STATE_SUFFIX, PartialState
from wan_worker.settings.provisioning import ProvisionSettings, R2Settings

MIB = 1024 * 1024
SIZE = 3 * MIB + 12_345


@pytest.fixture
def cdn(tmp_path: Path) -> Path:
    root = tmp_path / "cdn"
    root.mkdir()
    return root


@pytest.fixture
def nginx(tmp_path: Path, cdn: Path) -> Iterator[Nginx]:
    with nginx_server(tmp_path, cdn) as server:
        yield server


@pytest.fixture
def hub(nginx: Nginx) -> Iterator[HubStub]:
    with running(HubStub(nginx.url)) as stub:
        assert isinstance(stub, HubStub)
        yield stub


def settings_for(
    tmp_path: Path, manifest: Path, hub_url: str = "http://127.0.0.1:9", **overrides: object
) -> ProvisionSettings:
    base = ProvisionSettings(
        manifest_path=manifest,
        models_root=tmp_path / "models",
        comfyui_dir=tmp_path / "comfy",
        hf_cache_dir=tmp_path / "hf-cache",
        hf_endpoint=hub_url,
        connections=4,
        chunk_bytes=MIB,
        retries=2,
        backoff_s=0,
        timeout_s=10,
        min_free_bytes=0,
        progress_interval_s=0.05,
    )
    return replace(base, **overrides)  # type: ignore[arg-type]


def hf(repo: str, path: str, revision: str | None = None) -> dict:
    return {"type": "hf", "repo": repo, "path": path, "revision": revision}


def published(
    tmp_path: Path,
    cdn: Path,
    hub,
    *,
    folder: str = "vae",
    size: int = SIZE,
    pin_size: bool = True,
    pin_sha: bool = True,
    sources: list[dict] | None = None,
) -> tuple[bytes, Path]:
    """One model, a.safetensors, published on the Hub stand-in; and a manifest naming it."""
    data = make_blob(cdn / "a.bin", size)
    hub.add("org/alpha", "a.safetensors", cdn / "a.bin", cdn)
    entry = {
        "folder": folder,
        "filename": "a.safetensors",
        "size": size if pin_size else None,
        "sha256": hashlib.sha256(data).hexdigest() if pin_sha else None,
        "sources": sources if sources is not None else [hf("org/alpha", "a.safetensors")],
    }
    return data, write_manifest(tmp_path / "m.json", [entry])


def run(settings: ProvisionSettings, lines: list[str] | None = None, **kw: object):
    log = lines.append if lines is not None else (lambda _line: None)
    return Provisioner(settings, log=log, **kw).run()  # type: ignore[arg-type]


@pytest.mark.integration
def test_fresh_download_uses_parallel_ranges_and_checks_sha(tmp_path, cdn, nginx, hub, hashes):
    a = make_blob(cdn / "a.bin", SIZE, seed=1)
    b = make_blob(cdn / "b.bin", MIB // 2, seed=2)
    hub.add("org/alpha", "weights/a.safetensors", cdn / "a.bin", cdn)
    hub.add("org/beta", "b.safetensors", cdn / "b.bin", cdn)
    manifest = write_manifest(
        tmp_path / "m.json",
        [
            {
                "folder": "diffusion_models",
                "filename": "a.safetensors",
                "size": SIZE,
                "sha256": hashlib.sha256(a).hexdigest(),
                "sources": [hf("org/alpha", "weights/a.safetensors")],
            },
            {
                "folder": "vae",
                "filename": "b.safetensors",
                "size": None,
                "sha256": None,
                "sources": [hf("org/beta", "b.safetensors")],
            },
        ],
    )
    lines: list[str] = []
    report = run(settings_for(tmp_path, manifest, hub.url), lines)

    root = tmp_path / "models"
    assert (root / "diffusion_models" / "a.safetensors").read_bytes() == a
    assert (root / "vae" / "b.safetensors").read_bytes() == b
    assert report.count("downloaded") == 2
    assert report.fetched_bytes == SIZE + MIB // 2
    # Both sha256s were checked: the manifest's for a, the Hub's (X-Linked-Etag) for b.
    for rel, data in (("diffusion_models/a.safetensors", a), ("vae/b.safetensors", b)):
        marker = verify.read_marker(root, rel)
        assert marker is not None and marker.sha256_checked
        assert marker.sha256 == hashlib.sha256(data).hexdigest()
    # ... computed while the ranges arrived: neither file was read back for it.
    assert report.hashed == 2 and hashes == []
    # The Hub was asked for metadata only; the bytes came from nginx in several ranges.
    assert {m for m, _ in hub.requests} == {"HEAD"}
    served = [r for r in nginx.requests() if r[1] == "/a.bin"]
    assert len(served) == 4  # 3 MiB + a bit, in 1 MiB chunks
    assert all(status == 206 and rng.startswith("bytes=") for _, _, status, rng in served)
    # No temporary files are left behind.
    assert not list(root.rglob("*.partial*"))
    assert any(line.startswith("[provision] all 2 models ready") for line in lines)


@pytest.mark.integration
def test_warm_start_downloads_nothing_and_hashes_nothing(tmp_path, cdn, nginx, hub, hashes):
    _, manifest = published(tmp_path, cdn, hub, folder="loras")
    settings = settings_for(tmp_path, manifest, hub.url)
    run(settings)
    hub_before, nginx_before = len(hub.requests), len(nginx.requests())

    report = run(settings)

    assert report.count("marker") == 1 and report.count("downloaded") == 0
    assert report.hashed == 0 and hashes == []
    assert len(hub.requests) == hub_before
    assert len(nginx.requests()) == nginx_before


@pytest.mark.integration
def test_interrupted_download_resumes_from_where_it_stopped(tmp_path, cdn):
    data = make_blob(cdn / "big.bin", SIZE)
    cut = MIB + 4321
    server = FlakyFileServer(cdn, Fault(truncate_after=cut))
    with running(server):
        manifest = write_manifest(
            tmp_path / "m.json",
            [url_model("vae", "big.safetensors", data, f"{server.url}/big.bin")],
        )
        # One attempt, one connection: the dropped connection ends the first run.
        settings = settings_for(tmp_path, manifest, connections=1, chunk_bytes=8 * MIB, retries=1)
        with pytest.raises(ProvisionError) as failed:
            run(settings)
        assert "vae/big.safetensors" in failed.value.message
        tmp = partial_of(tmp_path / "models" / "vae" / "big.safetensors")
        state = PartialState.load(tmp.with_name(tmp.name + STATE_SUFFIX))
        assert state is not None
        # What reached the disk before the drop (whole read blocks) is recorded as done.
        [(start, kept)] = state.done.ranges()
        assert start == 0 and 0 < kept <= cut
        assert tmp.read_bytes()[:kept] == data[:kept]

        report = run(replace(settings, retries=3))

    assert server.ranges == [f"bytes=0-{SIZE - 1}", f"bytes={kept}-{SIZE - 1}"]
    assert (tmp_path / "models" / "vae" / "big.safetensors").read_bytes() == data
    assert report.fetched_bytes == SIZE - kept
    assert not tmp.exists()


@pytest.mark.integration
def test_dropped_connection_is_retried_within_one_run(tmp_path, cdn):
    data = make_blob(cdn / "big.bin", SIZE)
    server = FlakyFileServer(cdn, Fault(truncate_after=MIB + 200_000))
    with running(server):
        manifest = write_manifest(
            tmp_path / "m.json",
            [
                {
                    "folder": "vae",
                    "filename": "big.safetensors",
                    "size": SIZE,
                    "sha256": None,
                    "sources": [{"type": "url", "url": f"{server.url}/big.bin"}],
                },
            ],
        )
        lines: list[str] = []
        run(settings_for(tmp_path, manifest, connections=1, chunk_bytes=8 * MIB), lines)
    assert server.ranges == [f"bytes=0-{SIZE - 1}", f"bytes={MIB + 200_000}-{SIZE - 1}"]
    assert (tmp_path / "models" / "vae" / "big.safetensors").read_bytes() == data
    assert any("retrying" in line for line in lines)


@pytest.mark.integration
def test_corrupted_cached_file_is_caught_by_sha256_and_downloaded_again(
    tmp_path, cdn, nginx, hub, hashes
):
    data, manifest = published(tmp_path, cdn, hub)
    settings = settings_for(tmp_path, manifest, hub.url)
    run(settings)
    dest = tmp_path / "models" / "vae" / "a.safetensors"
    st = dest.stat()
    with dest.open("r+b") as f:  # a flipped byte, written later than the marker
        f.seek(SIZE // 2)
        f.write(bytes([data[SIZE // 2] ^ 0x01]))
    os.utime(dest, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    hashes.clear()

    lines: list[str] = []
    report = run(settings, lines)

    assert dest.read_bytes() == data
    assert report.count("downloaded") == 1
    assert hashes[0] == dest  # the damaged file was hashed, then the new download
    assert any("sha256 does not match" in line for line in lines)


@pytest.mark.integration
def test_corrupt_download_is_rejected_and_the_next_source_used(tmp_path, cdn, nginx, hub):
    bad = FlakyFileServer(cdn, Fault(corrupt=True))
    with running(bad):
        data, manifest = published(
            tmp_path,
            cdn,
            hub,
            sources=[{"type": "url", "url": f"{bad.url}/a.bin"}, hf("org/alpha", "a.safetensors")],
        )
        lines: list[str] = []
        report = run(settings_for(tmp_path, manifest, hub.url), lines)
    assert (tmp_path / "models" / "vae" / "a.safetensors").read_bytes() == data
    assert report.outcomes[0].source.startswith("hf://org/alpha/a.safetensors")
    assert any("sha256 mismatch" in line for line in lines)


@pytest.mark.integration
def test_a_source_that_is_down_falls_through_to_the_next(tmp_path, cdn, nginx, hub):
    unavailable = FlakyFileServer(cdn, Fault(status=503))
    with running(unavailable):
        data, manifest = published(
            tmp_path,
            cdn,
            hub,
            size=MIB,
            pin_size=False,
            pin_sha=False,
            sources=[
                {"type": "url", "url": f"http://127.0.0.1:{closed_port()}/a.bin"},
                {"type": "url", "url": f"{unavailable.url}/a.bin"},
                hf("org/missing", "a.safetensors"),
                hf("org/alpha", "a.safetensors"),
            ],
        )
        report = run(settings_for(tmp_path, manifest, hub.url))
    assert (tmp_path / "models" / "vae" / "a.safetensors").read_bytes() == data
    assert report.outcomes[0].source.startswith("hf://org/alpha/")
    assert unavailable.methods == ["HEAD"]


@pytest.mark.integration
def test_all_sources_down_fails_naming_the_file_and_every_source(tmp_path, monkeypatch, hub):
    secret = "s3cr3t-token-value"
    monkeypatch.setenv("HF_TOKEN", secret)
    port = closed_port()
    manifest = write_manifest(
        tmp_path / "m.json",
        [
            {
                "folder": "diffusion_models",
                "filename": "gone.safetensors",
                "size": None,
                "sha256": None,
                "sources": [
                    {"type": "r2", "key": "diffusion_models/gone.safetensors"},
                    {"type": "url", "url": f"http://127.0.0.1:{port}/{secret}/gone.bin"},
                    hf("org/missing", "gone.safetensors", "a" * 40),
                ],
            },
        ],
    )
    settings = settings_for(tmp_path, manifest, hub.url, hf_token=secret)
    with pytest.raises(ProvisionError) as failed:
        run(settings)
    message = failed.value.message
    assert "diffusion_models/gone.safetensors could not be downloaded" in message
    assert "r2://wan-models/diffusion_models/gone.safetensors: skipped: R2 is not configured" in (
        message
    )
    assert "R2_ENDPOINT, R2_ACCESS_KEY, R2_SECRET_KEY unset" in message
    assert f"http://127.0.0.1:{port}/[redacted]/gone.bin" in message
    assert f"hf://org/missing/gone.safetensors@{'a' * 40}" in message
    assert "404" in message
    assert secret not in message
    assert not (tmp_path / "models" / "diffusion_models" / "gone.safetensors").exists()


@pytest.mark.integration
def test_too_little_disk_fails_before_downloading_anything(tmp_path, cdn, nginx, hub):
    _, manifest = published(tmp_path, cdn, hub, pin_size=False, pin_sha=False)
    probed: list[Path] = []

    def tiny_disk(path: Path) -> int:
        probed.append(path)
        return SIZE // 2

    with pytest.raises(DiskSpaceError) as failed:
        run(settings_for(tmp_path, manifest, hub.url), free_bytes=tiny_disk)
    message = failed.value.message
    assert "Not enough disk space" in message and "vae/a.safetensors (3.0 MiB)" in message
    assert "MODELS_ROOT" in message and "Nothing was downloaded" in message
    assert probed == [tmp_path / "models"]
    assert nginx.requests() == []
    assert not list((tmp_path / "models").rglob("*.partial"))


def test_file_found_without_marker_is_verified_once_then_trusted(tmp_path, hashes):
    root = tmp_path / "models"
    data = make_blob(root / "vae" / "v.safetensors", MIB)
    manifest = write_manifest(
        tmp_path / "m.json",
        [
            {
                "folder": "vae",
                "filename": "v.safetensors",
                "size": MIB,
                "sha256": hashlib.sha256(data).hexdigest(),
                "sources": [{"type": "url", "url": f"http://127.0.0.1:{closed_port()}/v"}],
            },
        ],
    )
    settings = settings_for(tmp_path, manifest)
    first = run(settings)
    second = run(settings)
    assert first.count("verified") == 1 and second.count("marker") == 1
    assert hashes == [root / "vae" / "v.safetensors"]


def test_runpod_hf_cache_is_used_in_place(tmp_path, hashes):
    data = b"cached weights" * 1000
    sha = hashlib.sha256(data).hexdigest()
    rev = "b" * 40
    repo_dir = tmp_path / "hf-cache" / "models--org--alpha"
    (repo_dir / "blobs").mkdir(parents=True)
    (repo_dir / "blobs" / sha).write_bytes(data)
    entry = repo_dir / "snapshots" / rev / "sub" / "a.safetensors"
    entry.parent.mkdir(parents=True)
    entry.symlink_to(Path("../../../blobs") / sha)
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(rev)
    manifest = write_manifest(
        tmp_path / "m.json",
        [
            {
                "folder": "diffusion_models",
                "filename": "a.safetensors",
                "size": len(data),
                "sha256": sha,
                "sources": [hf("org/alpha", "sub/a.safetensors", rev)],
            },
        ],
    )
    report = run(settings_for(tmp_path, manifest))
    dest = tmp_path / "models" / "diffusion_models" / "a.safetensors"
    assert dest.is_symlink() and dest.resolve() == (repo_dir / "blobs" / sha)
    assert dest.read_bytes() == data
    assert report.count("linked") == 1 and hashes == []
    assert run(settings_for(tmp_path, manifest)).count("marker") == 1


@pytest.mark.integration
def test_link_into_exposes_the_file_where_a_node_looks(tmp_path, cdn):
    data = make_blob(cdn / "rife47.pth", 1000)
    server = FlakyFileServer(cdn)
    with running(server):
        manifest = write_manifest(
            tmp_path / "m.json",
            [
                {
                    "folder": "rife",
                    "filename": "rife47.pth",
                    "size": 1000,
                    "sha256": None,
                    "link_into": ["{comfyui_dir}/custom_nodes/Frame-Interpolation/ckpts/rife"],
                    "sources": [{"type": "url", "url": f"{server.url}/rife47.pth"}],
                },
            ],
        )
        run(settings_for(tmp_path, manifest))
    link = (
        tmp_path
        / "comfy"
        / "custom_nodes"
        / "Frame-Interpolation"
        / "ckpts"
        / "rife"
        / ("rife47.pth")
    )
    assert link.is_symlink() and link.read_bytes() == data


@pytest.fixture
def r2() -> Iterator[R2Settings]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    settings = R2Settings(
        endpoint=f"http://{host}:{port}",
        bucket="wan-models",
        access_key="AKIATESTKEY",
        secret_key="test-secret-key",
    )
    boto3.client(
        "s3",
        endpoint_url=settings.endpoint,
        region_name="us-east-1",
        aws_access_key_id=settings.access_key,
        aws_secret_access_key=settings.secret_key,
    ).create_bucket(Bucket="wan-models")
    yield settings
    server.stop()


def _put(r2: R2Settings, key: str, data: bytes) -> None:
    from wan_worker.provision.sources import r2_client

    client = r2_client(ProvisionSettings(r2=r2))
    client.put_object(Bucket=r2.bucket, Key=key, Body=data)


@pytest.mark.integration
def test_r2_download_with_transfer_config(tmp_path, r2, hashes):
    data = os.urandom(6 * MIB + 7)
    _put(r2, "diffusion_models/x.safetensors", data)
    manifest = write_manifest(
        tmp_path / "m.json",
        [
            {
                "folder": "diffusion_models",
                "filename": "x.safetensors",
                "size": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
                "sources": [{"type": "r2", "key": "diffusion_models/x.safetensors"}],
            },
        ],
    )
    report = run(settings_for(tmp_path, manifest, r2=r2))
    assert (tmp_path / "models" / "diffusion_models" / "x.safetensors").read_bytes() == data
    assert report.outcomes[0].source == "r2://wan-models/diffusion_models/x.safetensors"
    assert report.fetched_bytes == len(data) and report.hashed == 1 and hashes == []
    marker = verify.read_marker(tmp_path / "models", "diffusion_models/x.safetensors")
    assert marker is not None and marker.sha256 == hashlib.sha256(data).hexdigest()


@pytest.mark.integration
def test_r2_resumes_a_partial_download(tmp_path, r2):
    data = os.urandom(4 * MIB)
    _put(r2, "loras/y.safetensors", data)
    manifest = write_manifest(
        tmp_path / "m.json",
        [
            {
                "folder": "loras",
                "filename": "y.safetensors",
                "size": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
                "sources": [{"type": "r2", "key": "loras/y.safetensors"}],
            },
        ],
    )
    # A previous run got the first 1.5 MiB; the rest of the file is still a hole.
    tmp = tmp_path / "models" / "loras" / ".y.safetensors.0123456789abcdef.partial"
    tmp.parent.mkdir(parents=True)
    done = 3 * MIB // 2
    tmp.write_bytes(data[:done] + bytes(len(data) - done))
    state = PartialState(
        size=len(data), identity=f"sha256:{hashlib.sha256(data).hexdigest()}", source="r2"
    )
    state.done.add(0, done)
    state.save(tmp.with_name(tmp.name + STATE_SUFFIX))

    report = run(settings_for(tmp_path, manifest, r2=r2))

    assert (tmp_path / "models" / "loras" / "y.safetensors").read_bytes() == data
    assert report.fetched_bytes == len(data) - done


@pytest.mark.integration
def test_r2_missing_object_falls_back_to_the_hub(tmp_path, r2, cdn, nginx, hub):
    data, manifest = published(
        tmp_path,
        cdn,
        hub,
        size=MIB,
        pin_sha=False,
        sources=[{"type": "r2", "key": "vae/a.safetensors"}, hf("org/alpha", "a.safetensors")],
    )
    report = run(settings_for(tmp_path, manifest, hub.url, r2=r2))
    assert (tmp_path / "models" / "vae" / "a.safetensors").read_bytes() == data
    assert report.outcomes[0].source.startswith("hf://org/alpha/")


def test_project_manifest_loads_and_names_its_sources():
    manifest = load_manifest(Path(__file__).resolve().parent.parent / "workflows" / "models.json")
    dasiwa = next(m for m in manifest.models if m.filename.startswith("DaSiWa"))
    assert [s.type for s in dasiwa.sources] == ["r2", "hf"]  # R2 first, public mirror second
    for model in manifest.models:
        assert model.sources, model.relpath
        data = json.dumps([s.__dict__ for s in model.sources])
        assert "token" not in data.lower()
