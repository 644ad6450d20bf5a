#!/usr/bin/env bash
# deploy/local/up.sh: start the whole skiff platform on this machine, in the
# foreground. Ctrl-C (or SIGTERM) stops all of it.
#
# As root on Debian 12: installs what is missing (apt), builds the binaries,
# then starts, all private to <checkout>/.skiff/local/:
#   PostgreSQL 15 cluster   127.0.0.1:54329  (skipped if DATABASE_URL is set)
#   docker-registry         127.0.0.1:5050   (not 5000: Debian's own docker-registry
#                                             service listens on :5000 where systemd runs)
#   M skiff-api replicas    (SKIFF_LOCAL_API_REPLICAS=M, default 1), one database
#   N simulated hosts       (SKIFF_LOCAL_WORKERS=N, default 1), each a skiff-worker
#                           with its own containerd + runc:
#     host 1: .skiff/local/containerd/containerd.sock, namespace skiff-local,
#             host id local-1, state .skiff/local/worker
#     host n: .skiff/local/hosts/<n>/containerd/containerd.sock, namespace
#             skiff-local-<n>, host id local-<n>, state .skiff/local/hosts/<n>/worker
#     (own namespaces: runc's state dir /run/containerd/runc/<namespace> is
#     shared by every containerd). Each worker offers its share of the machine:
#     SKIFF_CPU_MILLIS = nproc*1000/N, SKIFF_MEMORY_MIB = (MemTotal - 1 GiB)/N.
#     Setting SKIFF_CPU_MILLIS / SKIFF_MEMORY_MIB in up.sh's environment
#     declares that capacity for every worker instead (an oversubscribed pool,
#     e.g. for the benchmark's sleeping-container scenarios); it is logged.
#     Host n's private network: bridge skiffl<n>, subnet 10.213.<n-1>.0/24,
#     host ports 20000+1000*(n-1) .. +999 on 127.0.0.1, no outbound NAT
#     (worker_net_env); torn down (--teardown-network) when the stack stops.
# pushes the sample image skiff/busybox:{latest,1}, creates (or reuses) a tenant
# and writes .skiff/local.env. Logs: .skiff/local/logs/ and each daemon's dir.
#
# Port scheme (S = SKIFF_LOCAL_PORT_STRIDE, default 100; i = replica or host
# number, from 1):
#   API replica i   HTTP 8080+S*(i-1), gRPC 8081+S*(i-1)
#                   (1: 8080/8081, 2: 8180/8181, 3: 8280/8281, ...)
#   worker i        agent 8082+S*(i-1), metrics 8083+S*(i-1) (SKIFF_METRICS_LISTEN)
#                   (1: 8082/8083, 2: 8182/8183, 3: 8282/8283, ...)
# Worker i talks to the gRPC endpoint of replica ((i-1) mod M)+1 (round robin)
# and fails over to the others in turn (SKIFF_CONTROL_PLANE lists them all).
# The bases move with SKIFF_LOCAL_{PG,REGISTRY,API,GRPC,AGENT,METRICS}_PORT
# (the registry with auth: SKIFF_LOCAL_AUTH_REGISTRY_PORT, default registry + 1;
# with token auth: SKIFF_LOCAL_TOKEN_REGISTRY_PORT, + 2, its token server
# SKIFF_LOCAL_TOKEN_SERVER_PORT, + 3).
#
# .skiff/local.env (a contract; `set -a; . .skiff/local.env; set +a`):
#   SKIFF_API                    replica 1's URL
#   SKIFF_API_URLS               every replica's URL, comma-separated
#   SKIFF_TOKEN                  a tenant's token
#   SKIFF_ADMIN_TOKEN            the admin token
#   SKIFF_SAMPLE_IMAGE           127.0.0.1:5050/skiff/busybox:latest
#   SKIFF_AUTH_REGISTRY          127.0.0.1:5051: a second registry, behind
#                                htpasswd basic auth, holding the sample image
#   SKIFF_AUTH_REGISTRY_USER     its user (skiff)
#   SKIFF_AUTH_REGISTRY_PASSWORD its password (random, kept in
#                                .skiff/local/auth-registry/password)
#   SKIFF_TOKEN_REGISTRY         127.0.0.1:5052: the same images behind the
#                                distribution spec's bearer tokens (the same
#                                login; its token server on 127.0.0.1:5053)
#   SKIFF_DATABASE_URL           the database
#   SKIFF_CONTAINERD_SOCKET      host 1's containerd socket
#   SKIFF_CONTAINERD_NAMESPACE   host 1's namespace (skiff-local)
#   SKIFF_CONTAINERD_SOCKETS     every host's socket, comma-separated, host order
#   SKIFF_CONTAINERD_NAMESPACES  every host's namespace, likewise
#   SKIFF_WORKER_METRICS         every worker's /metrics URL, comma-separated
#   SKIFF_CLI                    the `skiff` CLI binary (absolute path):
#                                `set -a; . .skiff/local.env; $SKIFF_CLI ps`
#   SKIFF_ACI_URL                the base URL to hand Azure's ACI clients
#                                ($SKIFF_API/aci; see docs/aci.md)
#   SKIFF_ACI_SUBSCRIPTION       the subscription id of SKIFF_TOKEN's tenant
#                                there (the tenant's id)
#
# Supervision (like systemd's Restart=always): when a skiff-api or skiff-worker
# exits, whatever the reason, it is started again with the same environment
# after a back-off (1 s, doubling up to 30 s; back to 1 s once a run lasted
# 60 s), and each restart is logged with the exit status, on the terminal and
# in that process's log. A crash never tears anything down: the containers
# keep running (their shims are separate processes) and the restarted worker
# re-adopts them.
#
# Ctrl-C (or SIGTERM) stops, in order: the workers, the API replicas, the
# containers still running (KILLED: acceptable for a dev stack, the next
# up.sh starts with none running; only in the skiff-local* namespaces), the
# containerds, the registry and PostgreSQL. Data (database, images, admin
# token) stays in .skiff/local/ for the next run; `rm -rf .skiff` after a stop
# starts from scratch.
#
# Knobs: SKIFF_LOCAL_PROFILE=dev uses debug binaries (quicker to build);
# SKIFF_LOCAL_NO_BUILD=1 skips `cargo build` and runs the binaries already in
# target/ (e.g. while someone's half-done edit keeps the workspace from
# compiling).
set -euo pipefail
# shellcheck source=deploy/local/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PG_PORT=${SKIFF_LOCAL_PG_PORT:-54329}
REGISTRY_PORT=${SKIFF_LOCAL_REGISTRY_PORT:-5050}
AUTH_REGISTRY_PORT=${SKIFF_LOCAL_AUTH_REGISTRY_PORT:-$((REGISTRY_PORT + 1))}
TOKEN_REGISTRY_PORT=${SKIFF_LOCAL_TOKEN_REGISTRY_PORT:-$((REGISTRY_PORT + 2))}
TOKEN_SERVER_PORT=${SKIFF_LOCAL_TOKEN_SERVER_PORT:-$((REGISTRY_PORT + 3))}
API_PORT=${SKIFF_LOCAL_API_PORT:-8080}
GRPC_PORT=${SKIFF_LOCAL_GRPC_PORT:-8081}
AGENT_PORT=${SKIFF_LOCAL_AGENT_PORT:-8082}
METRICS_PORT=${SKIFF_LOCAL_METRICS_PORT:-8083}
PORT_STRIDE=${SKIFF_LOCAL_PORT_STRIDE:-100}
WORKERS=${SKIFF_LOCAL_WORKERS:-1}
REPLICAS=${SKIFF_LOCAL_API_REPLICAS:-1}
[[ $WORKERS =~ ^[1-9][0-9]*$ ]] || die "SKIFF_LOCAL_WORKERS must be a number >= 1"
[[ $REPLICAS =~ ^[1-9][0-9]*$ ]] || die "SKIFF_LOCAL_API_REPLICAS must be a number >= 1"
[[ $PORT_STRIDE =~ ^[1-9][0-9]*$ ]] || die "SKIFF_LOCAL_PORT_STRIDE must be a number >= 1"

