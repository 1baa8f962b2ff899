#!/usr/bin/env bash
# Boot the worker: hand this process over to the RunPod handler (exec, so signals reach it).
# The handler's process boots the rest in parallel (wan_worker/boot/): it starts ComfyUI at once
# while a probe checks that CUDA works (SKIP_GPU_CHECK=1 skips it), verifies or downloads the
# models meanwhile and reads them into the page cache, takes jobs once the models are verified,
# and warms ComfyUI up while no job needs it. Its paths and interpreters can be overridden from
# the environment (docs/configuration.md lists them all), so the same script runs in tests outside
# the image.
# Secrets are never printed.
set -euo pipefail

APP_DIR="${APP_DIR:-/app}"
PYTHON="${PYTHON:-/opt/venv/bin/python}"
HANDLER="${HANDLER:-$APP_DIR/rp_handler.py}"
SELF_TEST="${SELF_TEST:-0}"
SELF_TEST_SIZE="${SELF_TEST_SIZE:-tiny}"
SELF_TEST_MODELS_ROOT="${SELF_TEST_MODELS_ROOT:-/tmp/wan-self-test/models}"

log() {
  printf '[start] %s\n' "$*" >&2
}

die() {
  local status="${2:-1}"
  log "FAILED: $1"
  exit "$status"
}

is_true() {
  case "${1,,}" in
    1 | true | yes | on) return 0 ;;
    *) return 1 ;;
  esac
}

# RunPod's own variables tell the modes apart; serverless workers also carry RUNPOD_POD_ID.
detect_mode() {
  if [[ -n "${RUNPOD_WEBHOOK_GET_JOB:-}" || -n "${RUNPOD_ENDPOINT_ID:-}" ]]; then
    echo serverless
  elif [[ -n "${RUNPOD_POD_ID:-}" ]]; then
    echo pod
  else
    echo local
  fi
}

# SELF_TEST=1: random weights of the right shapes under the manifest's names, instead of the
# real models, so the whole path (ComfyUI, every node, the handler) runs with no credentials.
make_synthetic_models() {
  export MODELS_ROOT="$SELF_TEST_MODELS_ROOT" SKIP_PROVISION=1
  log "SELF_TEST is set: writing $SELF_TEST_SIZE synthetic weights to $MODELS_ROOT (no downloads)"
  "${COMFYUI_PYTHON:-$PYTHON}" "$APP_DIR/scripts/make_synthetic_weights.py" \
    --size "$SELF_TEST_SIZE" --models-root "$MODELS_ROOT" \
    --comfyui-dir "${COMFYUI_DIR:-/opt/ComfyUI}" \
    || die "writing the synthetic self-test weights failed; see the lines above" 2
}

main() {
  local mode default_handler_args
  mode="$(detect_mode)"
  default_handler_args=""
  if [[ "$mode" == pod ]]; then
    # On a pod the UI and a local copy of the job API are reachable from outside.
    export COMFYUI_LISTEN="${COMFYUI_LISTEN:-0.0.0.0}"
    default_handler_args="--rp_serve_api --rp_api_host 0.0.0.0"
  fi
  local -a handler_args
  read -r -a handler_args <<<"${HANDLER_ARGS:-$default_handler_args}"
  log "mode: $mode (app $APP_DIR, python $PYTHON)"

  if is_true "$SELF_TEST"; then
    make_synthetic_models
  fi

  log "handing over to the handler, which checks CUDA and boots ComfyUI and the models: $HANDLER"
  export WORKER_BOOT=1
  exec "$PYTHON" -u "$HANDLER" "${handler_args[@]}" "$@"
}

main "$@"
