#!/usr/bin/env bash
# The project's test command: linters, then the whole test suite.
# Set COMFYUI_URL to also run the integration tests against a real ComfyUI.
set -euo pipefail

cd "$(dirname "$0")/.."

main() {
  ruff check .
  ruff format --check .
  python -m pytest "$@"
}

main "$@"
