"""`python -m wan_worker.provision` as a person (or a test) runs it: exit codes, messages, the
models root, `--pin-manifest`."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests import provision_run
from tests.provision_servers import FlakyFileServer, make_blob, running, url_model, write_manifest
from wan_worker.provision import verify
from wan_worker.settings.env import REMOVED, EnvVars
from wan_worker.settings.provisioning import (
    ProvisionSettings,
    RunPodMounts,
    resolve_models_root,
    runpod_mode,
)

pytestmark = pytest.mark.integration  # the provisioner in a subprocess, loopback servers

ROOT = Path(__file__).resolve().parent.parent


def cli(
    env: dict[str, str], *args: str, mounts: dict[str, object] | None = None
) -> subprocess.CompletedProcess[str]:
    """The command, run as a process; with `mounts`, RunPod's mounts in the test's own
    folders (tests/provision_run.py)."""
    base = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")}
    base.update({"PYTHONPATH": str(ROOT), "HF_ENDPOINT": "http://127.0.0.1:9"})
    base.update(env)
    command = [sys.executable, "-m", "wan_worker.provision", *args]
    return subprocess.run(
        command if mounts is None else provision_run.command(*args, mounts=mounts),
        env=base,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_cli_downloads_then_warm_start_is_a_no_op(tmp_path):
    (tmp_path / "cdn").mkdir()
    data = make_blob(tmp_path / "cdn" / "m.bin", 2_000_000)
    with running(FlakyFileServer(tmp_path / "cdn")) as server:
        manifest = write_manifest(
            tmp_path / "m.json",
            [url_model("loras", "m.safetensors", data, f"{server.url}/m.bin")],
        )
        env = {"MODELS_MANIFEST": str(manifest), "MODELS_ROOT": str(tmp_path / "models")}
        first = cli(env)
        second = cli(env)
        assert isinstance(server, FlakyFileServer)
        requests_seen = list(server.methods)
    assert first.returncode == 0, first.stderr
    assert (tmp_path / "models" / "loras" / "m.safetensors").read_bytes() == data
    assert "[provision] loras/m.safetensors: transferred 1.9 MiB" in first.stderr
    assert "1 downloaded" in first.stderr
    assert second.returncode == 0 and "1 already verified, 0 verified now" in second.stderr
    assert requests_seen == ["HEAD", "GET"]  # the warm start asked nothing


def test_cli_exit_codes_name_the_problem(tmp_path):
    bad = cli(
        {"MODELS_MANIFEST": str(tmp_path / "absent.json"), "MODELS_ROOT": str(tmp_path / "m")}
    )
    assert bad.returncode == 2 and "MODELS_MANIFEST" in bad.stderr
    typo = cli({"HF_HUB_OFFLINE": "maybe", "MODELS_ROOT": str(tmp_path / "m")})
    assert typo.returncode == 2
    assert "HF_HUB_OFFLINE='maybe' must be one of" in typo.stderr
    manifest = write_manifest(
        tmp_path / "x.json",
        [
            {
                "folder": "vae",
                "filename": "x.safetensors",
                "sources": [{"type": "r2", "key": "vae/x.safetensors"}],
            },
        ],
    )
    missing = cli(
        {
            "MODELS_MANIFEST": str(manifest),
            "MODELS_ROOT": str(tmp_path / "m"),
            "R2_ACCESS_KEY": "key-id-123",
        }
    )
    assert missing.returncode == 3
    assert "vae/x.safetensors could not be downloaded" in missing.stderr
    assert "R2_ENDPOINT, R2_SECRET_KEY unset" in missing.stderr


def mounts_at(tmp_path: Path, *mounted: Path) -> RunPodMounts:
    """RunPod's mounts in `tmp_path`, with `mounted` counting as mount points."""
    return RunPodMounts(
        network_volume=tmp_path / "rv",
        pod_volume=tmp_path / "ws",
        hf_cache=tmp_path / "rv" / "huggingface-cache" / "hub",
        is_mount=lambda path: path in mounted,
    )