STATE="$SKIFF_REPO_ROOT/.skiff/local"
ENV_FILE="$SKIFF_REPO_ROOT/.skiff/local.env"
# SKIFF_LOCAL_PROFILE=dev builds and runs the debug binaries (faster builds)
case ${SKIFF_LOCAL_PROFILE:-release} in
  release) BUILD_ARGS=(--release) TARGET_DIR="$SKIFF_REPO_ROOT/target/release" ;;
  dev | debug) BUILD_ARGS=() TARGET_DIR="$SKIFF_REPO_ROOT/target/debug" ;;
  *) die "SKIFF_LOCAL_PROFILE must be release or dev" ;;
esac
API_BIN="$TARGET_DIR/skiff-api"
WORKER_BIN="$TARGET_DIR/skiff-worker"

# --- layout of replica / host i ---------------------------------------------
api_http_port() { echo $((API_PORT + PORT_STRIDE * ($1 - 1))); }
api_grpc_port() { echo $((GRPC_PORT + PORT_STRIDE * ($1 - 1))); }
api_url() { echo "http://127.0.0.1:$(api_http_port "$1")"; }
api_pidfile() { if (($1 == 1)); then echo "$STATE/api.pid"; else echo "$STATE/api-$1.pid"; fi; }
api_log() { if (($1 == 1)); then echo "$STATE/logs/api.log"; else echo "$STATE/logs/api-$1.log"; fi; }

