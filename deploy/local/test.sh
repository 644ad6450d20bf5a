#!/usr/bin/env bash
# deploy/local/test.sh: run every test of the workspace against real services.
#
# As root on Debian 12: installs what is missing (apt; schemathesis and the
# Azure ACI SDK from PyPI into <checkout>/.skiff/venv), starts a test stack private to
# <checkout>/.skiff/test/ (separate from up.sh's, so both can run at the same
# time):
#   PostgreSQL 15 cluster   127.0.0.1:54339   (always private; DATABASE_URL is ignored)
#   containerd + runc       .skiff/test/containerd/containerd.sock
#   docker-registry         127.0.0.1:5001    with skiff/busybox:{latest,1}
#   docker-registry (auth)  127.0.0.1:5002    the same, behind htpasswd basic auth
#   docker-registry (token) 127.0.0.1:5003    the same images, behind bearer tokens
#   token-server.py         127.0.0.1:5004    its token server (the same login)
# exports for the tests
#   SKIFF_TEST_DATABASE_URL      postgres://postgres@127.0.0.1:54339/postgres
#                                (an admin URL: tests create their own databases)
#   SKIFF_TEST_PG_SOCKET_DIR     the unix-socket dir of that cluster, for a test
#                                process in a network namespace:
#                                postgres://postgres@/postgres?host=<dir>&port=54339
#   SKIFF_TEST_CONTAINERD_SOCKET the private containerd's socket
#   SKIFF_TEST_REGISTRY          127.0.0.1:5001
#   SKIFF_TEST_IMAGE             127.0.0.1:5001/skiff/busybox:latest
#   SKIFF_TEST_AUTH_REGISTRY     127.0.0.1:5002 (basic auth)
#   SKIFF_TEST_AUTH_REGISTRY_USER, SKIFF_TEST_AUTH_REGISTRY_PASSWORD  its login
#   SKIFF_TEST_TOKEN_REGISTRY    127.0.0.1:5003 (token auth, the same login)
#   SKIFF_TEST_TOKEN_SERVER      127.0.0.1:5004 (its token server)
#   SKIFF_TEST_STATE_DIR         <checkout>/.skiff/test/run (emptied at start)
#   SKIFF_TEST_PROBE             the sample image's /usr/local/bin/skiff-probe
#                                (deploy/local/probe.c), for host-side controls
#   SKIFF_TEST_SCHEMATHESIS      the `st` program of schemathesis (pinned in
#                                lib.sh, installed into .skiff/venv), which
#                                tests/e2e/fuzz.rs runs against the API
#   SKIFF_TEST_PYTHON            that venv's python, with Microsoft's ACI SDK
#                                (pinned in lib.sh), for tests/e2e/aci.rs
#   SKIFF_TEST_DEPLOY_LIB        absolute path of deploy/local/lib.sh, for
#                                tests that start more daemons of their own:
#       bash -c 'source "$SKIFF_TEST_DEPLOY_LIB"; start_containerd DIR'
#       bash -c 'source "$SKIFF_TEST_DEPLOY_LIB"; start_postgres DIR PORT'
#                                with DIR under SKIFF_TEST_STATE_DIR (e.g.
#                                run/e2e-<run>/hosts/<n>/containerd): those are
#                                stopped and cleaned up by this script.
# then (a run without arguments) checks `cargo fmt --all --check` and
# `cargo clippy --workspace --all-targets -- -D warnings`, runs
# `cargo build --workspace --all-targets` (time limit 40m) and
# `cargo test --workspace -- --test-threads=4` (time limit 80m, and never past
# 85m since this script started: CI stops a job at 90m, with no cleanup), both
# under `timeout --signal=TERM --kill-after=60`, stops the test stack and exits
# with cargo's exit code (124/137 when a time limit hit: it says so). Arguments,
# if any, replace `--workspace` in the `cargo test` command (e.g.
# `deploy/local/test.sh -p skiff-e2e`). Limits: SKIFF_TEST_BUILD_TIMEOUT,
# SKIFF_TEST_TIMEOUT, SKIFF_TEST_BUDGET (timeout(1) durations: 40m, 80m, 85m).
#
# Leftovers of a killed run are cleaned first, and everything again at exit:
# skiff processes the tests started (recognised by .skiff/test/ in their
# environment); every containerd whose config lives under .skiff/test (the
# test stack's and those the tests started under run/): all their tasks and
# containers (all their namespaces are ours; the tests use namespaces
# skiff-e2e-<run>, never up.sh's "skiff-local*", since runc's state dir
# /run/containerd/runc/<namespace> is shared between containerds), then the
# run's containerds themselves; PostgreSQL clusters under .skiff/test/run;
# network namespaces named skiff-e2e-* (with whatever still runs in them)
# and host-side veths named $SKIFF_TEST_VETH_PREFIX* (ske2e*); mounts under .skiff/test; a
# stale postmaster.pid; databases of earlier runs; empty cgroups
# skiff/skiff-e2e-* (the worker's default parent) under /sys/fs/cgroup (v2)
# or each of its v1 hierarchies.
set -euo pipefail
# shellcheck source=deploy/local/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# (the overrides are for testing this script itself next to a real run)
PG_PORT=${SKIFF_TEST_PG_PORT:-54339}
REGISTRY_PORT=${SKIFF_TEST_REGISTRY_PORT:-5001}
AUTH_REGISTRY_PORT=${SKIFF_TEST_AUTH_REGISTRY_PORT:-5002}
TOKEN_REGISTRY_PORT=${SKIFF_TEST_TOKEN_REGISTRY_PORT:-5003}
TOKEN_SERVER_PORT=${SKIFF_TEST_TOKEN_SERVER_PORT:-5004}
STATE="$SKIFF_REPO_ROOT/.skiff/test"
RUN_DIR="$STATE/run"
# The partitioned pool's network namespaces start with this (the harness
# reads it too, so a run with an override never touches another's).
export SKIFF_TEST_NETNS_PREFIX=${SKIFF_TEST_NETNS_PREFIX:-skiff-e2e-}
NETNS_PREFIX=$SKIFF_TEST_NETNS_PREFIX
# ... and their host-side veths with this (the harness appends a 6-character
# run tail and one letter: a Linux interface name has at most 15).
export SKIFF_TEST_VETH_PREFIX=${SKIFF_TEST_VETH_PREFIX:-ske2e}
if [[ ! $SKIFF_TEST_VETH_PREFIX =~ ^[a-z0-9]{1,8}$ ]]; then
  echo "SKIFF_TEST_VETH_PREFIX must be 1 to 8 of a-z and 0-9 (got '$SKIFF_TEST_VETH_PREFIX')" >&2
  exit 2
