"""The image's wheels as the index serves them, read without downloading them.

uv resolves the pinned packages for the image's target (Python 3.12, x86-64 manylinux 2.39) into
a PEP 751 pylock.toml that names each wheel it would install, with its size. A wheel's zip
central directory, a few HTTP range requests at its end, gives its unpacked size and its METADATA.

    python docker/wheels.py sizes [--uv UV]

prints, per image layer, the download (compressed) and unpacked size of its wheels: the
estimate docs/image.md records. tests/test_requirements_resolve.py uses the same reader to build
stand-in wheels with the real metadata.

Standard library only; needs uv and the index.
"""

from __future__ import annotations

import argparse
import io
import json
import re
import shutil
import subprocess
import tempfile
import time
import tomllib
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

DOCKER = Path(__file__).resolve().parent
VERSIONS = json.loads((DOCKER / "versions.json").read_text())
INDEX_URL = "https://pypi.org/simple"
PLATFORM = "x86_64-manylinux_2_39"  # Ubuntu 24.04's glibc
TARGET = ["--python-version", VERSIONS["python"], "--python-platform", PLATFORM]
TAIL_BYTES = 256 * 1024
MIN_RANGE = 64 * 1024
ATTEMPTS = 4
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)")


@dataclass(frozen=True)
class Wheel:
    name: str
    version: str
    url: str
    size: int

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]

    @property
    def build(self) -> int:
        """The wheel's build tag (PEP 427), 0 when it has none: torch-2.10.0-3-cp312-... -> 3."""
        parts = self.filename[: -len(".whl")].split("-")
        return int(re.match(r"\d*", parts[2]).group() or 0) if len(parts) == 6 else 0


class RangeFile(io.RawIOBase):
    """A read-only, seekable view of a remote file, read with HTTP range requests."""

    def __init__(self, url: str, size: int, timeout: float = 60.0) -> None:
        self.url, self.size, self.timeout = url, size, timeout
        self.position = 0
        self.chunks: list[tuple[int, bytes]] = []

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.size}[whence]
        self.position = max(0, base + offset)
        return self.position

    def fetch(self, start: int, end: int) -> bytes:
        if not self.url.startswith("https://"):
            raise OSError(f"not an https URL: {self.url}")
        headers = {"Range": f"bytes={start}-{end - 1}"}
        request = urllib.request.Request(self.url, headers=headers)  # noqa: S310 - https only
        for attempt in range(ATTEMPTS):
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as reply:  # noqa: S310
                    if reply.status != 206:
                        raise OSError(f"{self.url} ignored a range request (HTTP {reply.status})")
                    return reply.read()
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if attempt == ATTEMPTS - 1:
                    raise
                time.sleep(2**attempt)  # a transient network failure: back off and retry
        raise AssertionError("unreachable")

    def cached(self, start: int, end: int) -> bytes | None:
        for chunk_start, data in self.chunks:
            if chunk_start <= start and end <= chunk_start + len(data):
                return data[start - chunk_start : end - chunk_start]
        return None

    def read(self, size: int = -1) -> bytes:
        end = self.size if size < 0 else min(self.size, self.position + size)
        if end <= self.position:
            return b""
        data = self.cached(self.position, end)
        if data is None:
            if not self.chunks:  # the first read: the end holds the central directory
                start = max(0, min(self.position, self.size - TAIL_BYTES))
                stop = self.size
            else:
                start, stop = self.position, min(self.size, max(end, self.position + MIN_RANGE))
            fetched = self.fetch(start, stop)
            self.chunks.append((start, fetched))
            data = fetched[self.position - start : end - start]
        self.position = end
        return data

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


@dataclass(frozen=True)
class WheelFacts:
    wheel: Wheel
    unpacked: int  # bytes of the files the wheel installs
    python_source: int  # bytes of its .py files (bytecode is compiled from them at install)
    metadata: bytes  # its .dist-info/METADATA


def read_facts(wheel: Wheel) -> WheelFacts:
    with zipfile.ZipFile(RangeFile(wheel.url, wheel.size)) as archive:
        infos = archive.infolist()
        metadata_name = next(
            i.filename
            for i in infos
            if i.filename.count("/") == 1 and i.filename.endswith(".dist-info/METADATA")
        )
        return WheelFacts(
            wheel=wheel,
            unpacked=sum(i.file_size for i in infos),
            python_source=sum(i.file_size for i in infos if i.filename.endswith(".py")),
            metadata=archive.read(metadata_name),
        )


def read_all(wheels: Iterable[Wheel], workers: int = 8) -> list[WheelFacts]:
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(read_facts, wheels))