host_dir() { if (($1 == 1)); then echo "$STATE"; else echo "$STATE/hosts/$1"; fi; }
host_containerd_dir() { echo "$(host_dir "$1")/containerd"; }
host_namespace() { if (($1 == 1)); then echo skiff-local; else echo "skiff-local-$1"; fi; }
host_id() { echo "local-$1"; }
worker_agent_port() { echo $((AGENT_PORT + PORT_STRIDE * ($1 - 1))); }
worker_metrics_port() { echo $((METRICS_PORT + PORT_STRIDE * ($1 - 1))); }
worker_pidfile() { echo "$(host_dir "$1")/worker.pid"; }
worker_log() { if (($1 == 1)); then echo "$STATE/logs/worker.log"; else echo "$STATE/logs/worker-$1.log"; fi; }
worker_state_dir() { echo "$(host_dir "$1")/worker"; }
# Host I's private network: its own bridge, /24 and 1000 host ports
# (published on 127.0.0.1; outbound NAT off).
worker_net_env() {
  local i=$1
  echo "SKIFF_NETWORK_BRIDGE=skiffl$i SKIFF_NETWORK_SUBNET=10.213.$((i - 1)).0/24" \
    "SKIFF_PORT_RANGE=$((20000 + (i - 1) * 1000))-$((20999 + (i - 1) * 1000))" \
    "SKIFF_NETWORK_RUN_DIR=$(host_dir "$i")/net SKIFF_PORT_HOST_IP=127.0.0.1 SKIFF_EGRESS_NAT=false"
}

# known_hosts: every host number with a containerd dir (this run's and
# leftovers of an earlier run with more hosts), ascending.
known_hosts() {
  local d n
  {
    seq 1 "$WORKERS"
    for d in "$STATE"/hosts/*/containerd; do
      n=${d%/containerd}
      n=${n##*/}
      [[ $n =~ ^[0-9]+$ && -f $d/config.toml ]] && echo "$n"
    done
  } | sort -nu
}

API_URL=$(api_url 1)
BUILD_PID=""

mkdir -p "$STATE/logs"
exec 9>"$STATE/lock"
flock -n 9 || die "another deploy/local/up.sh is already running for this checkout ($STATE/lock)"

# stop_local_stack: workers, APIs, then per host: tasks, containerd; then
# registry, PostgreSQL.
stop_local_stack() {
  local n
  local hosts=()
  mapfile -t hosts < <(known_hosts)
  stop_skiff "$STATE"
  for n in "${hosts[@]}"; do
    containerd_kill_tasks "$(host_containerd_dir "$n")" "$(host_namespace "$n")" || true
    # shellcheck disable=SC2046 # worker_net_env is KEY=value words
    [[ -x ${WORKER_BIN:-} ]] && env $(worker_net_env "$n") "$WORKER_BIN" --teardown-network || true
  done
  for n in "${hosts[@]}"; do
    stop_containerd "$(host_containerd_dir "$n")" || true
  done
  stop_registry "$STATE/registry"
  stop_postgres "$STATE/postgres"
  remove_empty_cgroups "skiff/skiff-local" "skiff/skiff-local-*"
}

