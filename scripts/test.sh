#!/usr/bin/env bash
# The project's test command: linters, then the whole test suite.
#   scripts/test.sh [PYTEST_ARGS...]          linters, then every test
#   scripts/test.sh --fast [PYTEST_ARGS...]   the unit tests alone, no linters (under a minute):
#                                             pytest -m "not integration" (pyproject.toml)
# Set COMFYUI_URL to also run the integration tests against a real ComfyUI.
# The tools come from the project's virtualenv: the active one, else ./.venv (the one README.md
# makes), activated or not.
set -euo pipefail

cd "$(dirname "$0")/.."

use_virtualenv() {
  local venv="${VIRTUAL_ENV:-}"
  if [[ -z "$venv" && -x .venv/bin/python ]]; then
    venv="$PWD/.venv"
  fi
  if [[ -n "$venv" ]]; then
    PATH="$venv/bin:$PATH"
    export PATH
  fi
}

# Every shell script of the project, NUL-separated: tracked and new files, not ignored ones.
shell_scripts() {
  if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    git ls-files -z --cached --others --exclude-standard -- '*.sh' '.ci/run'
  else
    find . -path ./.venv -prune -o \( -name '*.sh' -o -path ./.ci/run \) -type f -print0
  fi
}

main() {
  use_virtualenv
  if [[ "${1:-}" == "--fast" ]]; then
    shift
    exec python -m pytest -m "not integration" "$@"
  fi
  ruff check .
  ruff format --check .
  mypy
  hadolint Dockerfile
  shell_scripts | xargs -0 --no-run-if-empty shellcheck
  actionlint
  check-jsonschema --builtin-schema vendor.compose-spec docker-compose.yml
  python -m pytest "$@"
}

main "$@"
