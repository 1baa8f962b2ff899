"""RunPod serverless entry point for the Wan2.2 image-to-video worker.

python rp_handler.py                      # as a RunPod worker (start.sh runs this)
python rp_handler.py --rp_serve_api       # local HTTP API on :8000 (/run, /runsync, /status)
python rp_handler.py --test_input '{...}' # one job from the command line (or test_input.json)
"""

import sys

try:
    import runpod
except ModuleNotFoundError:  # the system's Python, not the project's virtualenv
    sys.exit(
        f"rp_handler.py: runpod is not installed for {sys.executable}. Run it with the "
        "virtualenv README.md makes (. .venv/bin/activate) or with the image's Python."
    )

from wan_worker.handler import handler
from wan_worker.logs import configure as configure_logging

if __name__ == "__main__":
    configure_logging()
    runpod.serverless.start({"handler": handler})
