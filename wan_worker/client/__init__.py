"""A command-line client for the worker's endpoint: `wan-i2v` or `python -m wan_worker.client`.

It runs on the caller's machine, needs only requests and tqdm (`pip install ".[client]"`), and
imports nothing of the worker itself.
"""

from wan_worker.client.cli import ExitCode, main

__all__ = ["ExitCode", "main"]
