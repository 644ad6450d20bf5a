#!/usr/bin/env bash
# deploy/local/up.sh: start the whole skiff platform on this machine, in the
# foreground. Ctrl-C (or SIGTERM) stops all of it.
#
# As root on Debian 12: installs what is missing (apt), builds the release
# binaries, then starts, all private to <checkout>/.skiff/local/:
#   PostgreSQL 15 cluster   127.0.0.1:54329  (skipped if DATABASE_URL is set)
#   containerd + runc       .skiff/local/containerd/containerd.sock, namespace skiff-local
#   docker-registry         127.0.0.1:5050   (not 5000: Debian's own docker-registry
#                                             service listens on :5000 where systemd runs)
#   skiff-api               http 127.0.0.1:8080, gRPC 127.0.0.1:8081
#   skiff-worker            agent 127.0.0.1:8082
# pushes the sample image skiff/busybox:{latest,1}, creates (or reuses) a tenant
# and writes .skiff/local.env. Logs: .skiff/local/logs/ and each daemon's dir.
#
# Ctrl-C stops the API and the worker, KILLS the containers still running in
# the skiff-local namespace (acceptable for a dev stack: the next up.sh starts
# with none running), then stops containerd, the registry and PostgreSQL. Data
# (database, images, admin token) stays in .skiff/local/ for the next run;
# `rm -rf .skiff` after a stop starts from scratch.
#
# Ports can be moved with SKIFF_LOCAL_{PG,REGISTRY,API,GRPC,AGENT}_PORT;
# SKIFF_LOCAL_PROFILE=dev uses debug binaries (quicker to build).
set -euo pipefail
# shellcheck source=deploy/local/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PG_PORT=${SKIFF_LOCAL_PG_PORT:-54329}
REGISTRY_PORT=${SKIFF_LOCAL_REGISTRY_PORT:-5050}
API_PORT=${SKIFF_LOCAL_API_PORT:-8080}
GRPC_PORT=${SKIFF_LOCAL_GRPC_PORT:-8081}
AGENT_PORT=${SKIFF_LOCAL_AGENT_PORT:-8082}
NAMESPACE=skiff-local

STATE="$SKIFF_REPO_ROOT/.skiff/local"
ENV_FILE="$SKIFF_REPO_ROOT/.skiff/local.env"
API_URL="http://127.0.0.1:$API_PORT"
# SKIFF_LOCAL_PROFILE=dev builds and runs the debug binaries (faster builds)
case ${SKIFF_LOCAL_PROFILE:-release} in
  release) BUILD_ARGS=(--release) TARGET_DIR="$SKIFF_REPO_ROOT/target/release" ;;
  dev | debug) BUILD_ARGS=() TARGET_DIR="$SKIFF_REPO_ROOT/target/debug" ;;
  *) die "SKIFF_LOCAL_PROFILE must be release or dev" ;;
esac
API_BIN="$TARGET_DIR/skiff-api"
WORKER_BIN="$TARGET_DIR/skiff-worker"

mkdir -p "$STATE/logs"
exec 9>"$STATE/lock"
flock -n 9 || die "another deploy/local/up.sh is already running for this checkout ($STATE/lock)"

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  log "shutting down"
  stop_all "$STATE" "$NAMESPACE" || true
  remove_empty_cgroups "skiff/$NAMESPACE"
  rm -f "$ENV_FILE.tmp"
  log "stopped (state kept in $STATE)"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

install_deps

# Leftover API/worker of a killed run: stop them (they are restarted below
# from the freshly built binaries). Infra of a killed run is reused.
stop_skiff "$STATE"
ensure_port_free "$API_PORT" "skiff-api HTTP"
ensure_port_free "$GRPC_PORT" "skiff-api gRPC"
ensure_port_free "$AGENT_PORT" "skiff-worker agent"

log "building skiff-api and skiff-worker (${SKIFF_LOCAL_PROFILE:-release})"
(cd "$SKIFF_REPO_ROOT" && cargo build "${BUILD_ARGS[@]}" --bin skiff-api --bin skiff-worker --bin skiff-logger 9>&-) \
  || die "cargo build failed"

start_postgres "$STATE/postgres" "$PG_PORT" >/dev/null
start_containerd "$STATE/containerd" >/dev/null
start_registry "$STATE/registry" "$REGISTRY_PORT" >/dev/null
log "building and pushing the sample image to $SKIFF_REGISTRY"
build_and_push_images "$SKIFF_REGISTRY" "$STATE/image-build"
SAMPLE_IMAGE="$SKIFF_REGISTRY/skiff/busybox:latest"

