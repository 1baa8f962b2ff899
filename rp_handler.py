"""RunPod serverless entry point for the Wan2.2 image-to-video worker.

python rp_handler.py                      # as a RunPod worker (start.sh runs this)
python rp_handler.py --rp_serve_api       # local HTTP API on :8000 (/run, /runsync, /status)
python rp_handler.py --test_input '{...}' # one job from the command line (or test_input.json)
"""

import logging

import runpod

from wan_worker.handler import handler

if __name__ == "__main__":
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    runpod.serverless.start({"handler": handler})
