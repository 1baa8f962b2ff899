"""`python -m wan_worker.provision` as start.sh runs it: exit codes, messages, the models root."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from tests.provision_servers import FlakyFileServer, make_blob, running, write_manifest
from wan_worker.settings.provisioning import ProvisionSettings, resolve_models_root, runpod_mode

ROOT = Path(__file__).resolve().parent.parent


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")}
    base.update({"PYTHONPATH": str(ROOT), "HF_ENDPOINT": "http://127.0.0.1:9"})
    base.update(env)
    return subprocess.run(
        [sys.executable, "-m", "wan_worker.provision", *args],
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
            [
                {
                    "folder": "loras",
                    "filename": "m.safetensors",
                    "size": len(data),
                    "sha256": hashlib.sha256(data).hexdigest(),
                    "sources": [{"type": "url", "url": f"{server.url}/m.bin"}],
                },
            ],
        )
        env = {
            "MODELS_MANIFEST": str(manifest),
            "MODELS_ROOT": str(tmp_path / "models"),
            "PROVISION_PROGRESS_S": "0.1",
        }
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
    typo = cli({"PROVISION_CONNECTIONS": "many", "MODELS_ROOT": str(tmp_path / "m")})
    assert typo.returncode == 2
    assert "PROVISION_CONNECTIONS='many' is not a number" in typo.stderr
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


def test_models_root_follows_runpod_mounts(tmp_path):
    volume, workspace, comfy = tmp_path / "rv", tmp_path / "ws", tmp_path / "comfy"
    env = {"RUNPOD_VOLUME_DIR": str(volume), "WORKSPACE_DIR": str(workspace)}
    assert resolve_models_root(env, "serverless", comfy)[0] == comfy / "models"
    workspace.mkdir()
    assert resolve_models_root(env, "pod", comfy)[0] == workspace / "models"
    volume.mkdir()
    assert resolve_models_root(env, "serverless", comfy)[0] == volume / "models"
    assert resolve_models_root({**env, "MODELS_ROOT": "/m"}, "pod", comfy)[0] == Path("/m")
    printed = cli({**env, "RUNPOD_ENDPOINT_ID": "e1"}, "--print-root")
    assert printed.stdout.strip() == str(volume / "models")


def test_runpods_model_cache_alone_is_no_network_volume(tmp_path):
    """Cached models without a network volume: RunPod mounts the cache at
    /runpod-volume/huggingface-cache/hub, so /runpod-volume exists but is the container's own
    folder. The models then go to the container disk, and the log says why."""
    volume, comfy = tmp_path / "rv", tmp_path / "comfy"
    (volume / "huggingface-cache" / "hub").mkdir(parents=True)
    env = {"RUNPOD_VOLUME_DIR": str(volume), "WORKSPACE_DIR": str(tmp_path / "ws")}
    root, reason = resolve_models_root(env, "serverless", comfy)
    assert root == comfy / "models"
    assert reason == (
        f"container disk (no network volume mounted; {volume} holds only RunPod's model cache)"
    )
    printed = cli({**env, "RUNPOD_ENDPOINT_ID": "e1", "COMFYUI_DIR": str(comfy)}, "--print-root")
    assert printed.stdout.strip() == str(comfy / "models")
    # A network volume with the cache inside it holds more than the cache: a volume.
    (volume / "models").mkdir()
    assert resolve_models_root(env, "serverless", comfy) == (
        volume / "models",
        f"network volume at {volume}",
    )


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
