"""RunPod serverless entry point for the Wan2.2 image-to-video worker.

python rp_handler.py                      # as a RunPod worker (start.sh runs this)
python rp_handler.py --rp_serve_api       # local HTTP API on :8000 (/run, /runsync, /status)
python rp_handler.py --test_input '{...}' # one job from the command line (or test_input.json)

Under start.sh (WORKER_BOOT=1) this process also boots the worker: it starts ComfyUI, verifies
the models and warms up (wan_worker/boot/); otherwise it uses the ComfyUI at COMFYUI_URL. Both
go through wan_worker/entry.py.
"""

import importlib.util
import sys

# Looked up, not imported: the boot starts ComfyUI before anything slow is imported.
if importlib.util.find_spec("runpod") is None:  # the system's Python, not the project's venv
    sys.exit(
        f"rp_handler.py: runpod is not installed for {sys.executable}. Run it with the "
        "virtualenv README.md makes (. .venv/bin/activate) or with the image's Python."
    )

from wan_worker.entry import run

if __name__ == "__main__":
    run()
