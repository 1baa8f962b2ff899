#!/usr/bin/env bash
# Boot the worker: wait for CUDA, provision the models, start ComfyUI, then hand this process
# over to the RunPod handler (exec, so signals reach it). Every path and command can be
# overridden from the environment (docs/provisioning.md lists them all), so the same script
# runs in tests outside the image. Secrets are never printed.
set -euo pipefail

APP_DIR="${APP_DIR:-/app}"
COMFYUI_DIR="${COMFYUI_DIR:-/opt/ComfyUI}"
PYTHON="${PYTHON:-/opt/venv/bin/python}"
COMFYUI_PYTHON="${COMFYUI_PYTHON:-$PYTHON}"
COMFYUI_MAIN="${COMFYUI_MAIN:-$COMFYUI_DIR/main.py}"
COMFYUI_PORT="${COMFYUI_PORT:-8188}"
COMFYUI_ARGS="${COMFYUI_ARGS:---preview-method none --disable-auto-launch}"
COMFYUI_EXTRA_ARGS="${COMFYUI_EXTRA_ARGS:-}"
EXTRA_MODEL_PATHS="${EXTRA_MODEL_PATHS:-$APP_DIR/extra_model_paths.yaml}"
COMFYUI_PID_FILE="${COMFYUI_PID_FILE:-/tmp/comfyui.pid}"
COMFYUI_LOG="${COMFYUI_LOG:-/tmp/comfyui.log}"
COMFYUI_WAIT_READY="${COMFYUI_WAIT_READY:-1}"
COMFYUI_READY_TIMEOUT_S="${COMFYUI_READY_TIMEOUT_S:-180}"
HANDLER="${HANDLER:-$APP_DIR/rp_handler.py}"
SKIP_GPU_CHECK="${SKIP_GPU_CHECK:-0}"
SKIP_PROVISION="${SKIP_PROVISION:-0}"
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

# The worker's own modules, importable without leaking APP_DIR into ComfyUI's sys.path.
app_python() {
  PYTHONPATH="$APP_DIR${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" "$@"
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

wait_for_gpu() {
  if is_true "$SKIP_GPU_CHECK"; then
    log "SKIP_GPU_CHECK is set: not waiting for CUDA"
    return 0
  fi
  log "waiting for CUDA (bounded by GPU_READY_TIMEOUT_S, default 120s)"
  app_python -m wan_worker.gpu_ready || die "no usable GPU; see the [gpu] lines above" 1
}

provision_models() {
  MODELS_ROOT="$(app_python -m wan_worker.provision --print-root)" \
    || die "the provisioning configuration is invalid; see the [provision] lines above" 2
  export MODELS_ROOT
  if is_true "$SKIP_PROVISION"; then
    log "SKIP_PROVISION is set: using the models already under $MODELS_ROOT as they are"
    return 0
  fi
  local status=0
  app_python -m wan_worker.provision || status=$?
  if ((status != 0)); then
    die "model provisioning failed (exit $status); ComfyUI was not started" "$status"
  fi
}

# SELF_TEST=1: random weights of the right shapes under the manifest's names, instead of the
# real models, so the whole path (ComfyUI, every node, the handler) runs with no credentials.
make_synthetic_models() {
  export MODELS_ROOT="$SELF_TEST_MODELS_ROOT"
  log "SELF_TEST is set: writing $SELF_TEST_SIZE synthetic weights to $MODELS_ROOT (no downloads)"
  "$COMFYUI_PYTHON" "$APP_DIR/scripts/make_synthetic_weights.py" --size "$SELF_TEST_SIZE" \
    --models-root "$MODELS_ROOT" --comfyui-dir "$COMFYUI_DIR" \
    || die "writing the synthetic self-test weights failed; see the lines above" 2
}

start_comfyui() {
  local listen="$1"
  local -a args extra
  read -r -a args <<<"$COMFYUI_ARGS"
  read -r -a extra <<<"$COMFYUI_EXTRA_ARGS"
  mkdir -p "$(dirname "$COMFYUI_LOG")" "$(dirname "$COMFYUI_PID_FILE")"
  : >"$COMFYUI_LOG"
  rm -f "$COMFYUI_PID_FILE"
  log "starting ComfyUI on $listen:$COMFYUI_PORT: ${args[*]} ${extra[*]}"
  (
    cd "$COMFYUI_DIR"
    exec "$COMFYUI_PYTHON" -u "$COMFYUI_MAIN" --listen "$listen" --port "$COMFYUI_PORT" \
      --extra-model-paths-config "$EXTRA_MODEL_PATHS" "${args[@]}" "${extra[@]}"
  ) > >(tee -a "$COMFYUI_LOG") 2>&1 &
  COMFYUI_PID=$!
  echo "$COMFYUI_PID" >"$COMFYUI_PID_FILE"
  log "ComfyUI pid $COMFYUI_PID (pid file $COMFYUI_PID_FILE, log $COMFYUI_LOG)"
  if is_true "$COMFYUI_WAIT_READY"; then
    app_python -m wan_worker.comfy_ready --url "http://127.0.0.1:$COMFYUI_PORT" \
      --pid-file "$COMFYUI_PID_FILE" --timeout "$COMFYUI_READY_TIMEOUT_S" --log "$COMFYUI_LOG" \
      || die "ComfyUI is not answering; see the lines above" 1
  fi
}

main() {
  local mode listen default_handler_args
  mode="$(detect_mode)"
  listen="${COMFYUI_LISTEN:-127.0.0.1}"
  default_handler_args=""
  if [[ "$mode" == pod ]]; then
    # On a pod the UI and a local copy of the job API are reachable from outside.
    listen="${COMFYUI_LISTEN:-0.0.0.0}"
    default_handler_args="--rp_serve_api --rp_api_host 0.0.0.0"
  fi
  local -a handler_args
  read -r -a handler_args <<<"${HANDLER_ARGS:-$default_handler_args}"
  log "mode: $mode (app $APP_DIR, ComfyUI $COMFYUI_DIR, python $PYTHON)"

  wait_for_gpu
  if is_true "$SELF_TEST"; then
    make_synthetic_models
  else
    provision_models
  fi
  start_comfyui "$listen"

  log "handing over to the handler: $HANDLER"
  exec "$PYTHON" -u "$HANDLER" "${handler_args[@]}" "$@"
}

main "$@"
