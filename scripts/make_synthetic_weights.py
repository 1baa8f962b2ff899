"""Write random-weight model files that ComfyUI 0.33 loads under the workflow's filenames.

The files let the fixed workflow run end to end without the real checkpoints: contract tests
on a CPU (``--size tiny``) and timing runs on a GPU with full-size tensors (``--size full``).
Names come from ``workflows/models.json`` (folder + filename). Keys and shapes are read off
ComfyUI's own model classes, built on the ``meta`` device from the checkout given by
``--comfyui-dir``, so they match what that ComfyUI expects by construction.

What is written (under ``--models-root``):

* ``diffusion_models/``: two Wan2.2 I2V experts (patch-embedding in_dim 36, no image
  embedding), block linears as FP8 e4m3 in ComfyUI's scaled-fp8 layout
  (``<layer>.scale_weight`` + a ``scaled_fp8`` marker). tiny: dim 256, 2 blocks;
  full: the A14B shape (dim 5120, 40 blocks, ffn 13824).
* ``loras/``: a lightx2v-style LoRA (``diffusion_model.<layer>.lora_up/lora_down/alpha``) for
  every block linear of that Wan model. tiny: rank 4; full: rank 128.
* ``text_encoders/``: a full-size umt5-xxl (its config is fixed in ComfyUI), FP8 block
  linears, carrying a ``spiece_model`` tensor: a SentencePiece model trained here on a small
  built-in corpus (pad 0, eos 1, unk 2, byte fallback).
* ``vae/``: a Wan 2.1 VAE. tiny: dim 16; full: dim 96 (the real size).
* ``rife/rife47.pth``: an ``IFNet(arch_ver="4.7")`` state dict, linked into the
  Frame-Interpolation node's ``ckpts/rife/`` so the node never downloads.

Values are normal * 1/sqrt(fan_in) (norms 1, biases 0, modulations 0.02) so activations stay
finite. Tensors are generated and written one chunk at a time, so memory stays bounded even
for the 14B experts. A file whose size and header already match is left alone.

Usage::

    python scripts/make_synthetic_weights.py --size tiny --models-root DIR --comfyui-dir DIR

torch, sentencepiece and ComfyUI are imported only when the script runs, from the Python
environment that runs ComfyUI.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import io
import json
import math
import os
import struct
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MANIFEST = REPO_ROOT / "workflows" / "models.json"
RIFE_NODE_CKPT_DIR = Path("custom_nodes/ComfyUI-Frame-Interpolation/ckpts/rife")
RIFE_NODE_ARCH = Path("custom_nodes/ComfyUI-Frame-Interpolation/vfi_models/rife/rife_arch.py")

CHUNK_ELEMENTS = 1 << 24
DTYPE_SIZES = {"F8_E4M3": 1, "U8": 1, "BF16": 2, "F16": 2, "F32": 4}
MODULATION_STD = 0.02
EMBEDDING_STD = 1.0

Init = Literal["normal", "const", "raw"]
Size = Literal["tiny", "full"]


@dataclass(frozen=True)
class WanShape:
    """Shape of one Wan2.2 I2V expert and of the LoRA written for it."""

    dim: int
    ffn_dim: int
    num_layers: int
    lora_rank: int
    vae_dim: int


SHAPES: dict[str, WanShape] = {
    "tiny": WanShape(dim=256, ffn_dim=512, num_layers=2, lora_rank=4, vae_dim=16),
    "full": WanShape(dim=5120, ffn_dim=13824, num_layers=40, lora_rank=128, vae_dim=96),
}
WAN_IN_DIM = 36  # 16 noise + 16 image latent + 4 mask channels (Wan2.2 I2V)
WAN_OUT_DIM = 16
WAN_TEXT_DIM = 4096
WAN_FREQ_DIM = 256
WAN_HEAD_DIM = 128

# A small fixed corpus for the SentencePiece model; byte fallback covers every other text.
SPIECE_CORPUS = (
    "A person turns to the camera and smiles, natural motion, cinematic lighting.",
    "A cat walks across a sunny garden, soft wind moves the grass and the flowers.",
    "The camera slowly pans over a city at night with bright lights and moving cars.",
    "A woman in a red dress dances on the beach while waves roll onto the sand.",
    "Close-up portrait, gentle smile, hair moving in the breeze, shallow depth of field.",
    "low quality, blurry, static, overexposed, jpeg artifacts, deformed hands, extra fingers",
    "色调艳丽, 过曝, 静态, 细节模糊不清, 字幕, 风格, 作品, 画作, 画面, 静止, 整体发灰, 最差质量",
    "低质量, JPEG压缩残留, 丑陋的, 残缺的, 多余的手指, 画得不好的手部, 画得不好的脸部",
)
SPIECE_VOCAB_SIZE = 600


class SyntheticWeightsError(Exception):
    """A problem the user can fix: a bad path, a missing dependency, an unknown folder."""


@dataclass(frozen=True)
class TensorSpec:
    """One tensor of a safetensors file: where it goes, its type and how to fill it."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    init: Init
    value: float = 0.0
    raw: bytes = b""

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return len(self.raw) if self.init == "raw" else self.numel * DTYPE_SIZES[self.dtype]


