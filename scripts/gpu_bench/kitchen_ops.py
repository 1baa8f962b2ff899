"""comfy-kitchen's ops that the Wan experts reach, timed per backend at the workflow's shapes.

Under the image's cu128 torch ComfyUI 0.33 disables comfy-kitchen's ``cuda`` backend, so these
ops run in eager torch, or in comfy-kitchen's Triton kernels with ``--enable-triton-backend``.
This times each op on each backend (eager, triton, and cuda where the host's torch keeps it) on
the shapes of one 720x1280 / 480x832 job (81 frames; Wan 2.2 A14B: 40 heads x 128, dim 5120,
FFN 13824), and reports per op and backend:

- the first call's wall time (for Triton: the kernel compile, or its load from TRITON_CACHE_DIR);
- the median of ``--repeats`` timed calls (CUDA events) after it;
- the largest absolute difference from the eager result, and whether it is bit-identical.

The ops: ``apply_rope1`` (the Wan attention's RoPE, on q and k of every block), and the fp8
per-tensor ``dequantize`` / ``quantize`` of the expert's fp8 linear weights and activations.
Run twice with the same empty TRITON_CACHE_DIR to see the compile cost with an empty and with a
warm cache::

    TRITON_CACHE_DIR=$(mktemp -d) python scripts/gpu_bench/kitchen_ops.py --json ops.json

Needs a CUDA GPU, torch, triton and comfy_kitchen; the shape arithmetic runs anywhere.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HEADS, HEAD_DIM, DIM, FFN = 40, 128, 5120, 13824  # Wan 2.2 A14B
VAE_STRIDE_T, VAE_STRIDE_S, PATCH_S = 4, 8, 2


def tokens(width: int, height: int, frames: int = 81) -> int:
    """The transformer's sequence length for one video: latent frames x latent patches."""
    latent_frames = 1 + (frames - 1) // VAE_STRIDE_T
    per_side = VAE_STRIDE_S * PATCH_S
    return latent_frames * (height // per_side) * (width // per_side)


def parse_size(text: str) -> tuple[int, int]:
    width, height = (int(v) for v in text.lower().split("x"))
    return width, height


def cache_files(folder: str | None) -> int | None:
    if not folder:
        return None
    path = Path(folder)
    return sum(1 for p in path.rglob("*") if p.is_file()) if path.is_dir() else 0


def time_calls(
    fn: Callable[..., Any], kwargs: dict[str, Any], repeats: int
) -> tuple[float, float, Any]:
    """(first call's wall ms, median ms of `repeats` timed calls, the first result)."""
    import torch

    torch.cuda.synchronize()
    started = time.perf_counter()
    result = fn(**kwargs)
    torch.cuda.synchronize()
    first_ms = (time.perf_counter() - started) * 1000
    times = []
    for _ in range(repeats):
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record()
        fn(**kwargs)
        end.record()
        end.synchronize()
        times.append(begin.elapsed_time(end))
    return first_ms, statistics.median(times), result


def op_inputs(width: int, height: int, frames: int) -> dict[str, dict[str, Any]]:
    """Each op's keyword arguments at this size, on the GPU."""
    import torch

    gen = torch.Generator(device="cuda").manual_seed(0)
    length = tokens(width, height, frames)
    x = torch.randn(1, length, HEADS, HEAD_DIM, device="cuda", dtype=torch.bfloat16, generator=gen)
    angles = torch.rand(1, length, 1, HEAD_DIM // 2, device="cuda", generator=gen) * 6.2832
    cos, sin = torch.cos(angles), torch.sin(angles)
    # (..., head_dim // 2, 2, 2): the rotation matrix of each pair, as Wan's rope() builds it
    freqs = torch.stack([cos, -sin, sin, cos], dim=-1).reshape(*angles.shape, 2, 2)
    scale = torch.tensor(0.02, device="cuda", dtype=torch.float32)
    weight = (torch.randn(FFN, DIM, device="cuda", generator=gen) * 20).to(torch.float8_e4m3fn)
    activation = torch.randn(length, DIM, device="cuda", dtype=torch.bfloat16, generator=gen)
    return {
        "apply_rope1": {"x": x, "freqs_cis": freqs},
        "dequantize_per_tensor_fp8": {
            "x": weight,
            "scale": scale,
            "output_type": torch.bfloat16,
        },
        "quantize_per_tensor_fp8": {
            "x": activation,
            "scale": scale,
            "output_type": torch.float8_e4m3fn,
        },
    }


def measure(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from comfy_kitchen.registry import registry

    cache = os.environ.get("TRITON_CACHE_DIR")
    out: dict[str, Any] = {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "gpu": torch.cuda.get_device_name(0),
        "triton_cache_dir": cache,
        "triton_cache_files_before": cache_files(cache),
        "backends": {k: v["available"] for k, v in registry.list_backends().items()},
        "sizes": {},
    }
    try:
        import triton

        out["triton"] = triton.__version__
    except ImportError:
        out["triton"] = None
    for width, height in args.sizes:
        label = f"{width}x{height}"
        inputs = op_inputs(width, height, args.frames)
        rows: dict[str, Any] = {"tokens": tokens(width, height, args.frames), "ops": {}}
        for op, kwargs in inputs.items():
            reference = None
            per_backend: dict[str, Any] = {}
            for backend in args.backends:
                try:
                    impl = registry.get_implementation(op, backend=backend, kwargs=kwargs)
                    first_ms, median_ms, result = time_calls(impl, kwargs, args.repeats)
                except Exception as exc:  # reported in the table, not raised
                    per_backend[backend] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
                    continue
                row: dict[str, Any] = {
                    "first_call_ms": round(first_ms, 2),
                    "median_ms": round(median_ms, 4),
                }
                if reference is None:
                    reference = result.float()
                    row["vs_first_max_abs"] = 0.0
                    row["bit_identical"] = True
                else:
                    diff = (result.float() - reference).abs()
                    row["vs_first_max_abs"] = float(diff.max())
                    row["vs_first_mean_abs"] = float(diff.mean())
                    row["bit_identical"] = bool(torch.equal(result.float(), reference))
                per_backend[backend] = row
                del result
            rows["ops"][op] = per_backend
            del reference
        out["sizes"][label] = rows
        del inputs
        torch.cuda.empty_cache()
    out["triton_cache_files_after"] = cache_files(cache)
    return out


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"{result['gpu']}, torch {result['torch']} (CUDA {result['cuda']}), triton "
        f"{result['triton']}, TRITON_CACHE_DIR files {result['triton_cache_files_before']} -> "
        f"{result['triton_cache_files_after']}",
        "",
        "| size | tokens | op | backend | first call ms | median ms | max abs vs first backend "
        "| bit-identical |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for size, rows in result["sizes"].items():
        for op, backends in rows["ops"].items():
            for backend, row in backends.items():
                if "error" in row:
                    lines.append(f"| {size} | {rows['tokens']} | {op} | {backend} | "
                                 f"{row['error'][:80]} | | | |")  # fmt: skip
                    continue
                lines.append(
                    f"| {size} | {rows['tokens']} | {op} | {backend} | {row['first_call_ms']} | "
                    f"{row['median_ms']} | {row['vs_first_max_abs']:.3g} | "
                    f"{'yes' if row['bit_identical'] else 'no'} |"
                )
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--sizes",
        type=lambda s: [parse_size(x) for x in s.split(",")],
        default=[(720, 1280), (480, 832)],
    )
    parser.add_argument("--frames", type=int, default=81)
    parser.add_argument(
        "--backends",
        type=lambda s: s.split(","),
        default=["eager", "triton", "cuda"],
        help="in order; the first is the reference for the differences (eager)",
    )
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--json", type=Path)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = measure(args)
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=1), encoding="utf-8")
    print(markdown(result), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