def test_models_root_follows_runpod_mounts(tmp_path):
    volume, workspace, comfy = tmp_path / "rv", tmp_path / "ws", tmp_path / "comfy"
    unmounted, mounted = mounts_at(tmp_path), mounts_at(tmp_path, volume)
    assert resolve_models_root({}, "serverless", comfy, unmounted)[0] == comfy / "models"
    workspace.mkdir()
    assert resolve_models_root({}, "pod", comfy, unmounted)[0] == workspace / "models"
    volume.mkdir()
    assert resolve_models_root({}, "serverless", comfy, mounted)[0] == volume / "models"
    assert resolve_models_root({"MODELS_ROOT": "/m"}, "pod", comfy, mounted)[0] == Path("/m")
    where = {"network_volume": volume, "pod_volume": workspace, "mounted": [volume]}
    printed = cli({"RUNPOD_ENDPOINT_ID": "e1"}, "--print-root", mounts=where)
    assert printed.stdout.strip() == str(volume / "models")
    # RunPod's own places, when no test gives others; os.path.ismount tells a mount point.
    assert ProvisionSettings().hf_cache_dir == Path("/runpod-volume/huggingface-cache/hub")
    assert RunPodMounts().network_volume == Path("/runpod-volume")
    assert RunPodMounts().is_mount(Path("/")) and not RunPodMounts().is_mount(tmp_path)


def test_runpods_model_cache_alone_is_no_network_volume(tmp_path):
    """Cached models without a network volume: RunPod mounts the cache at
    /runpod-volume/huggingface-cache/hub, so /runpod-volume exists but is the container's own
    folder. The models then go to the container disk, and the log says why."""
    volume, comfy = tmp_path / "rv", tmp_path / "comfy"
    (volume / "huggingface-cache" / "hub").mkdir(parents=True)
    root, reason = resolve_models_root({}, "serverless", comfy, mounts_at(tmp_path))
    assert root == comfy / "models"
    assert reason == (
        f"container disk (no network volume mounted; {volume} holds only RunPod's model cache)"
    )
    where = {"network_volume": volume, "pod_volume": tmp_path / "ws"}
    printed = cli(
        {"RUNPOD_ENDPOINT_ID": "e1", "COMFYUI_DIR": str(comfy)}, "--print-root", mounts=where
    )
    assert printed.stdout.strip() == str(comfy / "models")
    # A network volume with the cache inside it: a mount point.
    assert resolve_models_root({}, "serverless", comfy, mounts_at(tmp_path, volume)) == (
        volume / "models",
        f"network volume at {volume}",
    )


def test_a_folder_with_content_where_the_volume_goes_is_no_network_volume(tmp_path):
    """Only a mount point is a network volume: a plain /runpod-volume holding more than RunPod's
    cache (an image that ships the folder, models left on the container's disk) is not, and
    models written there would be lost with the container. MODELS_ROOT still names it."""
    volume, comfy = tmp_path / "rv", tmp_path / "comfy"
    (volume / "huggingface-cache" / "hub").mkdir(parents=True)
    (volume / "models" / "vae").mkdir(parents=True)
    assert resolve_models_root({}, "serverless", comfy, mounts_at(tmp_path)) == (
        comfy / "models",
        f"container disk (no network volume mounted; {volume} is a folder, not a mount point; "
        "set MODELS_ROOT to keep the models there)",
    )
    # The real check, os.path.ismount, on a folder of the test's: not a mount point either.
    real = RunPodMounts(network_volume=volume, pod_volume=tmp_path / "ws")
    assert resolve_models_root({}, "serverless", comfy, real)[0] == comfy / "models"
    named = {"MODELS_ROOT": str(volume / "models")}
    assert resolve_models_root(named, "serverless", comfy, real) == (
        volume / "models",
        "MODELS_ROOT",
    )


def test_the_provisioning_variables_that_went_are_not_read_and_say_so():
    went = [name for name in REMOVED if name.startswith("PROVISION_")]
    went += ["RUNPOD_VOLUME_DIR", "WORKSPACE_DIR", "RUNPOD_HF_CACHE"]
    assert len(went) == 13 and all(REMOVED[name].strip() for name in went)
    var = EnvVars({name: "7" for name in went})
    assert ProvisionSettings.from_env(var) == ProvisionSettings.from_env({})
    assert not set(var.kinds) & set(went)
    # The command says so when one is still set, with what became of it.
    printed = cli({"PROVISION_CONNECTIONS": "16", "MODELS_ROOT": "/m"}, "--print-root")
    assert printed.returncode == 0 and printed.stdout == "/m\n"
    assert (
        "[provision] PROVISION_CONNECTIONS is set but no longer read: each file downloads over "
        "8 connections, a fixed value; unset it"
    ) in printed.stderr