fi
# The e2e workers' bridges (and their nft tables skiff_<bridge> and
# container namespaces <bridge>-<id>) start with this.
export SKIFF_TEST_BRIDGE_PREFIX=${SKIFF_TEST_BRIDGE_PREFIX:-skb}
BUILD_TIMEOUT=${SKIFF_TEST_BUILD_TIMEOUT:-40m}
TEST_TIMEOUT=${SKIFF_TEST_TIMEOUT:-80m}
BUDGET=${SKIFF_TEST_BUDGET:-85m}
unset DATABASE_URL
STARTED_AT=$EPOCHSECONDS
LIMITED_PID=""

# duration_s D: seconds of a timeout(1) duration (N, Ns, Nm, Nh, Nd).
duration_s() {
  local d=$1
  [[ $d =~ ^([0-9]+)([smhd]?)$ ]] || die "bad duration '$d' (e.g. 80m)"
  case ${BASH_REMATCH[2]} in
    "" | s) echo "${BASH_REMATCH[1]}" ;;
    m) echo $((BASH_REMATCH[1] * 60)) ;;
    h) echo $((BASH_REMATCH[1] * 3600)) ;;
    d) echo $((BASH_REMATCH[1] * 86400)) ;;
  esac
}
BUILD_TIMEOUT_S=$(duration_s "$BUILD_TIMEOUT")
TEST_TIMEOUT_S=$(duration_s "$TEST_TIMEOUT")
BUDGET_S=$(duration_s "$BUDGET")

