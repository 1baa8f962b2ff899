"""The worker's entry point under the name the RunPod Hub looks for.

The Hub's publishing guide asks for a `handler.py`, a `Dockerfile` and a `README.md` in `.runpod/`
or at the repository's root. The worker's entry point is `rp_handler.py` at the root (the
image's start.sh runs it); this file runs that same entry point with the same arguments:

    python .runpod/handler.py --rp_serve_api
    python .runpod/handler.py --test_input '{"input": {...}}'
"""

import runpy
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    runpy.run_path(str(REPO / "rp_handler.py"), run_name="__main__")
