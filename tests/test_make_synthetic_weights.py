"""The synthetic-weights script's torch-free parts: safetensors layout, idempotence, errors.

Generating real tensors needs torch and a ComfyUI checkout, which CI does not have; the file
format and the skip-if-complete logic are plain Python and are checked here on real files.
"""

from __future__ import annotations

import importlib.util
import json
import struct
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "make_synthetic_weights.py"


@pytest.fixture(scope="module")
def synth() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_synthetic_weights", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def read_safetensors(path: Path) -> tuple[dict, bytes]:
    data = path.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + length]), data[8 + length :]


def test_written_file_is_valid_safetensors(synth, tmp_path):
    specs = [
        synth.TensorSpec("spiece_model", (5,), "U8", "raw", raw=b"\x01\x02\x03\x04\x05"),
        synth.TensorSpec("blob", (3,), "U8", "raw", raw=b"abc"),
    ]
    path = tmp_path / "te" / "model.safetensors"

    assert synth.write_safetensors(path, specs, {"format": "pt"}, seed=0) is True

    header, body = read_safetensors(path)
    assert header["__metadata__"] == {"format": "pt"}
    assert header["spiece_model"] == {"dtype": "U8", "shape": [5], "data_offsets": [0, 5]}
    assert header["blob"] == {"dtype": "U8", "shape": [3], "data_offsets": [5, 8]}
    assert body == b"\x01\x02\x03\x04\x05abc"
    header_length = struct.unpack("<Q", path.read_bytes()[:8])[0]
    assert header_length % 8 == 0
    assert not (path.parent / "model.safetensors.partial").exists()


def test_complete_file_is_kept_and_changed_layout_is_rewritten(synth, tmp_path):
    path = tmp_path / "vae.safetensors"
    specs = [synth.TensorSpec("a", (2,), "U8", "raw", raw=b"xy")]
    synth.write_safetensors(path, specs, {}, seed=0)
    first = path.stat().st_mtime_ns

    assert synth.write_safetensors(path, specs, {}, seed=0) is False
    assert path.stat().st_mtime_ns == first

    renamed = [synth.TensorSpec("b", (2,), "U8", "raw", raw=b"xy")]
    assert synth.write_safetensors(path, renamed, {}, seed=0) is True
    header, _ = read_safetensors(path)
    assert "b" in header and "a" not in header


def test_truncated_file_is_rewritten(synth, tmp_path):
    path = tmp_path / "unet.safetensors"
    specs = [synth.TensorSpec("a", (4,), "U8", "raw", raw=b"wxyz")]
    synth.write_safetensors(path, specs, {}, seed=0)
    path.write_bytes(path.read_bytes()[:-2])

    assert synth.write_safetensors(path, specs, {}, seed=0) is True
    assert read_safetensors(path)[1] == b"wxyz"


def test_header_sizes_follow_dtypes(synth):
    specs = [
        synth.TensorSpec("w", (4, 8), "F8_E4M3", "normal", 1.0),
        synth.TensorSpec("w_scale", (), "F32", "const", 0.5),
        synth.TensorSpec("n", (8,), "BF16", "const", 1.0),
    ]
    header = json.loads(synth.safetensors_header(specs, {}))
    assert header["w"]["data_offsets"] == [0, 32]
    assert header["w_scale"]["data_offsets"] == [32, 36]
    assert header["w_scale"]["shape"] == []
    assert header["n"]["data_offsets"] == [36, 52]


def test_bad_comfyui_dir_is_named_in_the_error(synth, tmp_path, capsys):
    status = synth.main(
        ["--size", "tiny", "--models-root", str(tmp_path), "--comfyui-dir", str(tmp_path)]
    )

    assert status == 2
    err = capsys.readouterr().err
    assert "--comfyui-dir" in err and "main.py" in err
    assert list(tmp_path.iterdir()) == []


def test_unreadable_manifest_is_named_in_the_error(synth, tmp_path, capsys):
    manifest = tmp_path / "models.json"
    manifest.write_text('{"models": [{"folder": "vae"}]}')

    status = synth.main(
        [
            "--size",
            "tiny",
            "--models-root",
            str(tmp_path),
            "--comfyui-dir",
            str(tmp_path),
            "--manifest",
            str(manifest),
        ]
    )

    assert status == 2
    assert str(manifest) in capsys.readouterr().err