# shellcheck disable=SC2317 # invoked by the EXIT trap
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [[ -n $BUILD_PID ]] && kill -0 "$BUILD_PID" 2>/dev/null; then
    log "stopping cargo build"
    kill -TERM "$BUILD_PID" 2>/dev/null || true
    wait "$BUILD_PID" 2>/dev/null || true
  fi
  log "shutting down"
  stop_local_stack || true
  rm -f "$ENV_FILE.tmp"
  log "stopped (state kept in $STATE)"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

install_deps

# Leftover APIs/workers of a killed run: stop them (they are restarted below
# from the freshly built binaries). Infra of a killed run is reused.
stop_skiff "$STATE"
for ((i = 1; i <= REPLICAS; i++)); do
  ensure_port_free "$(api_http_port "$i")" "skiff-api $i HTTP"
  ensure_port_free "$(api_grpc_port "$i")" "skiff-api $i gRPC"
done
for ((i = 1; i <= WORKERS; i++)); do
  ensure_port_free "$(worker_agent_port "$i")" "skiff-worker $i agent"
  ensure_port_free "$(worker_metrics_port "$i")" "skiff-worker $i metrics"
done

if [[ ${SKIFF_LOCAL_NO_BUILD:-0} == 1 ]]; then
  log "SKIFF_LOCAL_NO_BUILD=1: not building, using the binaries in $TARGET_DIR"
else
  # skiff-api embeds the web console (console/dist): built first.
  build_console
  log "building skiff-api, skiff-worker and the skiff CLI (${SKIFF_LOCAL_PROFILE:-release})"
  # in the background, so that Ctrl-C/SIGTERM stop the script (and the build) at once
  (cd "$SKIFF_REPO_ROOT" && exec cargo build "${BUILD_ARGS[@]}" --bin skiff-api --bin skiff-worker --bin skiff-logger --bin skiff) 9>&- &
  BUILD_PID=$!
  wait "$BUILD_PID" || die "cargo build failed"
  BUILD_PID=""
fi
for b in "$API_BIN" "$WORKER_BIN" "$TARGET_DIR/skiff-logger" "$TARGET_DIR/skiff"; do
  [[ -x $b ]] || die "$b is missing (build it, or drop SKIFF_LOCAL_NO_BUILD)"
done

# Each worker's share of the machine, so the pool's capacity stays honest.
NPROC=$(nproc)
MEM_TOTAL_MIB=$(($(awk '/^MemTotal:/ {print $2}' /proc/meminfo) / 1024))
CPU_MILLIS=${SKIFF_CPU_MILLIS:-$((NPROC * 1000 / WORKERS))}
MEMORY_MIB=${SKIFF_MEMORY_MIB:-$(((MEM_TOTAL_MIB - 1024) / WORKERS))}
[[ $CPU_MILLIS =~ ^[0-9]+$ && $MEMORY_MIB =~ ^[0-9]+$ ]] || die "SKIFF_CPU_MILLIS and SKIFF_MEMORY_MIB must be whole numbers"
((CPU_MILLIS > 0 && MEMORY_MIB > 0)) || die "$WORKERS workers leave no capacity each"
if [[ -n ${SKIFF_CPU_MILLIS:-}${SKIFF_MEMORY_MIB:-} ]]; then
  log "declared capacity from the environment (not the machine's share): each worker cpu_millis=$CPU_MILLIS memory_mib=$MEMORY_MIB"
fi

start_postgres "$STATE/postgres" "$PG_PORT" >/dev/null

# hosts of an earlier run with more of them: their containers are not ours any more
for n in $(known_hosts); do
  if ((n > WORKERS)); then
    log "host $n (left by an earlier run with more workers) is not part of this run: stopping it"
    containerd_kill_tasks "$(host_containerd_dir "$n")" "$(host_namespace "$n")" || true
    stop_containerd "$(host_containerd_dir "$n")"
  fi
