#!/usr/bin/env python3
"""Benchmarks for model provisioning; the numbers and this command go in docs/provisioning.md.

1. Aggregate download throughput of the provisioner against `aria2c -x16 -s16 -k1M` (the
   seeds' tool and flags, one aria2c per file, all at once) from the same local nginx.
2. Warm-start check time with 38 GB of cached models: sparse files of the real models' sizes,
   already verified, checked by `python -m wan_worker.provision` (interpreter start included).

Usage: python scripts/bench_provision.py [--files 3] [--mib 1024] [--workdir DIR] [--runs 3]
Needs nginx and aria2c on PATH.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from wan_worker.provision import verify  # noqa: E402
from wan_worker.provision.provisioner import Provisioner  # noqa: E402
from wan_worker.provision.settings import ProvisionSettings  # noqa: E402

# Sizes standing in for the six models (38.0 GB together): two 14B FP8 experts, the FP8
# text encoder, the LoRA, the VAE and RIFE.
WARM_SIZES = {
    "diffusion_models/high.safetensors": 14_300_000_000,
    "diffusion_models/low.safetensors": 14_300_000_000,
    "text_encoders/umt5.safetensors": 6_740_000_000,
    "loras/lightx2v.safetensors": 2_400_000_000,
    "vae/wan2.1_vae.safetensors": 253_815_318,
    "rife/rife47.pth": 21_000_000,
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_nginx(root: Path, work: Path) -> tuple[int, Path]:
    port = free_port()
    conf = work / "nginx.conf"
    user = "user root;\n" if os.geteuid() == 0 else ""
    conf.write_text(
        f"""{user}worker_processes auto;