# admin token: generated once, kept
if [[ ! -s $STATE/admin-token ]]; then
  (umask 077 && od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$STATE/admin-token")
fi
ADMIN_TOKEN=$(<"$STATE/admin-token")

log "starting skiff-api on $API_URL (gRPC 127.0.0.1:$GRPC_PORT)"
spawn_daemon "$STATE/api.pid" "$STATE/logs/api.log" env \
  SKIFF_LISTEN="127.0.0.1:$API_PORT" \
  SKIFF_GRPC_LISTEN="127.0.0.1:$GRPC_PORT" \
  SKIFF_DATABASE_URL="$SKIFF_PG_URL" \
  SKIFF_ADMIN_TOKEN="$ADMIN_TOKEN" \
  RUST_LOG="${RUST_LOG:-info}" NO_COLOR=1 \
  "$API_BIN"
API_PID=$(<"$STATE/api.pid")

log "starting skiff-worker (agent 127.0.0.1:$AGENT_PORT, containerd namespace $NAMESPACE)"
mkdir -p "$STATE/worker"
spawn_daemon "$STATE/worker.pid" "$STATE/logs/worker.log" env \
  SKIFF_CONTROL_PLANE="http://127.0.0.1:$GRPC_PORT" \
  SKIFF_AGENT_LISTEN="127.0.0.1:$AGENT_PORT" \
  SKIFF_CONTAINERD_SOCKET="$SKIFF_CTR_SOCK" \
  SKIFF_CONTAINERD_NAMESPACE="$NAMESPACE" \
  SKIFF_STATE_DIR="$STATE/worker" \
  SKIFF_INSECURE_REGISTRIES="127.0.0.1,localhost" \
  RUST_LOG="${RUST_LOG:-info}" NO_COLOR=1 \
  "$WORKER_BIN"
WORKER_PID=$(<"$STATE/worker.pid")

log "waiting for $API_URL/readyz"
if ! wait_http "$API_URL/readyz" 120 "$API_PID" "$API_BIN"; then
  tail -n 30 "$STATE/logs/api.log" >&2 || true
  die "skiff-api did not become ready (log: $STATE/logs/api.log)"
fi

# tenant: reuse the previous one if its token still works
token_works() {
  [[ -n $1 ]] || return 1
  [[ $(curl -sS -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $1" "$API_URL/v1/containers") == 200 ]]
}
create_tenant() {
  local name=$1 body code
  body=$(mktemp)
  code=$(curl -sS -o "$body" -w '%{http_code}' -X POST \
    -H "Authorization: Bearer $ADMIN_TOKEN" -H 'content-type: application/json' \
    -d "{\"name\":\"$name\"}" "$API_URL/v1/tenants") || true
  if [[ $code == 201 || $code == 200 ]]; then
    sed -n 's/.*"token"[[:space:]]*:[[:space:]]*"\([^"]*\)".*/\1/p' "$body"
    rm -f "$body"
    return 0
  fi
  log "POST /v1/tenants {\"name\":\"$name\"} -> $code: $(head -c 300 "$body")"
  rm -f "$body"
  return 1
}
TOKEN=""
[[ -s $STATE/tenant-token ]] && TOKEN=$(<"$STATE/tenant-token")
if token_works "$TOKEN"; then
  log "reusing the tenant of the previous run"
else
  # "local" may exist already with a token we lost (e.g. .skiff/local.env deleted)
  TOKEN=$(create_tenant local || create_tenant "local-$(date +%s)") || die "could not create a tenant"
  [[ -n $TOKEN ]] || die "the tenant response had no token"
  (umask 077 && printf '%s\n' "$TOKEN" >"$STATE/tenant-token")
  log "created a tenant"
fi

(
  umask 077
  cat >"$ENV_FILE.tmp" <<EOF
SKIFF_API=$API_URL
SKIFF_TOKEN=$TOKEN
SKIFF_ADMIN_TOKEN=$ADMIN_TOKEN
SKIFF_SAMPLE_IMAGE=$SAMPLE_IMAGE
SKIFF_DATABASE_URL=$SKIFF_PG_URL
SKIFF_CONTAINERD_SOCKET=$SKIFF_CTR_SOCK
SKIFF_CONTAINERD_NAMESPACE=$NAMESPACE
EOF
)
mv "$ENV_FILE.tmp" "$ENV_FILE"

cat <<EOF

skiff is running. Written to $ENV_FILE:

$(cat "$ENV_FILE")

Try it (in another shell, from $SKIFF_REPO_ROOT):

  set -a; . .skiff/local.env; set +a
  curl -sS -H "Authorization: Bearer \$SKIFF_TOKEN" -H 'content-type: application/json' \\
    -d '{"image":"$SAMPLE_IMAGE","command":["echo","hello"],"cpu":0.5,"memory_mib":256}' \\
    \$SKIFF_API/v1/containers
  curl -sS -H "Authorization: Bearer \$SKIFF_TOKEN" \$SKIFF_API/v1/containers
  curl -sS -H "Authorization: Bearer \$SKIFF_TOKEN" "\$SKIFF_API/v1/containers/<id>/logs"

Inspect: psql \$SKIFF_DATABASE_URL   |   ctr --address \$SKIFF_CONTAINERD_SOCKET -n $NAMESPACE tasks ls
Logs: $STATE/logs/api.log, $STATE/logs/worker.log
Press Ctrl-C to stop everything.
EOF

# foreground: until Ctrl-C, or until the API or the worker dies
while true; do
  if ! pid_matches "$API_PID" "$API_BIN"; then
    tail -n 30 "$STATE/logs/api.log" >&2 || true
    die "skiff-api exited (log: $STATE/logs/api.log)"
  fi
  if ! pid_matches "$WORKER_PID" "$WORKER_BIN"; then
    tail -n 30 "$STATE/logs/worker.log" >&2 || true
    die "skiff-worker exited (log: $STATE/logs/worker.log)"
  fi
  sleep 1 &
  wait $! || true
done
