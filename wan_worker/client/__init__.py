"""A command-line client for the worker's endpoint: `wan-i2v` or `python -m wan_worker.client`.

It runs on the caller's machine and needs only requests and tqdm (`pip install ".[client]"`);
of the worker it imports only `wan_worker.errors`, to tell the worker's error codes in a failed
job's message. Its exit statuses and its own exceptions are in `wan_worker.client.errors`.
"""

from wan_worker.client.cli import main
from wan_worker.client.errors import ExitCode

__all__ = ["ExitCode", "main"]