pid {work}/nginx.pid;
error_log {work}/error.log;
events {{ worker_connections 1024; }}
http {{
  access_log off; sendfile on; tcp_nopush on;
  client_body_temp_path {work}/b; proxy_temp_path {work}/p; fastcgi_temp_path {work}/f;
  uwsgi_temp_path {work}/u; scgi_temp_path {work}/s;
  server {{ listen 127.0.0.1:{port}; root {root}; }}
}}
"""
    )
    subprocess.run(
        ["nginx", "-c", str(conf), "-p", str(work), "-e", str(work / "error.log")], check=True
    )
    return port, conf


def make_sources(root: Path, count: int, mib: int) -> list[Path]:
    files = []
    block = os.urandom(1 << 20)
    for i in range(count):
        path = root / f"model{i}.bin"
        with path.open("wb") as f:
            for j in range(mib):
                f.write(block[j % 7 :] + block[: j % 7])
        files.append(path)
    return files


def bench_aria2(port: int, files: list[Path], out: Path) -> float:
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    started = time.monotonic()
    procs = [
        subprocess.Popen(
            [
                "aria2c",
                "-x",
                "16",
                "-s",
                "16",
                "-k",
                "1M",
                "--quiet",
                "--allow-overwrite=true",
                "--file-allocation=none",
                "-d",
                str(out),
                "-o",
                f.name,
                f"http://127.0.0.1:{port}/{f.name}",
            ]
        )
        for f in files
    ]
    for p in procs:
        if p.wait() != 0:
            raise SystemExit("aria2c failed")
    return time.monotonic() - started


def bench_provisioner(port: int, files: list[Path], work: Path) -> tuple[float, float]:
    """(seconds until the last transfer finished, seconds including sha256 and markers)."""
    models_root = work / "models"
    shutil.rmtree(models_root, ignore_errors=True)
    manifest = work / "manifest.json"
    models = [
        {
            "folder": "bench",
            "filename": f.name,
            "size": f.stat().st_size,
            "sha256": None,
            "sources": [{"type": "url", "url": f"http://127.0.0.1:{port}/{f.name}"}],
        }
        for f in files
    ]
    manifest.write_text(json.dumps({"models": models}))
    settings = ProvisionSettings.from_env(
        {
            "MODELS_MANIFEST": str(manifest),
            "MODELS_ROOT": str(models_root),
            "PROVISION_PARALLEL_FILES": str(len(files)),
            "PROVISION_MIN_FREE_MB": "0",
        }
    )
    transfers_done: list[float] = []

    def log(line: str) -> None:
        if ": transferred " in line:
            transfers_done.append(time.monotonic())

    started = time.monotonic()
    Provisioner(settings, log=log).run()
    total = time.monotonic() - started
    return max(transfers_done) - started, total


def bench_warm(work: Path, runs: int) -> list[float]:
    models_root = work / "warm-models"
    shutil.rmtree(models_root, ignore_errors=True)
    models = []
    for rel, size in WARM_SIZES.items():
        folder, name = rel.split("/")
        path = models_root / folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as f:
            f.truncate(size)  # sparse: the size is real, the blocks are not
        verify.write_marker(
            models_root,
            rel,
            path,
            size=size,
            sha256="0" * 64,
            sha256_checked=True,
            source="bench",
        )
        models.append(
            {
                "folder": folder,
                "filename": name,
                "size": size,
                "sha256": "0" * 64,
                "sources": [{"type": "url", "url": "http://127.0.0.1:9/unreachable"}],
            }
        )
    manifest = work / "warm.json"
    manifest.write_text(json.dumps({"models": models}))
    env = dict(
        os.environ,
        MODELS_MANIFEST=str(manifest),
        MODELS_ROOT=str(models_root),
        PYTHONPATH=str(ROOT),
    )
    times = []
    for _ in range(runs):
        started = time.monotonic()
        subprocess.run(
            [sys.executable, "-m", "wan_worker.provision"], env=env, check=True, capture_output=True
        )
        times.append(time.monotonic() - started)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=3)
    parser.add_argument("--mib", type=int, default=1024, help="size of each file, MiB")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-provision-"))
    work.mkdir(parents=True, exist_ok=True)
    work.chmod(0o755)
    cdn = work / "cdn"
    cdn.mkdir(exist_ok=True)
    nginx_work = work / "nginx"
    nginx_work.mkdir(exist_ok=True)
    files = make_sources(cdn, args.files, args.mib)
    total = sum(f.stat().st_size for f in files)
    port, conf = start_nginx(cdn, nginx_work)
    try:
        rows = []
        for run in range(args.runs):
            aria = bench_aria2(port, files, work / "aria2-out")
            shutil.rmtree(work / "aria2-out")
            ours, ours_total = bench_provisioner(port, files, work)
            rows.append((aria, ours, ours_total))
            print(
                f"run {run + 1}: aria2c {total / aria / 2**20:.0f} MiB/s, provisioner "
                f"{total / ours / 2**20:.0f} MiB/s (transfers), "
                f"{total / ours_total / 2**20:.0f} MiB/s (with sha256 + markers)"
            )
        aria = statistics.median(r[0] for r in rows)
        ours = statistics.median(r[1] for r in rows)
        ours_total = statistics.median(r[2] for r in rows)
        print(f"median over {args.runs} runs, {args.files} x {args.mib} MiB:")
        print(f"  aria2c -x16 -s16 -k1M: {total / aria / 2**20:.0f} MiB/s ({aria:.2f}s)")
        print(
            f"  provisioner transfers: {total / ours / 2**20:.0f} MiB/s ({ours:.2f}s), "
            f"ratio {aria / ours:.2f}x"
        )
        print(
            f"  provisioner incl. sha256 + markers: {total / ours_total / 2**20:.0f} MiB/s "
            f"({ours_total:.2f}s)"
        )
    finally:
        subprocess.run(["nginx", "-c", str(conf), "-p", str(nginx_work), "-s", "stop"], check=False)
    warm = bench_warm(work, args.runs)
    gb = sum(WARM_SIZES.values()) / 1e9
    print(
        f"warm start, {gb:.1f} GB of verified models (sparse), `python -m wan_worker.provision`:"
        f" median {statistics.median(warm):.2f}s, max {max(warm):.2f}s over {args.runs} runs"
    )
    shutil.rmtree(work / "models", ignore_errors=True)
    shutil.rmtree(work / "warm-models", ignore_errors=True)
    shutil.rmtree(cdn, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