done
CTR_SOCKS=()
CTR_NAMESPACES=()
for ((i = 1; i <= WORKERS; i++)); do
  start_containerd "$(host_containerd_dir "$i")" >/dev/null
  CTR_SOCKS+=("$SKIFF_CTR_SOCK")
  CTR_NAMESPACES+=("$(host_namespace "$i")")
done
start_registry "$STATE/registry" "$REGISTRY_PORT" >/dev/null
log "building and pushing the sample image to $SKIFF_REGISTRY"
build_and_push_images "$SKIFF_REGISTRY" "$STATE/image-build"
SAMPLE_IMAGE="$SKIFF_REGISTRY/skiff/busybox:latest"
start_auth_registry "$STATE/auth-registry" "$AUTH_REGISTRY_PORT" >/dev/null
log "pushing the sample image to $SKIFF_AUTH_REGISTRY (basic auth)"
build_and_push_images "$SKIFF_AUTH_REGISTRY" "$STATE/image-build" "$STATE/auth-registry/netrc"
start_token_registry "$STATE/token-registry" "$TOKEN_REGISTRY_PORT" "$TOKEN_SERVER_PORT" \
  "$STATE/auth-registry" "$SKIFF_AUTH_REGISTRY_USER" "$STATE/auth-registry/password" >/dev/null