mkdir -p "$STATE"
exec 9>"$STATE/lock"
flock -n 9 || die "another deploy/local/test.sh is already running for this checkout ($STATE/lock)"

# kill_test_processes: skiff binaries of this checkout that a test started
# and that outlived it (their environment names our state dir).
kill_test_processes() {
  local d pid exe killed=0
  for d in /proc/[0-9]*; do
    pid=${d#/proc/}
    exe=$(readlink "$d/exe" 2>/dev/null) || continue
    exe=${exe% (deleted)} # a binary rebuilt since it started
    # Any target dir (CARGO_TARGET_DIR may move it): the environment says
    # whose test started it.
    [[ $exe == */skiff-api || $exe == */skiff-worker ]] || continue
    if tr '\0' '\n' <"$d/environ" 2>/dev/null | grep -qF "$STATE/"; then
      log "killing leftover $(basename "$exe") (pid $pid)"
      kill -KILL "$pid" 2>/dev/null || true
      killed=1
    fi
  done
  ((killed == 0)) || sleep 0.5
}

# containerd_dirs_under ROOT: dirs of every containerd whose config lives
# under ROOT: running ones (by command line) and ones whose config file is
# there (a dead containerd may have left tasks). One a line, unique.
containerd_dirs_under() {
  local root=$1 d pid cfg
  {
    for d in /proc/[0-9]*; do
      pid=${d#/proc/}
      [[ $(readlink "$d/exe" 2>/dev/null) == */containerd ]] || continue
      cfg=$(cmdline_of "$pid")
      [[ $cfg == *"--config $root/"*/config.toml* ]] || continue
      cfg=${cfg#*--config }
      cfg=${cfg%% *}
      printf '%s\n' "${cfg%/config.toml}"
    done
    find "$root" -xdev \( -path '*/containerd/root' -o -path '*/containerd/state' -o -path '*/containerd/opt' \
      -o -name pg_wal -o -name base \) -prune -o -name config.toml -print 2>/dev/null | while read -r cfg; do
      [[ $(head -n1 "$cfg" 2>/dev/null) == "# generated by deploy/local/lib.sh: a private containerd"* ]] \
        && printf '%s\n' "${cfg%/config.toml}"
    done
  } | sort -u
}

# stop_test_containerds [KEEP_DIR]: kill every task and delete every container
# of every containerd under $STATE, then stop those containerds (but
# KEEP_DIR's, reused by this run), unmount what they leave. Hashed socket dirs
# (/run/skiff-<hash>) of the run's containerds are removed.
stop_test_containerds() {
  local keep=${1:-} d sockdir
  local dirs=()
  mapfile -t dirs < <(containerd_dirs_under "$STATE")
  for d in "${dirs[@]}"; do
    [[ -n $d ]] || continue
    SKIFF_DELETE_CONTAINERS=1 containerd_kill_tasks "$d" || true
  done
  for d in "${dirs[@]}"; do
    [[ -n $d && $d != "$keep" ]] || continue
    stop_containerd "$d" || true
    sockdir=$(socket_dir "$d")
    if [[ $d == "$RUN_DIR/"* && $sockdir == /run/skiff-* ]]; then rm -rf "$sockdir"; fi
  done
}

# run_pg_data_dirs: data dirs of PostgreSQL clusters the tests started under
# $RUN_DIR (start_postgres): running postmasters whose -D is there (or in a
# dir that DATA_DIR_MOVED files there name), postmaster.pid files there.
# Prints "DATA PID" (PID empty if unknown), one a line, the running ones
# first; a dir may come more than once.
run_pg_data_dirs() {
  local d pid data f
  local moved=()
  mapfile -t moved < <(find "$RUN_DIR" -xdev -name DATA_DIR_MOVED -exec cat {} + 2>/dev/null)
  {
    for d in /proc/[0-9]*; do
      pid=${d#/proc/}
      [[ $(readlink "$d/exe" 2>/dev/null) == "$SKIFF_PG_BIN/postgres" ]] || continue
      local args=()
      mapfile -d '' -t args 2>/dev/null <"$d/cmdline" || continue
      data=""
      for ((f = 0; f + 1 < ${#args[@]}; f++)); do
        [[ ${args[f]} == -D ]] && data=${args[f + 1]}
      done
      [[ -n $data ]] || continue
      if [[ $data == "$RUN_DIR/"* || " ${moved[*]} " == *" $data "* ]]; then printf '%s %s\n' "$data" "$pid"; fi
    done
    for data in "${moved[@]}"; do [[ -f $data/postmaster.pid ]] && printf '%s \n' "$data"; done
    find "$RUN_DIR" -xdev \( -path '*/containerd/root' -o -path '*/containerd/state' \) -prune \
      -o -name postmaster.pid -print 2>/dev/null | while read -r f; do printf '%s \n' "${f%/postmaster.pid}"; done
  }
}

# stop_run_postgres [REMOVE]: stop every cluster of run_pg_data_dirs and
# remove its hashed socket dir (/run/skiff-<hash>); with REMOVE=1 also delete
# moved data dirs (/var/tmp/skiff-<hash>), which live outside $RUN_DIR.
stop_run_postgres() {
  local remove=${1:-0} data pid sockdir
  declare -A seen=()
  while read -r data pid; do
    [[ -n $data && -z ${seen[$data]:-} ]] || continue
    seen[$data]=1
    stop_postgres_data "$data" "$pid" || true
    sockdir=$(socket_dir "$data")
    if [[ $sockdir == /run/skiff-* ]]; then rm -rf "$sockdir"; fi
    if ((remove)) && [[ $data == /var/tmp/skiff-*/pgdata ]]; then rm -rf "$(dirname "$data")"; fi
  done < <(run_pg_data_dirs)
}

# delete_test_netns: network namespaces named skiff-e2e-* (killing what still
# runs in them; deleting one also deletes the veth pairs with an end in it),
# and host-side veths named $SKIFF_TEST_VETH_PREFIX* whose pair never left the host.
delete_test_netns() {
  local ns pids link
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}'); do
    [[ $ns == "$NETNS_PREFIX"* ]] || continue
    pids=$(ip netns pids "$ns" 2>/dev/null || true)
    if [[ -n $pids ]]; then
      log "killing processes left in network namespace $ns: $(echo "$pids" | tr '\n' ' ')"
      # shellcheck disable=SC2086 # one pid a word
      kill -KILL $pids 2>/dev/null || true
      sleep 0.2
    fi
    log "deleting network namespace $ns"
    ip netns del "$ns" 2>/dev/null || log "could not delete network namespace $ns"
  done
  for link in $(ip -o link show type veth 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1); do
    [[ $link == "$SKIFF_TEST_VETH_PREFIX"* ]] || continue
    ip link show "$link" >/dev/null 2>&1 || continue # gone with its peer
    log "deleting leftover veth $link"
    ip link del "$link" 2>/dev/null || true
  done
  # What e2e workers' private networks left (their own clean-up runs at
  # the end of a test binary; a killed run skips it): container
  # namespaces, bridges, the workers' nft tables.
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}'); do
    [[ $ns == "$SKIFF_TEST_BRIDGE_PREFIX"*-* ]] || continue
    log "deleting leftover container network namespace $ns"
    ip netns del "$ns" 2>/dev/null || true
  done
  for link in $(ip -o link show type bridge 2>/dev/null | awk -F': ' '{print $2}'); do
    [[ $link == "$SKIFF_TEST_BRIDGE_PREFIX"* ]] || continue
    log "deleting leftover bridge $link"
    ip link del "$link" 2>/dev/null || true
  done
  # portmap's DNAT chains of those networks (named in each rule's comment):
  # left behind, they would shadow a later run's port.
  local rule chain
  while read -r rule; do
    chain=$(awk '{for (i = 1; i < NF; i++) if ($i == "-j") print $(i + 1)}' <<<"$rule")
    log "deleting leftover port mapping chain $chain"
    eval "iptables -t nat ${rule/-A /-D }" 2>/dev/null || true
    iptables -t nat -F "$chain" 2>/dev/null || true
    iptables -t nat -X "$chain" 2>/dev/null || true
  done < <(iptables -t nat -S CNI-HOSTPORT-DNAT 2>/dev/null | grep -F "skiff-$SKIFF_TEST_BRIDGE_PREFIX" || true)
  local family table
  while read -r _ family table; do
    [[ $table == skiff_"$SKIFF_TEST_BRIDGE_PREFIX"* ]] || continue
    log "deleting leftover nft table $family $table"
    nft delete table "$family" "$table" 2>/dev/null || true
  done < <(nft list tables 2>/dev/null)
}

# stop_limited: stop the time-limited cargo run, if one is under way
# (timeout(1) passes the signal on to cargo's whole process group, and
# SIGKILLs it 60 s later if needed).
# shellcheck disable=SC2317 # invoked by the EXIT trap (via cleanup)
stop_limited() {
  [[ -n $LIMITED_PID ]] || return 0
  if kill -0 "$LIMITED_PID" 2>/dev/null; then
    log "stopping cargo (pid $LIMITED_PID)"
    kill -TERM "$LIMITED_PID" 2>/dev/null || true
    wait "$LIMITED_PID" 2>/dev/null || true
  fi
  LIMITED_PID=""
}

# shellcheck disable=SC2317 # invoked by the EXIT trap
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  log "stopping the test stack"
  stop_limited || true
  kill_test_processes || true
  stop_test_containerds || true
  stop_run_postgres 0 || true
  delete_test_netns || true
  SKIFF_DELETE_CONTAINERS=1 stop_all "$STATE" || true
  unmount_under "$STATE" || true
  remove_empty_cgroups "skiff/skiff-e2e-*"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

install_deps
install_schemathesis >/dev/null
install_aci_sdk >/dev/null
# skiff-api embeds the web console: built before cargo (CI fails without it).
build_console

# --- clean what an earlier (killed) run left ---------------------------------
kill_test_processes
start_containerd "$STATE/containerd" >/dev/null
TEST_CTR_SOCK=$SKIFF_CTR_SOCK
stop_test_containerds "$STATE/containerd"
stop_run_postgres 1
delete_test_netns
unmount_under "$RUN_DIR"
rm -rf "$RUN_DIR"
remove_empty_cgroups "skiff/skiff-e2e-*"
mkdir -p "$RUN_DIR"

start_postgres "$STATE/postgres" "$PG_PORT" >/dev/null
ADMIN_URL="postgres://postgres@127.0.0.1:$PG_PORT/postgres"
psql_url "$ADMIN_URL" >/dev/null <<'EOF'
SELECT format('DROP DATABASE %I WITH (FORCE)', datname)
  FROM pg_database
 WHERE NOT datistemplate AND datname NOT IN ('postgres', 'skiff')
\gexec
EOF

start_registry "$STATE/registry" "$REGISTRY_PORT" >/dev/null
log "building and pushing the sample image to $SKIFF_REGISTRY"
build_and_push_images "$SKIFF_REGISTRY" "$STATE/image-build"
start_auth_registry "$STATE/auth-registry" "$AUTH_REGISTRY_PORT" >/dev/null
log "pushing the sample image to $SKIFF_AUTH_REGISTRY (basic auth)"
build_and_push_images "$SKIFF_AUTH_REGISTRY" "$STATE/image-build" "$STATE/auth-registry/netrc"
start_token_registry "$STATE/token-registry" "$TOKEN_REGISTRY_PORT" "$TOKEN_SERVER_PORT" \
  "$STATE/auth-registry" "$SKIFF_AUTH_REGISTRY_USER" "$STATE/auth-registry/password" >/dev/null

export SKIFF_TEST_DATABASE_URL="$ADMIN_URL"
export SKIFF_TEST_PG_SOCKET_DIR="$SKIFF_PG_SOCKET_DIR"
export SKIFF_TEST_CONTAINERD_SOCKET="$TEST_CTR_SOCK"
export SKIFF_TEST_REGISTRY="$SKIFF_REGISTRY"
export SKIFF_TEST_IMAGE="$SKIFF_REGISTRY/skiff/busybox:latest"
export SKIFF_TEST_AUTH_REGISTRY="$SKIFF_AUTH_REGISTRY"
export SKIFF_TEST_AUTH_REGISTRY_USER="$SKIFF_AUTH_REGISTRY_USER"
export SKIFF_TEST_AUTH_REGISTRY_PASSWORD="$SKIFF_AUTH_REGISTRY_PASSWORD"
export SKIFF_TEST_TOKEN_REGISTRY="$SKIFF_TOKEN_REGISTRY"
export SKIFF_TEST_TOKEN_SERVER="$SKIFF_TOKEN_SERVER"
export SKIFF_TEST_STATE_DIR="$RUN_DIR"
export SKIFF_TEST_DEPLOY_LIB="$SKIFF_DEPLOY_DIR/lib.sh"
export SKIFF_TEST_PROBE="$STATE/image-build/skiff-probe"
export SKIFF_TEST_SCHEMATHESIS="$SKIFF_SCHEMATHESIS"
export SKIFF_TEST_PYTHON="$SKIFF_PYTHON"
log "test stack ready:"
env | grep '^SKIFF_TEST_' | grep -v '_PASSWORD=' | sort >&2

# run_limited LIMIT_S WHAT CMD...: run CMD under timeout(1) with LIMIT_S, in
# the background (so that Ctrl-C/SIGTERM reach this script's traps at once:
# timeout puts CMD in a process group of its own). Sets RC; says clearly when
# the limit hit.
run_limited() {
  local limit=$1 what=$2 t0=$EPOCHSECONDS
  shift 2
  RC=0
  timeout --signal=TERM --kill-after=60 "${limit}s" "$@" 9>&- &
  LIMITED_PID=$!
  wait "$LIMITED_PID" || RC=$?
  LIMITED_PID=""
  if ((RC == 124 || (RC == 137 && EPOCHSECONDS - t0 >= limit))); then
    local how="SIGTERM"
    ((RC == 124)) || how="SIGTERM, then SIGKILL 60 s later"
    log "TIME LIMIT HIT: $what did not finish within ${limit}s ($((limit / 60)) min): stopped by timeout ($how; exit code $RC)"
    TIMED_OUT=1
  fi
}

cd "$SKIFF_REPO_ROOT"
RC=0
TIMED_OUT=0
# The whole run (no arguments) also holds the lint gates: formatting and
# clippy with warnings as errors. A focused run (arguments) skips them.
if ((! $#)); then
  log "cargo fmt --all --check"
  run_limited 600 "cargo fmt --all --check" cargo fmt --all --check
  if ((RC == 0)); then
    log "cargo clippy --workspace --all-targets -- -D warnings (time limit ${BUILD_TIMEOUT_S}s)"
    run_limited "$BUILD_TIMEOUT_S" "cargo clippy" cargo clippy --workspace --all-targets -- -D warnings
  fi
fi
if ((RC == 0)); then
  log "cargo build --workspace --all-targets (time limit ${BUILD_TIMEOUT_S}s)"
  run_limited "$BUILD_TIMEOUT_S" "cargo build --workspace --all-targets" cargo build --workspace --all-targets
fi
if ((RC == 0)); then
  if (($#)); then set -- "$@"; else set -- --workspace; fi
  limit=$TEST_TIMEOUT_S
  left=$((BUDGET_S - (EPOCHSECONDS - STARTED_AT)))
  if ((left < limit)); then
    log "time budget: ${left}s left of ${BUDGET_S}s (the set-up and build took $((EPOCHSECONDS - STARTED_AT))s), so the tests get ${left}s instead of ${limit}s"
    limit=$((left > 60 ? left : 60))
  fi
  log "cargo test $* -- --test-threads=4 (time limit ${limit}s)"
  run_limited "$limit" "cargo test $*" cargo test "$@" -- --test-threads=4
fi
if ((RC == 0)); then
  log "all tests passed"
elif ((TIMED_OUT)); then
  log "FAILED: time limit hit (exit code $RC); cargo's output above names the tests still running (\"has been running for over 60 seconds\")"
else
  log "FAILED (exit code $RC)"
fi
exit "$RC"
