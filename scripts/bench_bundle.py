"""Boot time of `python -m wan_worker.provision` when the models come from RunPod's cache.

A cache laid out as huggingface_hub lays it out (`models--ORG--NAME/snapshots/REV/<folder>/<file>`
linking to `blobs/<sha256>`) holds a models bundle of the real models' sizes (38.0 GB, sparse
files: the sizes are real, the blocks are not, and nothing reads them). Each run starts from an
empty models root, as a fresh worker on the container disk does, with MODELS_BUNDLE_REPO set
and the Hub unreachable; interpreter start included. Then the same with the markers in place
(a later boot of the same worker). The command runs through tests/provision_run.py, which points
it at the bench's cache instead of RunPod's place for it.

    python scripts/bench_bundle.py --runs 5
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests import provision_run  # noqa: E402

REPO = "bench/wan-bundle"
REVISION = "b" * 40
SIZES = {  # the six models of the manifest, as scripts/bench_provision.py stands them in
    "diffusion_models/high.safetensors": 14_300_000_000,
    "diffusion_models/low.safetensors": 14_300_000_000,
    "text_encoders/umt5.safetensors": 6_740_000_000,
    "loras/lightx2v.safetensors": 2_400_000_000,
    "vae/wan2.1_vae.safetensors": 253_815_318,
    "rife/rife47.pth": 21_000_000,
}


def make_cache(cache: Path) -> Path:
    repo = cache / ("models--" + REPO.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(REVISION)
    (repo / "blobs").mkdir()
    models = []
    for index, (relpath, size) in enumerate(SIZES.items()):
        sha = f"{index + 1:064x}"
        with (repo / "blobs" / sha).open("wb") as blob:
            blob.truncate(size)
        entry = repo / "snapshots" / REVISION / relpath
        entry.parent.mkdir(parents=True, exist_ok=True)
        entry.symlink_to(Path("../../..") / "blobs" / sha)
        folder, name = relpath.split("/")
        models.append(
            {
                "folder": folder,
                "filename": name,
                "size": size,
                "sha256": None,
                "sources": [{"type": "url", "url": "http://127.0.0.1:9/unreachable"}],
            }
        )
    manifest = cache.parent / "manifest.json"
    manifest.write_text(json.dumps({"models": models}))
    return manifest


def timed(env: dict[str, str], command: list[str]) -> float:
    started = time.monotonic()
    subprocess.run(command, env=env, check=True, capture_output=True)
    return time.monotonic() - started


def spread(times: list[float]) -> str:
    return f"min {min(times):.2f}s, median {statistics.median(times):.2f}s, max {max(times):.2f}s"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-bundle-"))
    try:
        cache = work / "hf-cache" / "hub"
        manifest = make_cache(cache)
        models_root = work / "models"
        env = dict(
            os.environ,
            PYTHONPATH=str(ROOT),
            MODELS_MANIFEST=str(manifest),
            MODELS_ROOT=str(models_root),
            MODELS_BUNDLE_REPO=REPO,
            HF_ENDPOINT="http://127.0.0.1:9",
        )
        # RunPod's cache where the bench made it, not at /runpod-volume/huggingface-cache/hub.
        command = provision_run.command(mounts={"hf_cache": cache})
        cold, warm = [], []
        for _ in range(args.runs):
            shutil.rmtree(models_root, ignore_errors=True)
            cold.append(timed(env, command))
            warm.append(timed(env, command))
        links = sum(1 for p in models_root.rglob("*") if p.is_symlink())
        gb = sum(SIZES.values()) / 1e9
        print(f"{gb:.1f} GB bundle in RunPod's cache, {args.runs} runs, interpreter included:")
        print(f"  fresh models root (links made, markers written): {spread(cold)}")
        print(f"  markers in place (a later boot):                 {spread(warm)}")
        print(f"  {links} links in the models root, 0 bytes copied")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