def pinned_requirements(paths: Iterable[Path]) -> list[str]:
    """Every `name==version` line of the given lock or requirement files, once."""
    pins: dict[str, str] = {}
    for path in paths:
        for line in path.read_text().splitlines():
            match = PIN.match(line.strip())
            if match:
                pins.setdefault(match.group(1).lower(), match.group(0))
    return sorted(pins.values())


def resolve(uv: str, requirements: Iterable[str], index_url: str = INDEX_URL) -> list[Wheel]:
    """Every wheel, for the image's target, of the pinned requirements given (no dependencies).

    A package may offer several wheels the target accepts (torch 2.10.0 has a rebuild with
    build tag 3): all are returned, the installer picks one.
    """
    with tempfile.TemporaryDirectory() as tmp:
        inputs = Path(tmp) / "requirements.txt"
        inputs.write_text("\n".join(requirements) + "\n")
        output = Path(tmp) / "pylock.toml"
        command = [
            uv, "pip", "compile", "--quiet", "--no-config", "--no-deps", "--only-binary", ":all:",
            "--index-url", index_url, *TARGET, "--format", "pylock.toml",
            "-o", str(output), str(inputs),
        ]  # fmt: skip
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"uv could not resolve the pinned wheels:\n{result.stderr}")
        lock = tomllib.loads(output.read_text())
    return [
        Wheel(package["name"], package["version"], wheel["url"], int(wheel["size"]))
        for package in lock["packages"]
        for wheel in package.get("wheels", [])
    ]


def preferred(wheels: Iterable[Wheel]) -> list[Wheel]:
    """One wheel per package: the highest build tag, as installers choose between rebuilds."""
    best: dict[str, Wheel] = {}
    for wheel in wheels:
        if wheel.name not in best or wheel.build > best[wheel.name].build:
            best[wheel.name] = wheel
    return sorted(best.values(), key=lambda w: w.name)


# ------------------------------------------------------------------ sizes (docs/image.md)

MB = 1_000_000
# Bytecode: uv compiles every .py at install (UV_COMPILE_BYTECODE=1). Measured on a Python
# 3.12 environment holding the image's package set (docs/image.md): 320 MB of .py compiled to
# 381 MB of .pyc, which gzip to 0.38 of their size.
PYC_PER_SOURCE = 1.19
PYC_COMPRESSION = 0.38
CUDA_WHEELS = re.compile(r"^nvidia-.*-cu12$")


def layer_sizes(facts: list[WheelFacts]) -> tuple[float, float]:
    """(compressed, unpacked) MB of a layer holding these wheels, installed and compiled."""
    pyc = sum(f.python_source for f in facts) * PYC_PER_SOURCE
    compressed = sum(f.wheel.size for f in facts) + pyc * PYC_COMPRESSION
    unpacked = sum(f.unpacked for f in facts) + pyc
    return compressed / MB, unpacked / MB


def sizes(uv: str) -> str:
    lines = ["| layer | wheels | download (compressed), MB | unpacked, MB |", "|---|---|---|---|"]
    total_compressed = total_unpacked = 0.0
    for label, lock in (
        ("torch stack (`docker/torch.lock`)", DOCKER / "torch.lock"),
        ("ComfyUI, nodes, worker (`docker/requirements.lock`)", DOCKER / "requirements.lock"),
    ):
        facts = read_all(preferred(resolve(uv, pinned_requirements([lock]))))
        compressed, unpacked = layer_sizes(facts)
        total_compressed += compressed
        total_unpacked += unpacked
        lines.append(f"| {label} | {len(facts)} | {compressed:,.0f} | {unpacked:,.0f} |")
        cuda = [f for f in facts if CUDA_WHEELS.match(f.wheel.name)]
        if cuda:
            cuda_compressed, cuda_unpacked = layer_sizes(cuda)
            lines.append(
                f"| &nbsp;&nbsp;of which the CUDA libraries (`nvidia-*-cu12`) | {len(cuda)} | "
                f"{cuda_compressed:,.0f} | {cuda_unpacked:,.0f} |"
            )
        for fact in sorted(facts, key=lambda f: -f.wheel.size)[:5]:
            lines.append(
                f"| &nbsp;&nbsp;{fact.wheel.name} {fact.wheel.version} | | "
                f"{fact.wheel.size / MB:,.0f} | {fact.unpacked / MB:,.0f} |"
            )
    lines.append(f"| all wheels | | {total_compressed:,.0f} | {total_unpacked:,.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["sizes"])
    parser.add_argument("--uv", default=shutil.which("uv") or "uv")
    args = parser.parse_args(argv)
    print(sizes(args.uv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