# --------------------------------------------------------------------------------------------
# Streaming safetensors writer
# --------------------------------------------------------------------------------------------


def safetensors_header(specs: list[TensorSpec], metadata: dict[str, str]) -> bytes:
    """The JSON header of a safetensors file holding ``specs`` in order, padded to 8 bytes."""
    header: dict[str, Any] = {"__metadata__": metadata}
    offset = 0
    for spec in specs:
        header[spec.name] = {
            "dtype": spec.dtype,
            "shape": list(spec.shape),
            "data_offsets": [offset, offset + spec.nbytes],
        }
        offset += spec.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    return raw + b" " * (-len(raw) % 8)


def _tensor_seed(seed: int, file_name: str, tensor_name: str) -> int:
    digest = hashlib.sha256(f"{seed}/{file_name}/{tensor_name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def _torch_dtype(code: str) -> torch.dtype:
    import torch

    return {
        "F8_E4M3": torch.float8_e4m3fn,
        "U8": torch.uint8,
        "BF16": torch.bfloat16,
        "F16": torch.float16,
        "F32": torch.float32,
    }[code]


def tensor_chunks(spec: TensorSpec, seed: int, file_name: str) -> Iterator[memoryview]:
    """The bytes of one tensor, at most CHUNK_ELEMENTS elements at a time."""
    if spec.init == "raw":
        yield memoryview(spec.raw)
        return
    import torch

    dtype = _torch_dtype(spec.dtype)
    generator = torch.Generator().manual_seed(_tensor_seed(seed, file_name, spec.name))
    for start in range(0, spec.numel, CHUNK_ELEMENTS):
        count = min(CHUNK_ELEMENTS, spec.numel - start)
        if spec.init == "const":
            chunk = torch.full((count,), spec.value, dtype=torch.float32)
        else:
            chunk = torch.randn(count, generator=generator).mul_(spec.value)
        yield memoryview(chunk.to(dtype).view(torch.uint8).numpy())


def _read_header(path: Path) -> bytes:
    with path.open("rb") as handle:
        prefix = handle.read(8)
        if len(prefix) != 8:
            return b""
        (length,) = struct.unpack("<Q", prefix)
        return handle.read(length)


def write_safetensors(
    path: Path, specs: list[TensorSpec], metadata: dict[str, str], seed: int
) -> bool:
    """Write ``specs`` to ``path``; False when an identical file is already there."""
    header = safetensors_header(specs, metadata)
    expected_size = 8 + len(header) + sum(spec.nbytes for spec in specs)
    if path.is_file() and path.stat().st_size == expected_size and _read_header(path) == header:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    with partial.open("wb") as handle:
        handle.write(struct.pack("<Q", len(header)))
        handle.write(header)
        for spec in specs:
            for chunk in tensor_chunks(spec, seed, path.name):
                handle.write(chunk)
    os.replace(partial, path)
    return True


# --------------------------------------------------------------------------------------------
# Keys and shapes from ComfyUI's own classes
# --------------------------------------------------------------------------------------------


def import_comfyui(comfyui_dir: Path) -> None:
    """Make the ComfyUI checkout importable, on the CPU, without parsing our command line."""
    if not (comfyui_dir / "comfy" / "model_detection.py").is_file():
        raise SyntheticWeightsError(
            f"--comfyui-dir {comfyui_dir} is not a ComfyUI checkout "
            "(comfy/model_detection.py is missing): pass the folder that holds main.py"
        )
    sys.path.insert(0, str(comfyui_dir))
    try:
        import comfy.cli_args

        comfy.cli_args.args.cpu = True  # shapes only: never touch a GPU
        import comfy.ops
    except ImportError as exc:
        raise SyntheticWeightsError(
            f"cannot import ComfyUI from {comfyui_dir}: {exc}. Run this script with the Python "
            "environment that runs ComfyUI (torch, safetensors, sentencepiece installed)"
        ) from exc


def _fan_in(shape: tuple[int, ...]) -> int:
    return math.prod(shape[1:]) if len(shape) > 1 else 1


def specs_from_module(
    module: torch.nn.Module, dtype: str, fp8_prefix: str | None, prefix: str = ""
) -> list[TensorSpec]:
    """Tensor specs for every state-dict entry of ``module`` (built on the meta device).

    Linear weights under ``fp8_prefix`` become FP8 e4m3 with a per-layer ``scale_weight``.
    """
    import torch

    specs: list[TensorSpec] = []
    for key, tensor in module.state_dict(keep_vars=True).items():
        owner_name, _, leaf = key.rpartition(".")
        owner = module.get_submodule(owner_name) if owner_name else module
        shape = tuple(tensor.shape)
        name = prefix + key
        is_linear = isinstance(owner, torch.nn.Linear) and leaf == "weight"
        if is_linear and fp8_prefix is not None and key.startswith(fp8_prefix):
            std = 1.0 / math.sqrt(_fan_in(shape))
            specs.append(TensorSpec(name, shape, "F8_E4M3", "normal", value=1.0))
            specs.append(TensorSpec(f"{prefix}{owner_name}.scale_weight", (), "F32", "const", std))
        elif leaf == "bias":
            specs.append(TensorSpec(name, shape, dtype, "const", 0.0))
        elif leaf == "gamma" or "norm" in owner_name.rpartition(".")[2]:
            specs.append(TensorSpec(name, shape, dtype, "const", 1.0))
        elif "modulation" in leaf:
            specs.append(TensorSpec(name, shape, dtype, "normal", MODULATION_STD))
        elif isinstance(owner, torch.nn.Embedding):
            specs.append(TensorSpec(name, shape, dtype, "normal", EMBEDDING_STD))
        else:
            specs.append(TensorSpec(name, shape, dtype, "normal", 1.0 / math.sqrt(_fan_in(shape))))
    return specs


def build_wan_model(shape: WanShape) -> torch.nn.Module:
    """A Wan2.2 I2V expert exactly as ComfyUI's detection would configure it, on meta."""
    import comfy.ldm.wan.model
    import comfy.ops
    import torch

    with torch.device("meta"):
        return comfy.ldm.wan.model.WanModel(
            model_type="t2v",
            patch_size=(1, 2, 2),
            in_dim=WAN_IN_DIM,
            dim=shape.dim,
            ffn_dim=shape.ffn_dim,
            freq_dim=WAN_FREQ_DIM,
            text_dim=WAN_TEXT_DIM,
            out_dim=WAN_OUT_DIM,
            num_heads=shape.dim // WAN_HEAD_DIM,
            num_layers=shape.num_layers,
            window_size=(-1, -1),
            qk_norm=True,
            cross_attn_norm=True,
            eps=1e-6,
            image_model="wan2.1",
            device="meta",
            operations=comfy.ops.disable_weight_init,
        )


def wan_specs(shape: WanShape) -> list[TensorSpec]:
    specs = specs_from_module(build_wan_model(shape), "BF16", fp8_prefix="blocks.")
    specs.append(TensorSpec("scaled_fp8", (), "F8_E4M3", "const", 0.0))
    return specs


def lora_specs(shape: WanShape) -> list[TensorSpec]:
    """A LoRA on every block linear of the Wan model, keyed ``diffusion_model.<layer>``."""
    import torch

    rank = shape.lora_rank
    specs: list[TensorSpec] = []
    for name, module in build_wan_model(shape).named_modules():
        if not (name.startswith("blocks.") and isinstance(module, torch.nn.Linear)):
            continue
        key = f"diffusion_model.{name}"
        out_features, in_features = module.weight.shape
        down_std = 1.0 / math.sqrt(in_features)
        up_std = 0.1 / math.sqrt(rank)
        specs.append(
            TensorSpec(f"{key}.lora_down.weight", (rank, in_features), "BF16", "normal", down_std)
        )
        specs.append(
            TensorSpec(f"{key}.lora_up.weight", (out_features, rank), "BF16", "normal", up_std)
        )
        specs.append(TensorSpec(f"{key}.alpha", (), "F32", "const", float(rank)))
    return specs


def vae_specs(shape: WanShape) -> list[TensorSpec]:
    """A Wan 2.1 VAE with the config ComfyUI derives from ``decoder.head.0.gamma``."""
    import comfy.ldm.wan.vae
    import torch

    with torch.device("meta"):
        vae = comfy.ldm.wan.vae.WanVAE(
            dim=shape.vae_dim,
            z_dim=16,
            dim_mult=[1, 2, 4, 4],
            num_res_blocks=2,
            attn_scales=[],
            temperal_downsample=[False, True, True],
            image_channels=3,
            conv_out_channels=3,
            dropout=0.0,
        )
    return specs_from_module(vae, "BF16", fp8_prefix=None)


def spiece_model_bytes() -> bytes:
    """A serialized SentencePiece model with umt5's special ids (pad 0, eos 1, unk 2)."""
    try:
        import sentencepiece
    except ImportError as exc:
        raise SyntheticWeightsError("sentencepiece is not installed: pip install it") from exc
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(SPIECE_CORPUS * 4),
        model_writer=model,
        vocab_size=SPIECE_VOCAB_SIZE,
        hard_vocab_limit=False,
        model_type="unigram",
        character_coverage=1.0,
        byte_fallback=True,
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        num_threads=1,
        minloglevel=2,
    )
    return model.getvalue()


