"""The models bundle end to end, against a Hub on loopback (tests/fake_hub.py):

- `python -m wan_worker.provision bundle` gets every manifest file from its own sources, then
  uploads them with huggingface_hub (repository creation, preupload, the LFS batch API, basic
  and multipart PUTs, verify, one commit), and prints the endpoint's settings, never the token;
- huggingface_hub's own `snapshot_download` from that Hub builds a real cache, laid out as
  RunPod's cached models are; the provisioner links every file from it in place (nothing copied,
  nothing hashed, nothing asked of the network), and falls back, saying why, when a file is not
  there: to the bundle on the Hub first, then to the file's own sources.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from tests.fake_hub import FakeHub
from tests.provision_servers import make_blob, write_manifest
from tests.test_provision_cli import cli
from wan_worker.errors import ConfigError, PublishError
from wan_worker.provision import verify
from wan_worker.provision.provisioner import Provisioner, Report
from wan_worker.provision.publish import build_bundle
from wan_worker.settings.provisioning import ProvisionSettings

pytestmark = pytest.mark.integration  # a loopback Hugging Face Hub

TOKEN = "hf_planted_bundle_token_7c1e"
MIB = 1024 * 1024
BUNDLE = "me/wan-bundle"


class Models:
    """Two upstream repositories on the Hub, and a manifest naming their files (no pins, like
    most of the project's manifest)."""

    def __init__(self, tmp_path: Path, hub: FakeHub) -> None:
        self.expert = make_blob(tmp_path / "up" / "expert.bin", 3 * MIB + 4321, seed=3)
        self.rife = make_blob(tmp_path / "up" / "rife.bin", 300_000, seed=4)
        hub.add_repo("up/experts", {"split/high.safetensors": self.expert})
        hub.add_repo("up/rife", {"rife47.pth": self.rife})
        self.entries = [
            {
                "folder": "diffusion_models",
                "filename": "high_fp8.safetensors",
                "size": None,
                "sha256": None,
                "sources": [
                    {"type": "hf", "repo": "up/experts", "path": "split/high.safetensors"},
                ],
            },
            {
                "folder": "rife",
                "filename": "rife47.pth",
                "size": None,
                "sha256": None,
                "sources": [{"type": "hf", "repo": "up/rife", "path": "rife47.pth"}],
            },
        ]
        self.manifest = write_manifest(tmp_path / "models.json", self.entries)
        self.data = {
            "diffusion_models/high_fp8.safetensors": self.expert,
            "rife/rife47.pth": self.rife,
        }

    def sha(self, relpath: str) -> str:
        return hashlib.sha256(self.data[relpath]).hexdigest()

    def pin(self, tmp_path: Path) -> Path:
        """The same manifest with every size and sha256 pinned."""
        pinned = []
        for entry in self.entries:
            relpath = f"{entry['folder']}/{entry['filename']}"
            size = len(self.data[relpath])
            pinned.append({**entry, "size": size, "sha256": self.sha(relpath)})
        return write_manifest(tmp_path / "pinned.json", pinned)


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[FakeHub]:
    server = FakeHub(tmp_path / "hub-store", TOKEN, multipart_threshold=MIB)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def models(tmp_path: Path, hub: FakeHub) -> Models:
    return Models(tmp_path, hub)


def settings_for(tmp_path: Path, hub: FakeHub, manifest: Path, **overrides: object):
    base = ProvisionSettings(
        manifest_path=manifest,
        models_root=tmp_path / "models",
        comfyui_dir=tmp_path / "comfy",
        hf_cache_dir=tmp_path / "hf-cache" / "hub",
        hf_endpoint=hub.url,
        hf_token=TOKEN,
        connections=2,
        chunk_bytes=MIB,
        retries=1,
        backoff_s=0,
        timeout_s=10,
        min_free_bytes=0,
        progress_interval_s=60,
    )
    return replace(base, **overrides)  # type: ignore[arg-type]


def publish(tmp_path: Path, hub: FakeHub, manifest: Path, **kw: object) -> str:
    """Build the bundle in-process from a staging root; returns its commit."""
    settings = settings_for(tmp_path, hub, manifest, models_root=tmp_path / "staging")
    return build_bundle(settings, repo=BUNDLE, log=lambda _l: None, **kw).commit  # type: ignore[arg-type]


def cache_bundle(tmp_path: Path, hub: FakeHub, revision: str = "main") -> Path:
    """RunPod's cache of the bundle, made by huggingface_hub itself from the Hub."""
    from huggingface_hub import snapshot_download

    snapshot = snapshot_download(
        BUNDLE,
        revision=revision,
        cache_dir=str(tmp_path / "hf-cache" / "hub"),
        endpoint=hub.url,
        token=TOKEN,
    )
    return Path(snapshot)


def provision(settings: ProvisionSettings, lines: list[str]) -> Report:
    return Provisioner(settings, log=lines.append).run()


# ---------------------------------------------------------------------------- building


def test_bundle_command_uploads_every_file_over_lfs_in_one_commit(tmp_path, hub, models):
    env = {
        "MODELS_MANIFEST": str(models.manifest),
        "HF_ENDPOINT": hub.url,
        "HF_TOKEN": TOKEN,
    }
    staging = ("--models-root", str(tmp_path / "staging"))
    no_cache = {"hf_cache": tmp_path / "no-cache"}
    first = cli(env, "bundle", "--repo", BUNDLE, "--private", *staging, mounts=no_cache)
    assert first.returncode == 0, first.stderr
    commit = hub.repos[BUNDLE].branches["main"]
    assert f"MODELS_BUNDLE_REPO={BUNDLE}" in first.stdout
    assert f"MODELS_BUNDLE_REVISION={commit}" in first.stdout
    assert f"Model (cached models):  {BUNDLE}" in first.stdout
    assert TOKEN not in first.stdout + first.stderr
    assert hub.repos[BUNDLE].private
    assert f"models root: {tmp_path / 'staging'} (--models-root)" in first.stderr

    # Got from the manifest's own sources, then uploaded over LFS: the 3 MiB expert in 1 MiB
    # parts plus a completion call, the RIFE file in one PUT, each verified; one commit.
    assert hub.seen("storage", "GET", "/up/") and not hub.seen("hub", "GET", "/api/models/up")
    expert_sha = models.sha("diffusion_models/high_fp8.safetensors")
    rife_sha = models.sha("rife/rife47.pth")
    parts = [f"/{BUNDLE}/{expert_sha}/part/{n}" for n in range(1, 8)]  # 3 MiB in 512 KiB
    assert sorted(hub.seen("storage", "PUT")) == sorted([*parts, f"/{BUNDLE}/{rife_sha}"])
    assert hub.seen("hub", "POST", "/api/complete_multipart/") == [
        f"/api/complete_multipart/{BUNDLE}/{expert_sha}"
    ]
    assert len(hub.seen("hub", "POST", f"/{BUNDLE}.git/info/lfs/objects/verify")) == 2
    assert hub.seen("hub", "POST", f"/api/models/{BUNDLE}/commit/") == [
        f"/api/models/{BUNDLE}/commit/main"
    ]
    assert not hub.seen("hub", "GET", f"/api/models/{BUNDLE}/xet-write-token")
    writes = [r for r in hub.requests if r[0] == "hub" and r[1] in {"POST", "PUT"}]
    assert all(auth for *_, path, auth in writes if "complete_multipart" not in path)

    files = hub.files(BUNDLE)
    for relpath, data in models.data.items():
        entry = files[relpath]
        assert entry.sha256 == hashlib.sha256(data).hexdigest() and entry.size == len(data)
        assert hub.lfs_path(BUNDLE, entry.sha256).read_bytes() == data
    readme = files["README.md"].content or b""
    assert f"`MODELS_BUNDLE_REPO={BUNDLE}`".encode() in readme
    assert expert_sha.encode() in readme and b"hf://up/experts/split/high.safetensors" in readme

    # Again: every file already verified (markers) and already on the Hub: nothing sent,
    # no new commit, the same revision printed.
    uploads = len(hub.seen("storage", "PUT"))
    second = cli(env, "bundle", "--repo", BUNDLE, "--private", *staging, mounts=no_cache)
    assert second.returncode == 0, second.stderr
    assert "2 already verified" in second.stderr
    assert len(hub.seen("storage", "PUT")) == uploads
    assert len(hub.seen("hub", "POST", f"/api/models/{BUNDLE}/commit/")) == 1
    assert f"MODELS_BUNDLE_REVISION={commit}" in second.stdout


def test_a_new_manifest_replaces_stale_files_and_leaves_the_rest(tmp_path, hub, models):
    publish(tmp_path, hub, models.manifest)
    renamed = [models.entries[0], {**models.entries[1], "filename": "rife49.pth"}]
    v2 = write_manifest(tmp_path / "v2.json", renamed)
    commit = publish(tmp_path, hub, v2)
    assert set(hub.files(BUNDLE, commit)) == {
        ".gitattributes",
        "README.md",
        "diffusion_models/high_fp8.safetensors",
        "rife/rife49.pth",
    }
    deleted = [line for line in hub.commit_bodies[-1] if line["key"] == "deletedFile"]
    assert deleted == [{"key": "deletedFile", "value": {"path": "rife/rife47.pth"}}]


def test_xet_flag_uploads_over_xet_and_a_hub_without_it_gets_a_fix(tmp_path, hub, models):
    from huggingface_hub import constants

    before = constants.HF_HUB_DISABLE_XET
    with pytest.raises(PublishError) as failure:
        publish(tmp_path, hub, models.manifest, use_xet=True)
    assert hub.seen("hub", "GET", f"/api/models/{BUNDLE}/xet-write-token/main")
    assert not hub.seen("hub", "POST", f"/{BUNDLE}.git/info/lfs/objects/batch")
    assert "run it without --xet (LFS)" in failure.value.message
    assert before == constants.HF_HUB_DISABLE_XET


def test_bundle_command_without_write_access_fails_with_the_fix(tmp_path, hub, models):
    wrong = "hf_wrong_token_for_this_hub_42"
    env = {
        "MODELS_MANIFEST": str(models.manifest),
        "MODELS_ROOT": str(tmp_path / "staging"),
        "HF_ENDPOINT": hub.url,
        "HF_TOKEN": wrong,
    }
    result = cli(env, "bundle", "--repo", BUNDLE)
    assert result.returncode == 5, result.stderr
    assert f"Uploading the models bundle to {BUNDLE} failed" in result.stderr
    assert "Fix: give HF_TOKEN a token with write access to me" in result.stderr
    assert wrong not in result.stdout + result.stderr
    assert BUNDLE not in hub.repos


def test_bad_bundle_settings_name_the_variable(tmp_path):
    base = {"MODELS_ROOT": str(tmp_path / "m")}
    repo = cli({**base, "MODELS_BUNDLE_REPO": "not a repo"})
    assert repo.returncode == 2 and "MODELS_BUNDLE_REPO='not a repo'" in repo.stderr
    rev = cli({**base, "MODELS_BUNDLE_REPO": BUNDLE, "MODELS_BUNDLE_REVISION": "v1"})
    assert rev.returncode == 2 and "MODELS_BUNDLE_REVISION='v1' must be a full" in rev.stderr
    arg = cli(base, "bundle", "--repo", "a/b/c")
    assert arg.returncode == 2 and "--repo='a/b/c'" in arg.stderr
    link = ProvisionSettings.from_env(
        {"MODELS_BUNDLE_REPO": f"https://huggingface.co/{BUNDLE}/", "MODELS_ROOT": "/x"}
    )
    assert link.bundle_repo == BUNDLE and link.bundle_revision is None
    with pytest.raises(ConfigError, match="HF_HUB_OFFLINE"):
        build_bundle(
            replace(ProvisionSettings(), hf_offline=True), repo=BUNDLE, log=lambda _l: None
        )


# ---------------------------------------------------------------------------- using it


@pytest.mark.parametrize("pinned", [False, True], ids=["main", "pinned-revision"])
def test_cached_bundle_is_used_in_place(tmp_path, hub, models, hashes, pinned):
    commit = publish(tmp_path, hub, models.manifest)
    snapshot = cache_bundle(tmp_path, hub)
    settings = settings_for(
        tmp_path,
        hub,
        models.manifest,
        bundle_repo=BUNDLE,
        bundle_revision=commit if pinned else None,
    )
    asked = len(hub.requests)
    hashes.clear()  # building the bundle hashed the staged files; from here on nothing is
    lines: list[str] = []
    report = provision(settings, lines)

    assert len(hub.requests) == asked  # nothing asked of the Hub or its storage
    assert report.count("linked") == 2 and report.fetched_bytes == 0 and hashes == []
    blobs = snapshot.parent.parent / "blobs"
    for relpath, data in models.data.items():
        dest = settings.models_root / relpath
        sha = hashlib.sha256(data).hexdigest()
        assert dest.is_symlink() and Path(os.path.realpath(dest)) == blobs / sha
        assert dest.stat().st_ino == (blobs / sha).stat().st_ino  # the cache's bytes, not a copy
        assert dest.read_bytes() == data
        marker = verify.read_marker(settings.models_root, relpath)
        assert marker is not None and marker.sha256 == sha and marker.size == len(data)
        assert marker.source == f"RunPod cache {snapshot / relpath}"
    copied = [p for p in settings.models_root.rglob("*") if p.is_file() and not p.is_symlink()]
    assert all(".provision" in p.parts for p in copied)
    assert any(f"models bundle {BUNDLE}@" in line and "used in place" in line for line in lines)

    again = provision(settings, [])
    assert again.count("marker") == 2 and hashes == []


def test_file_missing_from_the_cache_comes_from_the_bundle_on_the_hub(tmp_path, hub, models):
    publish(tmp_path, hub, models.manifest)
    snapshot = cache_bundle(tmp_path, hub)
    (snapshot / "rife" / "rife47.pth").unlink()
    settings = settings_for(tmp_path, hub, models.manifest, bundle_repo=BUNDLE)
    before = len(hub.requests)
    lines: list[str] = []
    report = provision(settings, lines)

    assert report.count("linked") == 1 and report.count("downloaded") == 1
    got = [path for host, method, path, _ in hub.requests[before:] if method == "GET"]
    assert got and all(path.startswith(f"/{BUNDLE}/") for path in got)
    downloaded = next(o for o in report.outcomes if o.action == "downloaded")
    assert downloaded.relpath == "rife/rife47.pth"
    assert downloaded.source.startswith(f"hf://{BUNDLE}/rife/rife47.pth@")
    assert any(
        "rife/rife47.pth: rife/rife47.pth is missing or unreadable in the cached" in line
        and "trying its other sources" in line
        for line in lines
    )
    dest = settings.models_root / "rife" / "rife47.pth"
    assert not dest.is_symlink() and dest.read_bytes() == models.rife


def test_offline_a_file_missing_from_the_cache_comes_from_its_own_source(tmp_path, hub, models):
    commit = publish(tmp_path, hub, models.manifest)
    cache_bundle(tmp_path, hub)
    urls = {
        "diffusion_models/high_fp8.safetensors": f"{hub.storage.url}/up/experts/",
        "rife/rife47.pth": f"{hub.storage.url}/up/rife/",
    }
    entries = []
    for entry in models.entries:
        relpath = f"{entry['folder']}/{entry['filename']}"
        url = urls[relpath] + models.sha(relpath)
        entries.append({**entry, "sources": [{"type": "url", "url": url}]})
    manifest = write_manifest(tmp_path / "own.json", entries)
    other = "f" * 40  # a pinned bundle revision RunPod's cache does not hold
    settings = settings_for(
        tmp_path, hub, manifest, bundle_repo=BUNDLE, bundle_revision=other, hf_offline=True
    )
    lines: list[str] = []
    report = provision(settings, lines)

    assert commit != other
    assert report.count("downloaded") == 2
    for outcome in report.outcomes:
        assert outcome.source == urls[outcome.relpath] + models.sha(outcome.relpath)
        assert (settings.models_root / outcome.relpath).read_bytes() == models.data[outcome.relpath]
    said = [x for x in lines if f"revision {other} of {BUNDLE} is not in RunPod's model cache" in x]
    assert len(said) == 2 and all(x.endswith("; trying its other sources") for x in said)


def test_bundle_not_cached_is_downloaded_from_the_hub_before_other_sources(tmp_path, hub, models):
    publish(tmp_path, hub, models.manifest)
    settings = settings_for(tmp_path, hub, models.manifest, bundle_repo=BUNDLE)
    upstream = len(hub.seen("storage", "GET", "/up/"))
    lines: list[str] = []
    report = provision(settings, lines)

    assert report.count("downloaded") == 2
    assert all(o.source.startswith(f"hf://{BUNDLE}/") for o in report.outcomes)
    assert len(hub.seen("storage", "GET", "/up/")) == upstream
    said = [line for line in lines if "not in RunPod's model cache" in line]
    assert len(said) == 1 and f"set the endpoint's Model field to {BUNDLE}" in said[0]
    for relpath, data in models.data.items():
        assert (settings.models_root / relpath).read_bytes() == data


def test_a_cached_bundle_file_that_is_not_the_manifests_is_refused(tmp_path, hub, models):
    """The bundle holds other bytes than the (pinned) manifest: neither its cached copy nor its
    Hub copy is taken; the file's own source is."""
    other = make_blob(tmp_path / "other.bin", len(models.rife), seed=9)
    hub.add_repo(BUNDLE, {"rife/rife47.pth": other})
    cache_bundle(tmp_path, hub)
    pinned = models.pin(tmp_path)
    settings = settings_for(tmp_path, hub, pinned, bundle_repo=BUNDLE)
    lines: list[str] = []
    report = provision(settings, lines)

    sources = {o.relpath: (o.action, o.source) for o in report.outcomes}
    action, source = sources["rife/rife47.pth"]
    assert action == "downloaded" and source.startswith("hf://up/rife/rife47.pth@main")
    other_sha = hashlib.sha256(other).hexdigest()
    assert any(
        f"cached copy in {BUNDLE} has sha256 {other_sha}, not the manifest's" in x for x in lines
    )
    assert (settings.models_root / "rife" / "rife47.pth").read_bytes() == models.rife


def test_blobs_in_huggingface_hubs_shared_xet_store_are_read_by_their_repo_name(
    tmp_path, hub, models, hashes
):
    """huggingface_hub >= 2 may move a Xet file's blob into a cache-wide store named by its Xet
    hash and leave `blobs/<sha256>` as a link to it: the sha256 is the first link's name."""
    from huggingface_hub.utils._shared_blobs import publish_blob_to_shared_store

    publish(tmp_path, hub, models.manifest)
    snapshot = cache_bundle(tmp_path, hub)
    cache = tmp_path / "hf-cache" / "hub"
    for data in models.data.values():
        blob = snapshot.parent.parent / "blobs" / hashlib.sha256(data).hexdigest()
        xet_hash = hashlib.sha256(b"xet" + data).hexdigest()
        assert publish_blob_to_shared_store(
            blob_path=str(blob), xet_hash=xet_hash, cache_dir=cache, expected_size=len(data)
        )
        assert blob.is_symlink() and os.path.realpath(blob).endswith(xet_hash)
    settings = settings_for(tmp_path, hub, models.pin(tmp_path), bundle_repo=BUNDLE)
    hashes.clear()
    report = provision(settings, [])

    assert report.count("linked") == 2 and hashes == []
    for relpath, data in models.data.items():
        marker = verify.read_marker(settings.models_root, relpath)
        assert marker is not None and marker.sha256 == hashlib.sha256(data).hexdigest()
        assert marker.sha256_checked
        assert (settings.models_root / relpath).read_bytes() == data


def test_a_link_into_another_hosts_cache_is_relinked_without_reading_it(
    tmp_path, hub, models, hashes
):
    """Models root on a shared network volume, RunPod's cache local to each host at the same
    path: on another host the link still resolves, but to other inodes. It is linked afresh
    from the blob's name, never hashed through."""
    publish(tmp_path, hub, models.manifest)
    snapshot = cache_bundle(tmp_path, hub)
    settings = settings_for(tmp_path, hub, models.manifest, bundle_repo=BUNDLE)
    assert provision(settings, []).count("linked") == 2
    for relpath in models.data:  # the other host's copy of each blob: same path, new inode
        blob = Path(os.path.realpath(snapshot / relpath))
        shutil.copyfile(blob, blob.with_name("copy"))
        os.replace(blob.with_name("copy"), blob)
    asked = len(hub.requests)
    hashes.clear()
    report = provision(settings, [])

    assert report.count("linked") == 2 and hashes == []
    assert len(hub.requests) == asked
    for relpath, data in models.data.items():
        assert (settings.models_root / relpath).read_bytes() == data
