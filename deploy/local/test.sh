#!/usr/bin/env bash
# deploy/local/test.sh: run every test of the workspace against real services.
#
# As root on Debian 12: installs what is missing (apt), starts a test stack
# private to <checkout>/.skiff/test/ (separate from up.sh's, so both can run
# at the same time):
#   PostgreSQL 15 cluster   127.0.0.1:54339   (always private; DATABASE_URL is ignored)
#   containerd + runc       .skiff/test/containerd/containerd.sock
#   docker-registry         127.0.0.1:5001    with skiff/busybox:{latest,1}
# exports for the tests
#   SKIFF_TEST_DATABASE_URL      postgres://postgres@127.0.0.1:54339/postgres
#                                (an admin URL: tests create their own databases)
#   SKIFF_TEST_CONTAINERD_SOCKET the private containerd's socket
#   SKIFF_TEST_REGISTRY          127.0.0.1:5001
#   SKIFF_TEST_IMAGE             127.0.0.1:5001/skiff/busybox:latest
#   SKIFF_TEST_STATE_DIR         <checkout>/.skiff/test/run (emptied at start)
# then runs `cargo build --workspace --all-targets` and
# `cargo test --workspace -- --test-threads=4` (the e2e tests start
# target/debug/skiff-api and skiff-worker themselves), stops the test stack
# and exits with cargo's exit code. Arguments, if any, replace `--workspace`
# in the `cargo test` command (e.g. `deploy/local/test.sh -p skiff-e2e`).
#
# Leftovers of a killed run are cleaned first: skiff processes the tests
# started (recognised by SKIFF_TEST_STATE_DIR in their environment), every
# task and container in the test containerd (all its namespaces are ours; the
# tests use namespaces skiff-e2e-<run>, never up.sh's "skiff-local", since runc's
# state dir /run/containerd/runc/<namespace> is shared between containerds),
# mounts under .skiff/test, a stale postmaster.pid, databases of earlier runs,
# empty cgroups /sys/fs/cgroup/*/skiff/skiff-e2e-* (the worker's default parent).
set -euo pipefail
# shellcheck source=deploy/local/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PG_PORT=54339
REGISTRY_PORT=5001
STATE="$SKIFF_REPO_ROOT/.skiff/test"
RUN_DIR="$STATE/run"
unset DATABASE_URL

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
    [[ $exe == "$SKIFF_REPO_ROOT/target/"*/skiff-api || $exe == "$SKIFF_REPO_ROOT/target/"*/skiff-worker ]] || continue
    if tr '\0' '\n' <"$d/environ" 2>/dev/null | grep -qF "$STATE/"; then
      log "killing leftover $(basename "$exe") (pid $pid)"
      kill -KILL "$pid" 2>/dev/null || true
      killed=1
    fi
  done
  ((killed == 0)) || sleep 0.5
}

# shellcheck disable=SC2317 # invoked by the EXIT trap
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  log "stopping the test stack"
  kill_test_processes || true
  SKIFF_DELETE_CONTAINERS=1 stop_all "$STATE" || true
  unmount_under "$STATE" || true
  remove_empty_cgroups "skiff/skiff-e2e-*"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

install_deps

# --- clean what an earlier (killed) run left ---------------------------------
kill_test_processes
start_containerd "$STATE/containerd" >/dev/null
SKIFF_DELETE_CONTAINERS=1 containerd_kill_tasks "$STATE/containerd"
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

export SKIFF_TEST_DATABASE_URL="$ADMIN_URL"
export SKIFF_TEST_CONTAINERD_SOCKET="$SKIFF_CTR_SOCK"
export SKIFF_TEST_REGISTRY="$SKIFF_REGISTRY"
export SKIFF_TEST_IMAGE="$SKIFF_REGISTRY/skiff/busybox:latest"
export SKIFF_TEST_STATE_DIR="$RUN_DIR"
log "test stack ready:"
env | grep '^SKIFF_TEST_' | sort >&2

cd "$SKIFF_REPO_ROOT"
rc=0
log "cargo build --workspace --all-targets"
cargo build --workspace --all-targets 9>&- || rc=$?
if ((rc == 0)); then
  if (($#)); then set -- "$@"; else set -- --workspace; fi
  log "cargo test $* -- --test-threads=4"
  cargo test "$@" -- --test-threads=4 9>&- || rc=$?
fi
if ((rc == 0)); then log "all tests passed"; else log "FAILED (exit code $rc)"; fi
exit "$rc"
