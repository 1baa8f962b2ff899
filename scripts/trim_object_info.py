"""Write the node schemas the worker's workflow needs, taken from a ComfyUI's /object_info.

The tests and the ComfyUI double validate against this subset. Regenerate it whenever ComfyUI
or a custom node is re-pinned:

    curl -s http://127.0.0.1:8188/object_info > object_info.json
    python scripts/trim_object_info.py object_info.json tests/data/object_info.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

WORKFLOW = Path(__file__).resolve().parent.parent / "workflows" / "wan_flf_i2v_api.json"
# Classes beyond the workflow's that tests use: the stand-in for attention patching, an output
# node the double can run without a video encoder, and a core sampler for negative cases.
EXTRA_CLASSES = ("ModelPassThrough", "SaveImage", "PreviewImage", "KSampler")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="a full /object_info reply")
    parser.add_argument("target", type=Path, help="where to write the subset")
    args = parser.parse_args()
    full = json.loads(args.source.read_text(encoding="utf-8"))
    workflow = json.loads(WORKFLOW.read_text(encoding="utf-8"))
    classes = sorted({node["class_type"] for node in workflow.values()} | set(EXTRA_CLASSES))
    missing = [name for name in classes if name not in full]
    if missing:
        raise SystemExit(f"{args.source} lacks node classes: {', '.join(missing)}")
    subset = {name: full[name] for name in classes}
    args.target.write_text(json.dumps(subset, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(f"wrote {len(subset)} node schemas to {args.target}")


if __name__ == "__main__":
    main()