# admin token: generated once, kept
if [[ ! -s $STATE/admin-token ]]; then
  (umask 077 && od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$STATE/admin-token")
fi
ADMIN_TOKEN=$(<"$STATE/admin-token")

# the worker channel's CA: created once, by the explicit step an operator
# takes (skiff-api never creates one by itself); kept with the state
CA_DIR="$STATE/ca"
if [[ ! -s $CA_DIR/ca.crt || ! -s $CA_DIR/ca.key ]]; then
  rm -f "$CA_DIR/ca.crt" "$CA_DIR/ca.key"
  "$API_BIN" ca init --dir "$CA_DIR" >/dev/null || die "skiff-api ca init failed"
  log "created the worker channel's CA in $CA_DIR"
fi
# the keyring sealing secrets at rest (secure_env): made once, kept with the
# state (rotate: put a new line first, restart, `skiff-api secrets reencrypt`)
KEYRING="$STATE/secrets.keyring"
if [[ ! -s $KEYRING ]]; then
  (umask 077 && "$API_BIN" secrets new-key --id "local-$(date +%Y%m%d)" >"$KEYRING.new") \
    || die "skiff-api secrets new-key failed"
  mv "$KEYRING.new" "$KEYRING"
  log "created the secrets keyring $KEYRING"
fi
JOIN_TOKEN=""

# --- the supervised processes ------------------------------------------------
# A service is "api-<i>" or "worker-<i>". Per service: its pid and start time
# (SVC_PID, SVC_START), when it was (re)started (SVC_SINCE), the next back-off
# (SVC_BACKOFF), the time a pending restart is due (SVC_RESTART_AT) and the
# number of restarts (SVC_RESTARTS).
declare -A SVC_PID=() SVC_START=() SVC_SINCE=() SVC_BACKOFF=() SVC_RESTART_AT=() SVC_RESTARTS=()
SERVICES=()

# start_api I: spawn replica I (as a child of this script, for its exit status).
start_api() {
  local i=$1
  spawn_child "$(api_pidfile "$i")" "$(api_log "$i")" env \
    SKIFF_LISTEN="127.0.0.1:$(api_http_port "$i")" \
    SKIFF_GRPC_LISTEN="127.0.0.1:$(api_grpc_port "$i")" \
    SKIFF_DATABASE_URL="$SKIFF_PG_URL" \
    SKIFF_ADMIN_TOKEN="$ADMIN_TOKEN" \
    SKIFF_CA_CERT="$CA_DIR/ca.crt" SKIFF_CA_KEY="$CA_DIR/ca.key" \
    SKIFF_SECRETS_KEYRING_FILE="$KEYRING" \
    SKIFF_WEBHOOK_ALLOWED_HOSTS="${SKIFF_WEBHOOK_ALLOWED_HOSTS:-127.0.0.1,localhost}" \
    SKIFF_ACI_CHECK_REGISTRIES="${SKIFF_ACI_CHECK_REGISTRIES:-http://$SKIFF_REGISTRY,http://$SKIFF_AUTH_REGISTRY,http://$SKIFF_TOKEN_REGISTRY}" \
    SKIFF_RATE_LIMIT_REPLICAS="${SKIFF_RATE_LIMIT_REPLICAS:-$REPLICAS}" \
    RUST_LOG="${RUST_LOG:-info}" NO_COLOR=1 \
    "$API_BIN"
}

# start_worker I: spawn the worker of host I against its containerd.
start_worker() {
  local i=$1 k replica control_planes=""
  # every replica, this worker's own first: it moves on when one fails
  for ((k = 0; k < REPLICAS; k++)); do
    replica=$(((i - 1 + k) % REPLICAS + 1))
    control_planes+="${control_planes:+,}https://127.0.0.1:$(api_grpc_port "$replica")"
  done
  mkdir -p "$(worker_state_dir "$i")"
  spawn_child "$(worker_pidfile "$i")" "$(worker_log "$i")" env \
    SKIFF_CONTROL_PLANE="$control_planes" \
    SKIFF_AGENT_LISTEN="127.0.0.1:$(worker_agent_port "$i")" \
    SKIFF_METRICS_LISTEN="127.0.0.1:$(worker_metrics_port "$i")" \
    SKIFF_HOST_ID="$(host_id "$i")" \
    SKIFF_CA_CERT="$CA_DIR/ca.crt" SKIFF_JOIN_TOKEN="$JOIN_TOKEN" \
    SKIFF_CONTAINERD_SOCKET="${CTR_SOCKS[i - 1]}" \
    SKIFF_CONTAINERD_NAMESPACE="${CTR_NAMESPACES[i - 1]}" \
    SKIFF_STATE_DIR="$(worker_state_dir "$i")" \
    SKIFF_CPU_MILLIS="$CPU_MILLIS" \
    SKIFF_MEMORY_MIB="$MEMORY_MIB" \
    SKIFF_INSECURE_REGISTRIES="$SKIFF_REGISTRY,$SKIFF_AUTH_REGISTRY,$SKIFF_TOKEN_REGISTRY,$SKIFF_TOKEN_SERVER" \
    $(worker_net_env "$i") \
    RUST_LOG="${RUST_LOG:-info}" NO_COLOR=1 \
    "$WORKER_BIN"
}

svc_log() { case $1 in api-*) api_log "${1#api-}" ;; worker-*) worker_log "${1#worker-}" ;; esac; }
svc_desc() { case $1 in api-*) echo "skiff-api ${1#api-}" ;; worker-*) echo "skiff-worker ${1#worker-} ($(host_id "${1#worker-}"))" ;; esac; }

# svc_start SVC: (re)start SVC now and remember its pid and start time.
svc_start() {
  local svc=$1
  case $svc in
    api-*) start_api "${svc#api-}" ;;
    worker-*) start_worker "${svc#worker-}" ;;
  esac
  SVC_PID[$svc]=$SKIFF_CHILD_PID
  SVC_START[$svc]=$SKIFF_CHILD_START
  SVC_SINCE[$svc]=$EPOCHSECONDS
  : "${SVC_BACKOFF[$svc]:=1}" "${SVC_RESTARTS[$svc]:=0}"
  [[ " ${SERVICES[*]} " == *" $svc "* ]] || SERVICES+=("$svc")
}

# svc_log_line SVC MESSAGE: to the terminal and to SVC's log.
svc_log_line() {
  log "$2"
  printf '[skiff up.sh %s] %s\n' "$(date '+%F %T')" "$2" >>"$(svc_log "$1")"
}

# exit_desc STATUS: "status 1", "status 137 (SIGKILL)", ...
exit_desc() {
  local st=$1
  if ((st > 128 && st < 160)); then
    echo "status $st (SIG$(kill -l $((st - 128)) 2>/dev/null || echo "?"))"
  else
    echo "status $st"
  fi
}

