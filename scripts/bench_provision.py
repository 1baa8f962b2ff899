#!/usr/bin/env python3
"""Benchmarks for model provisioning; the numbers and this command go in docs/performance.md.

1. A boot's download against `aria2c -x16 -s16 -k1M` (the seeds' tool and flags, one aria2c
   per file, all at once) from the same local nginx. Every run starts a fresh
   `python -m wan_worker.provision` process, as a boot does, and times it whole: interpreter
   start, imports, transfers, the sha256 of every file and the markers. aria2c is timed the same
   way (it verifies nothing). The two alternate which goes first. Before each, the previous
   outputs are deleted, a file of the download's size is written and deleted (`settle`: in a
   VM, what ran before decides whether page-cache memory is warm; `--no-prime` skips it) and
   `sync` runs, so neither pays for the other. Each run gives a pair ratio, aria2c's seconds /
   the provisioner's (above 1: the provisioner is faster); min, median and max are printed
   for both and for the ratio.
2. Warm-start check time with 38 GB of cached models: sparse files of the real models' sizes,
   already verified, checked by `python -m wan_worker.provision` (interpreter start included).

Usage: python scripts/bench_provision.py [--files 3] [--mib 512] [--runs 7] [--workdir DIR]
       [--no-prime]
The provisioner downloads three files at once, its fixed value: with more `--files`, the rest
wait their turn, as at a boot.
Needs nginx and aria2c on PATH.
"""

from __future__ import annotations

import argparse
import json
import os
import re
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
    os.sync()  # written back now, not during the first timed run
    return files


def settle(work: Path, outputs: tuple[Path, ...], prime_bytes: int) -> None:
    """Put the machine in the same state before every timed command: earlier outputs deleted,
    the disk idle, and as much page-cache memory as the download needs recently used and free.

    The last point matters in a VM (this bench's machine): memory the guest has not touched
    for a while costs the host a fault per page on first use. aria2c writes in small pieces;
    the memory it frees cannot hold the large page-cache folios that 4 MiB writes get, so
    whatever downloads right after aria2c writes into cold memory, at a fraction of the speed
    (a plain `dd bs=4M` too). Writing and deleting a file of the download's size first makes
    every run start from memory that was just in use."""
    for out in outputs:
        shutil.rmtree(out, ignore_errors=True)
    primer = work / "primer"
    block = bytes(4 << 20)
    with primer.open("wb") as f:
        for _ in range(0, prime_bytes, len(block)):
            f.write(block)
    primer.unlink()  # its pages are dropped unwritten
    os.sync()


def bench_aria2(port: int, files: list[Path], out: Path) -> float:
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
    """A fresh `python -m wan_worker.provision` downloading every file: (the process's seconds,
    start to exit; the seconds it reports for its own run, without interpreter start)."""
    models_root = work / "models"
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
    env = dict(
        os.environ,
        MODELS_MANIFEST=str(manifest),
        MODELS_ROOT=str(models_root),
        PYTHONPATH=str(ROOT),
    )
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "wan_worker.provision"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    total = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"provisioner failed:\n{done.stderr}")
    for name in (f.name for f in files):
        if not (models_root / "bench" / name).is_file():
            raise SystemExit(f"provisioner left no bench/{name}:\n{done.stderr}")
    reported = re.search(r"all \d+ models ready in ([0-9.]+)s", done.stderr)
    return total, float(reported.group(1)) if reported else float("nan")


def spread(values: list[float], fmt: str) -> str:
    low, mid, high = min(values), statistics.median(values), max(values)
    return f"median {fmt.format(mid)} (min {fmt.format(low)}, max {fmt.format(high)})"


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


def bench_downloads(
    port: int, files: list[Path], work: Path, outputs: tuple[Path, ...], args: argparse.Namespace
) -> None:
    """aria2c and a fresh provisioner process per run, alternating which goes first."""
    total = sum(f.stat().st_size for f in files)
    mib_s = total / 2**20

    def ready() -> None:
        settle(work, outputs, 0 if args.no_prime else total)

    arias, ours, ratios = [], [], []
    for run in range(args.runs):
        ready()
        if run % 2 == 0:
            aria = bench_aria2(port, files, outputs[0])
            ready()
            mine, inside = bench_provisioner(port, files, work)
        else:
            mine, inside = bench_provisioner(port, files, work)
            ready()
            aria = bench_aria2(port, files, outputs[0])
        arias.append(mib_s / aria)
        ours.append(mib_s / mine)
        ratios.append(aria / mine)
        first = "aria2c" if run % 2 == 0 else "provisioner"
        print(
            f"run {run + 1} ({first} first): aria2c {mib_s / aria:.0f} MiB/s ({aria:.2f}s), "
            f"provisioner {mib_s / mine:.0f} MiB/s ({mine:.2f}s, {inside:.2f}s of it in "
            f"its run), pair ratio {aria / mine:.2f}",
            flush=True,
        )
    primed = "without the memory primer" if args.no_prime else "memory primed before each"
    print(f"{args.runs} runs, {args.files} x {args.mib} MiB, each a fresh process, {primed}:")
    print(f"  aria2c -x16 -s16 -k1M: {spread(arias, '{:.0f}')} MiB/s")
    print(f"  provisioner, sha256 and markers included: {spread(ours, '{:.0f}')} MiB/s")
    print(f"  pair ratio provisioner/aria2c: {spread(ratios, '{:.2f}')}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=3)
    parser.add_argument("--mib", type=int, default=512, help="size of each file, MiB")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument(
        "--no-prime",
        action="store_true",
        help="skip the memory primer between runs (see settle): each tool then starts from "
        "whatever the previous one left",
    )
    parser.add_argument(
        "--warm-only",
        action="store_true",
        help="time only the warm start (already verified models), no downloads",
    )
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-provision-"))
    work.mkdir(parents=True, exist_ok=True)
    work.chmod(0o755)
    cdn = work / "cdn"
    cdn.mkdir(exist_ok=True)
    nginx_work = work / "nginx"
    nginx_work.mkdir(exist_ok=True)
    if not args.warm_only:
        files = make_sources(cdn, args.files, args.mib)
        port, conf = start_nginx(cdn, nginx_work)
        outputs = (work / "aria2-out", work / "models")  # deleted before every timed command
        try:
            bench_downloads(port, files, work, outputs, args)
        finally:
            settle(work, outputs, 0)
            stop = ["nginx", "-c", str(conf), "-p", str(nginx_work), "-s", "stop"]
            subprocess.run(stop, check=False)
    warm = bench_warm(work, args.runs)
    gb = sum(WARM_SIZES.values()) / 1e9
    print(
        f"warm start, {gb:.1f} GB of verified models (sparse), `python -m wan_worker.provision`:"
        f" {spread(warm, '{:.3f}s')} over {args.runs} runs"
    )
    shutil.rmtree(work / "models", ignore_errors=True)
    shutil.rmtree(work / "warm-models", ignore_errors=True)
    shutil.rmtree(cdn, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
