"""The worker's boot, run inside the handler's process (`rp_handler.py` under start.sh, through
`wan_worker.entry`).

`main` starts ComfyUI at once, verifies or downloads the models meanwhile (`wan_worker.provision`),
reads the model files ahead into the page cache (`readahead`), and hands the ready worker back
once the models are verified; `warmup` then runs the workflow once at a small size while no job
needs ComfyUI. `cuda_check` probes CUDA beside ComfyUI's launch; `timeline` logs each step.
What the boot's threads and the jobs share (the models' state, the jobs in hand, the warm-up's
stop switch, the stages ComfyUI has begun) is the worker's gate, `wan_worker.worker_gate`.
docs/operations.md ("Why the worker works this way") says why the boot is built this way.
"""