# supervise SVC: one look at SVC (Restart=always with back-off).
supervise() {
  local svc=$1 st up delay
  if [[ -n ${SVC_RESTART_AT[$svc]:-} ]]; then
    if ((EPOCHSECONDS >= SVC_RESTART_AT[$svc])); then
      unset "SVC_RESTART_AT[$svc]"
      SVC_RESTARTS[$svc]=$((SVC_RESTARTS[$svc] + 1))
      svc_start "$svc"
      svc_log_line "$svc" "restarted $(svc_desc "$svc") (restart #${SVC_RESTARTS[$svc]}, pid ${SVC_PID[$svc]})"
    fi
    return 0
  fi
  proc_alive "${SVC_PID[$svc]}" "${SVC_START[$svc]}" && return 0
  st=0
  wait "${SVC_PID[$svc]}" 2>/dev/null || st=$?
  up=$((EPOCHSECONDS - SVC_SINCE[$svc]))
  ((up < 60)) || SVC_BACKOFF[$svc]=1
  delay=${SVC_BACKOFF[$svc]}
  SVC_BACKOFF[$svc]=$((delay * 2 > 30 ? 30 : delay * 2))
  SVC_RESTART_AT[$svc]=$((EPOCHSECONDS + delay))
  tail -n 5 "$(svc_log "$svc")" >&2 2>/dev/null || true
  svc_log_line "$svc" "$(svc_desc "$svc") (pid ${SVC_PID[$svc]}) exited with $(exit_desc "$st") after ${up}s; restarting it in ${delay}s"
}

log "starting skiff-api 1 on $API_URL (gRPC 127.0.0.1:$(api_grpc_port 1))"
svc_start api-1
# (replica 1 first: it runs the migrations before the others connect)
log "waiting for $API_URL/readyz"
if ! wait_http "$API_URL/readyz" 120 "$(api_pidfile 1)"; then
  tail -n 30 "$(api_log 1)" >&2 || true
  die "skiff-api did not become ready (log: $(api_log 1))"
fi
for ((i = 2; i <= REPLICAS; i++)); do
  log "starting skiff-api $i on $(api_url "$i") (gRPC 127.0.0.1:$(api_grpc_port "$i"))"
  svc_start "api-$i"
done
# a join token for this run's workers (one use each; a worker that joined in
# an earlier run keeps its certificate in its state dir and needs none)
create_join_token() {
  local body code
  body=$(mktemp)
  code=$(curl -sS -o "$body" -w '%{http_code}' -X POST \
    -H "Authorization: Bearer $ADMIN_TOKEN" -H 'content-type: application/json' \
    -d "{\"uses\":$WORKERS,\"expires_in_s\":3600,\"description\":\"deploy/local/up.sh\"}" \
    "$API_URL/v1/admin/join-tokens") || true
  if [[ $code == 201 ]]; then
    sed -n 's/.*"token"[[:space:]]*:[[:space:]]*"\([^"]*\)".*/\1/p' "$body"
    rm -f "$body"
    return 0
  fi
  log "POST /v1/admin/join-tokens -> $code: $(head -c 300 "$body")"
  rm -f "$body"
  return 1
}
JOIN_TOKEN=$(create_join_token) || die "could not create a join token"
[[ -n $JOIN_TOKEN ]] || die "the join token response had no token"
log "$WORKERS worker(s), each cpu_millis=$CPU_MILLIS memory_mib=$MEMORY_MIB"
for ((i = 1; i <= WORKERS; i++)); do
  log "starting skiff-worker $i ($(host_id "$i"), agent 127.0.0.1:$(worker_agent_port "$i"), metrics 127.0.0.1:$(worker_metrics_port "$i"), containerd ${CTR_SOCKS[i - 1]}, namespace ${CTR_NAMESPACES[i - 1]}, control plane gRPC 127.0.0.1:$(api_grpc_port $(((i - 1) % REPLICAS + 1))))"
  svc_start "worker-$i"
done
for ((i = 2; i <= REPLICAS; i++)); do
  if ! wait_http "$(api_url "$i")/readyz" 120 "$(api_pidfile "$i")"; then
    tail -n 30 "$(api_log "$i")" >&2 || true
    die "skiff-api $i did not become ready (log: $(api_log "$i"))"
  fi
done

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

# The ACI layer's subscription of the tenant: its id, as GET /aci/subscriptions
# (ARM's list of the token's subscriptions) answers it.
ACI_SUBSCRIPTION=$(curl -sS -H "Authorization: Bearer $TOKEN" \
  "$API_URL/aci/subscriptions?api-version=2020-01-01" \
  | sed -n 's/.*"subscriptionId"[[:space:]]*:[[:space:]]*"\([^"]*\)".*/\1/p')