def test_mode_comes_from_runpod_variables():
    assert runpod_mode({"RUNPOD_POD_ID": "p", "RUNPOD_ENDPOINT_ID": "e"}) == "serverless"
    assert runpod_mode({"RUNPOD_POD_ID": "p", "RUNPOD_WEBHOOK_GET_JOB": "u"}) == "serverless"
    assert runpod_mode({"RUNPOD_POD_ID": "p"}) == "pod"
    assert runpod_mode({}) == "local"


def test_settings_defaults_and_r2_names():
    s = ProvisionSettings.from_env(
        {
            "R2_ENDPOINT": "https://x.r2.cloudflarestorage.com",
            "R2_ACCESS_KEY": "a",
            "R2_SECRET_KEY": "topsecret-value-9",
        }
    )
    assert s.r2.configured and s.r2.bucket == "wan-models"
    assert "topsecret-value-9" not in repr(s)
    assert s.connections == 8 and s.max_parallel_files == 3 and s.chunk_bytes == 64 << 20
    fixed = (s.retries, s.backoff_s, s.timeout_s, s.min_free_bytes, s.progress_interval_s)
    assert fixed == (5, 1.0, 60.0, 1 << 30, 10.0)
    assert (s.claim_stale_s, s.wait_s) == (60.0, 1800.0)


def test_pin_manifest_writes_the_verified_size_and_only_checked_sums(tmp_path):
    (tmp_path / "cdn").mkdir()
    data = make_blob(tmp_path / "cdn" / "m.bin", 300_000)
    with running(FlakyFileServer(tmp_path / "cdn")) as server:
        manifest = write_manifest(
            tmp_path / "m.json",
            [
                {
                    "folder": "loras",
                    "filename": "m.safetensors",
                    "size": None,
                    "sha256": None,
                    "notes": ["kept as it is"],
                    "sources": [{"type": "url", "url": f"{server.url}/m.bin"}],
                },
            ],
        )
        env = {"MODELS_MANIFEST": str(manifest), "MODELS_ROOT": str(tmp_path / "models")}
        done = cli(env, "--pin-manifest")
    assert done.returncode == 0, done.stderr
    entry = json.loads(manifest.read_text())["models"][0]
    assert entry["size"] == len(data)
    assert entry["notes"] == ["kept as it is"]
    # A plain URL publishes no sha256: the sum was computed, not checked, so it is not pinned.
    assert entry["sha256"] is None
    assert f"pinned size {len(data)}" in done.stderr
    assert "was computed but not checked against a published value; not pinned" in done.stderr
    assert hashlib.sha256(data).hexdigest() in done.stderr


PIN_LOOP = """
import sys
from pathlib import Path
from wan_worker.provision.__main__ import pin_manifest
from wan_worker.settings.provisioning import ProvisionSettings
settings = ProvisionSettings(manifest_path=Path(sys.argv[1]), models_root=Path(sys.argv[2]))
for _ in range(int(sys.argv[3])):
    pin_manifest(settings)
"""


def test_two_processes_pinning_one_manifest_at_once_both_succeed(tmp_path):
    """Each write goes to a temporary name of its own: with one fixed `.tmp` name, one process
    renamed the other's file away and the other's rename then failed (or renamed a half-written
    file into place)."""
    root = tmp_path / "models"
    data = make_blob(root / "loras" / "m.safetensors", 1000)
    digest = hashlib.sha256(data).hexdigest()
    verify.write_marker(
        root, "loras/m.safetensors", root / "loras" / "m.safetensors", size=len(data),
        sha256=digest, sha256_checked=True, source="test",
    )  # fmt: skip
    entry = {"folder": "loras", "filename": "m.safetensors", "size": None, "sha256": None}
    manifest = write_manifest(tmp_path / "m.json", [{**entry, "sources": [{"type": "url",
                              "url": "http://127.0.0.1:9/m.bin"}]}])  # fmt: skip
    manifest.chmod(0o644)
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")}
    env["PYTHONPATH"] = str(ROOT)
    pinning = [
        subprocess.Popen(
            [sys.executable, "-c", PIN_LOOP, str(manifest), str(root), "150"],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outcomes = [(p.wait(timeout=120), p.communicate()[1]) for p in pinning]
    assert [code for code, _ in outcomes] == [0, 0], outcomes[0][1][-2000:] + outcomes[1][1][-2000:]
    pinned = json.loads(manifest.read_text())["models"][0]
    assert (pinned["size"], pinned["sha256"]) == (len(data), digest)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "models"]  # no temporary left
    assert manifest.stat().st_mode & 0o777 == 0o644