def umt5_specs() -> list[TensorSpec]:
    """ComfyUI's umt5-xxl text encoder (fixed config), FP8 block linears, plus the tokenizer."""
    import comfy.ops
    import comfy.text_encoders.t5
    import torch

    config_path = Path(comfy.text_encoders.t5.__file__).parent / "umt5_config_xxl.json"
    config = json.loads(config_path.read_text())
    with torch.device("meta"):
        model = comfy.text_encoders.t5.T5(config, None, "meta", comfy.ops.disable_weight_init)
    specs = specs_from_module(model, "BF16", fp8_prefix="encoder.block.")
    specs.append(TensorSpec("scaled_fp8", (), "F8_E4M3", "const", 0.0))
    spiece = spiece_model_bytes()
    specs.append(TensorSpec("spiece_model", (len(spiece),), "U8", "raw", raw=spiece))
    return specs


def rife_state_bytes(comfyui_dir: Path, seed: int) -> bytes:
    """``torch.save`` of the Frame-Interpolation node's ``IFNet(arch_ver="4.7")`` state dict."""
    import torch

    arch_path = comfyui_dir / RIFE_NODE_ARCH
    if not arch_path.is_file():
        raise SyntheticWeightsError(
            f"{arch_path} is missing: install ComfyUI-Frame-Interpolation into "
            f"{comfyui_dir / 'custom_nodes'} first"
        )
    spec = importlib.util.spec_from_file_location("synthetic_rife_arch", arch_path)
    if spec is None or spec.loader is None:
        raise SyntheticWeightsError(f"cannot load {arch_path}")
    rife_arch = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rife_arch)
    torch.manual_seed(seed)
    network = rife_arch.IFNet(arch_ver="4.7")
    buffer = io.BytesIO()
    torch.save(network.state_dict(), buffer)
    return buffer.getvalue()


