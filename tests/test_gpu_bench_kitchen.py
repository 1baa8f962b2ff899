"""The torch-free parts of scripts/gpu_bench/kitchen_ops.py: the shapes it times, its arguments
and its table (the timing itself needs a CUDA GPU and comfy_kitchen)."""

from __future__ import annotations

from scripts.gpu_bench import kitchen_ops


def test_sequence_lengths_are_the_workflows():
    # 81 frames -> 21 latent frames; 8x VAE stride and 2x2 patches -> 16 pixels a side
    assert kitchen_ops.tokens(720, 1280) == 21 * 45 * 80 == 75600
    assert kitchen_ops.tokens(480, 832) == 21 * 30 * 52 == 32760
    assert kitchen_ops.tokens(480, 832, frames=9) == 3 * 30 * 52


def test_arguments():
    args = kitchen_ops.parse_args(["--sizes", "480x832", "--backends", "eager,triton"])
    assert args.sizes == [(480, 832)]
    assert args.backends == ["eager", "triton"]
    assert args.repeats == 20 and args.frames == 81


def test_the_table_shows_times_differences_and_errors(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "kernel.cubin").write_bytes(b"k")
    assert kitchen_ops.cache_files(str(tmp_path)) == 1
    assert kitchen_ops.cache_files(str(tmp_path / "none")) == 0
    assert kitchen_ops.cache_files(None) is None
    result = {
        "gpu": "NVIDIA H200", "torch": "2.11.0+cu130", "cuda": "13.0", "triton": "3.6.0",
        "triton_cache_files_before": 0, "triton_cache_files_after": 12,
        "sizes": {"480x832": {"tokens": 32760, "ops": {"apply_rope1": {
            "eager": {"first_call_ms": 5.0, "median_ms": 1.5, "vs_first_max_abs": 0.0,
                      "bit_identical": True},
            "triton": {"first_call_ms": 900.0, "median_ms": 0.5, "vs_first_max_abs": 0.0078125,
                       "bit_identical": False},
            "cuda": {"error": "BackendNotFoundError: cuda disabled"},
        }}}},
    }  # fmt: skip

    table = kitchen_ops.markdown(result)

    assert table.startswith("NVIDIA H200, torch 2.11.0+cu130 (CUDA 13.0), triton 3.6.0, ")
    assert "TRITON_CACHE_DIR files 0 -> 12" in table
    assert "| 480x832 | 32760 | apply_rope1 | triton | 900.0 | 0.5 | 0.00781 | no |" in table
    assert "| 480x832 | 32760 | apply_rope1 | cuda | BackendNotFoundError: cuda disabled |" in table
