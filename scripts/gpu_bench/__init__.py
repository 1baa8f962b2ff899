"""The parts of the GPU benchmark (scripts/bench_gpu.py), each readable on its own.

- `analysis`: the records of a run, and what is derived from a job's progress events and stage
  timings (seconds per step, each sampler's setup, the largest part outside the steps);
- `memory`: GPU memory, read while jobs run and held to a budget;
- `comfyui`: a fresh ComfyUI process per configuration, its command line and its stack (image:
  comfy-kitchen's cuda backend off, as under the image's cu128 torch; host: as the host runs);
- `comfy_launch`: the launcher that runs ComfyUI's main.py with comfy-kitchen backends disabled
  (standard library only, run by the Python that runs ComfyUI);
- `weights`: the synthetic model files, written when missing;
- `jobs`: jobs through the worker's own handler, one configuration at a time;
- `report`: the verdicts against the targets, the tables, the saved JSON;
- `summarise`: min / median / max of every figure over several runs, per group (an A/B);
- `compare_videos`: two runs' MP4s frame by frame (PSNR), the output check;
- `encode_presets`: libx264's presets on the workflow's final encode, timed and checked.

`analysis`, `report`, `summarise`, `compare_videos` and `encode_presets` run on a CPU (checked in
CI, the last two with ffmpeg); the rest drives a GPU host.
"""


class BenchError(Exception):
    """A setup problem the user can fix; printed as one line, exit status 2."""
