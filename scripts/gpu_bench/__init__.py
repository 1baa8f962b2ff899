"""The parts of the GPU benchmark (scripts/bench_gpu.py), each readable on its own.

- `analysis`: the records of a run, and what is derived from a job's progress events and stage
  timings (seconds per step, each sampler's setup, the largest part outside the steps);
- `memory`: GPU memory, read while jobs run and held to a budget;
- `comfyui`: a fresh ComfyUI process per configuration, and its command line;
- `weights`: the synthetic model files, written when missing;
- `jobs`: jobs through the worker's own handler, one configuration at a time;
- `report`: the verdicts against the targets, the tables, the saved JSON.

`analysis` and `report` are plain Python (checked in CI); the rest drives a GPU host.
"""


class BenchError(Exception):
    """A setup problem the user can fix; printed as one line, exit status 2."""