# --------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------


def read_manifest(path: Path) -> list[tuple[str, str]]:
    """(folder, filename) pairs from the model manifest."""
    try:
        entries = json.loads(path.read_text())["models"]
        return [(str(entry["folder"]), str(entry["filename"])) for entry in entries]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SyntheticWeightsError(f"cannot read the model manifest {path}: {exc}") from exc


def link_rife(target: Path, comfyui_dir: Path) -> Path:
    """Point the node's ``ckpts/rife/<name>`` at ``target`` so the node never downloads."""
    link = comfyui_dir / RIFE_NODE_CKPT_DIR / target.name
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.exists():
        if link.resolve() == target.resolve():
            return link
        link.unlink()
    link.symlink_to(target.resolve())
    return link


def report(path: Path, written: bool, started: float) -> None:
    size_gib = path.stat().st_size / 2**30
    state = "wrote" if written else "kept (already complete)"
    print(f"{state:24} {path}  {size_gib:.3f} GiB  {time.monotonic() - started:.1f} s", flush=True)


def make_file(folder: str, path: Path, size: Size, comfyui_dir: Path, seed: int) -> None:
    started = time.monotonic()
    shape = SHAPES[size]
    if folder == "rife":
        data = rife_state_bytes(comfyui_dir, seed)
        written = not (path.is_file() and path.read_bytes() == data)
        if written:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        report(path, written, started)
        if (comfyui_dir / RIFE_NODE_ARCH).is_file():
            print(f"{'linked':24} {link_rife(path, comfyui_dir)} -> {path}", flush=True)
        return
    builders = {
        "diffusion_models": lambda: wan_specs(shape),
        "loras": lambda: lora_specs(shape),
        "text_encoders": umt5_specs,
        "vae": lambda: vae_specs(shape),
    }
    if folder not in builders:
        raise SyntheticWeightsError(
            f"models.json folder {folder!r} has no synthetic generator; "
            f"known folders: {', '.join([*builders, 'rife'])}"
        )
    # The text encoder is the same file for both sizes: keep its header size-free, so
    # switching sizes does not rewrite 6 GiB.
    label = f"seed={seed}" if folder == "text_encoders" else f"size={size}, seed={seed}"
    metadata = {"format": "pt", "synthetic": f"random weights, {label}"}
    written = write_safetensors(path, builders[folder](), metadata, seed)
    report(path, written, started)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=sorted(SHAPES), required=True)
    parser.add_argument("--models-root", type=Path, required=True, help="ComfyUI models folder")
    parser.add_argument("--comfyui-dir", type=Path, required=True, help="ComfyUI checkout")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--manifest", type=Path, default=DEFAULT_MANIFEST)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        manifest = read_manifest(args.manifest)
        comfyui_dir = args.comfyui_dir.resolve()
        import_comfyui(comfyui_dir)
        started = time.monotonic()
        for folder, filename in manifest:
            make_file(
                folder, args.models_root / folder / filename, args.size, comfyui_dir, args.seed
            )
        print(f"done in {time.monotonic() - started:.1f} s", flush=True)
    except SyntheticWeightsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