[[ -n $ACI_SUBSCRIPTION ]] || die "GET $API_URL/aci/subscriptions named no subscription"

join_by_comma() { local IFS=,; echo "$*"; }
API_URLS=()
for ((i = 1; i <= REPLICAS; i++)); do API_URLS+=("$(api_url "$i")"); done
WORKER_METRICS=()
for ((i = 1; i <= WORKERS; i++)); do
  WORKER_METRICS+=("http://127.0.0.1:$(worker_metrics_port "$i")/metrics")
done

(
  umask 077
  cat >"$ENV_FILE.tmp" <<EOF
SKIFF_API=$API_URL
SKIFF_TOKEN=$TOKEN
SKIFF_ADMIN_TOKEN=$ADMIN_TOKEN
SKIFF_SAMPLE_IMAGE=$SAMPLE_IMAGE
SKIFF_DATABASE_URL=$SKIFF_PG_URL
SKIFF_CONTAINERD_SOCKET=${CTR_SOCKS[0]}
SKIFF_CONTAINERD_NAMESPACE=${CTR_NAMESPACES[0]}
SKIFF_CONTAINERD_SOCKETS=$(join_by_comma "${CTR_SOCKS[@]}")
SKIFF_CONTAINERD_NAMESPACES=$(join_by_comma "${CTR_NAMESPACES[@]}")
SKIFF_API_URLS=$(join_by_comma "${API_URLS[@]}")
SKIFF_CA_CERT=$CA_DIR/ca.crt
SKIFF_WORKER_METRICS=$(join_by_comma "${WORKER_METRICS[@]}")
SKIFF_AUTH_REGISTRY=$SKIFF_AUTH_REGISTRY
SKIFF_AUTH_REGISTRY_USER=$SKIFF_AUTH_REGISTRY_USER
SKIFF_AUTH_REGISTRY_PASSWORD=$SKIFF_AUTH_REGISTRY_PASSWORD
SKIFF_TOKEN_REGISTRY=$SKIFF_TOKEN_REGISTRY
SKIFF_CLI=$TARGET_DIR/skiff
SKIFF_ACI_URL=$API_URL/aci
SKIFF_ACI_SUBSCRIPTION=$ACI_SUBSCRIPTION
EOF
)
mv "$ENV_FILE.tmp" "$ENV_FILE"

cat <<EOF

skiff is running ($REPLICAS API replica(s), $WORKERS worker(s)). Written to $ENV_FILE:

$(cat "$ENV_FILE")

Try it (in another shell, from $SKIFF_REPO_ROOT):

  set -a; . .skiff/local.env; set +a
  \$SKIFF_CLI run $SAMPLE_IMAGE -- echo hello      # the skiff CLI; \$SKIFF_CLI ps -a
  curl -sS -H "Authorization: Bearer \$SKIFF_TOKEN" -H 'content-type: application/json' \\
    -d '{"image":"$SAMPLE_IMAGE","command":["echo","hello"],"cpu":0.5,"memory_mib":256}' \\
    \$SKIFF_API/v1/containers
  curl -sS -H "Authorization: Bearer \$SKIFF_TOKEN" \$SKIFF_API/v1/containers
  curl -sS -H "Authorization: Bearer \$SKIFF_TOKEN" "\$SKIFF_API/v1/containers/<id>/logs"

The web console: $API_URL/console/ (sign in with \$SKIFF_TOKEN, or \$SKIFF_ADMIN_TOKEN for the hosts)

Inspect: psql \$SKIFF_DATABASE_URL   |   ctr --address \$SKIFF_CONTAINERD_SOCKET -n ${CTR_NAMESPACES[0]} tasks ls
Logs: $STATE/logs/ (api*.log, worker*.log)
A crashed skiff-api or skiff-worker is restarted (with back-off). Press Ctrl-C to stop everything.
EOF

# foreground, until Ctrl-C/SIGTERM: keep every API and worker running
while true; do
  for svc in "${SERVICES[@]}"; do supervise "$svc"; done
  sleep 1 &
  wait $! || true
done
