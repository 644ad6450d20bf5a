# shellcheck shell=bash
# Shared functions of the local stack: deploy/local/up.sh (run the platform)
# and deploy/local/test.sh (run every test). Source it; do not execute it.
#
# Everything started here is private to one state directory (DIR below):
# its own PostgreSQL cluster, containerd, registry and skiff processes, each
# with a pid file in DIR. Nothing here touches the system's containerd
# (/run/containerd/containerd.sock) or the Debian PostgreSQL cluster "main".
#
# Conventions:
#   - log lines go to stderr; functions that "return" a value set a global
#     (SKIFF_PG_URL, SKIFF_CTR_SOCK, SKIFF_REGISTRY) and also print it on stdout.
#   - a pid file is trusted only if it still names the very process that was
#     started: every pid file written here (PIDFILE, the pid alone, as other
#     tools read it) has a companion PIDFILE.start with "PID STARTTIME BOOT_ID"
#     (STARTTIME = field 22 of /proc/PID/stat, set at fork and unchanged by
#     exec), so a reused pid never matches and no check depends on a command
#     line, which changes (or is briefly empty) while the process execs.
#     Pid files without that companion (postgres's postmaster.pid, files of
#     older runs) are trusted only if the process is alive, not a zombie, AND
#     its command line still names our config/data path.
#   - Only one up.sh and one test.sh per checkout at a time (each takes a lock).

SKIFF_REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
SKIFF_DEPLOY_DIR="$SKIFF_REPO_ROOT/deploy/local"
SKIFF_PG_BIN="${SKIFF_PG_BIN:-/usr/lib/postgresql/15/bin}"

SKIFF_APT_PACKAGES=(
  containerd runc postgresql docker-registry busybox-static protobuf-compiler
  golang-github-containers-common curl ca-certificates iproute2 wrk gcc libc6-dev
  prometheus
  apache2-utils chromium
)

log() { printf '[skiff %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# short_hash STRING: 8 hex chars, stable for a given string (e.g. a path).
short_hash() { printf '%s' "$1" | sha256sum | cut -c1-8; }

# ---------------------------------------------------------------------------
# packages
# ---------------------------------------------------------------------------

# The API fuzzer the tests run (tests/e2e/fuzz.rs), pinned: schemathesis from
# PyPI, in a virtual environment of the checkout (.skiff/venv) made with
# Debian's python3 and python3-venv.
SKIFF_SCHEMATHESIS_VERSION=4.32.5

# Microsoft's Python SDK for Azure Container Instances, which the ACI tests
# (tests/e2e/aci.rs, aci_sdk.py) drive skiff's /aci with, pinned with the
# Azure core libraries it runs on; into the same virtual environment.
SKIFF_ACI_SDK_PINS="azure-mgmt-containerinstance==10.1.0 azure-mgmt-core==1.6.0 azure-core==1.41.0"

# apt_install_missing PACKAGE...: install those of the Debian packages that
# are missing (apt-get update only when something is).
apt_install_missing() {
  local missing=() p
  for p in "$@"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
      missing+=("$p")
    fi
  done
  if ((${#missing[@]})); then
    log "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q "${missing[@]}"
  fi
}

# install_deps: install the Debian packages that are missing, then check the
# Rust toolchain.
install_deps() {
  [[ $(id -u) -eq 0 ]] || die "run as root (it installs Debian packages, runs containerd and runc)"
  apt_install_missing "${SKIFF_APT_PACKAGES[@]}"
  if ! command -v cargo >/dev/null 2>&1; then
    if [[ -x "${HOME:-/root}/.cargo/bin/cargo" ]]; then
      export PATH="${HOME:-/root}/.cargo/bin:$PATH"
    else
      die "cargo not found: install Rust (https://rustup.rs) first, e.g. 'curl https://sh.rustup.rs -sSf | sh -s -- -y'"
    fi
  fi
  [[ -x "$SKIFF_PG_BIN/initdb" ]] || die "$SKIFF_PG_BIN/initdb missing (expected PostgreSQL 15 from Debian 12)"
}

# install_node: node and npm for the web console (console/), from Debian's
# nodejs and npm packages, only when `npm` is missing: a node that ships its
# own npm (e.g. NodeSource's nodejs) conflicts with Debian's npm package.
install_node() {
  command -v npm >/dev/null 2>&1 || apt_install_missing nodejs npm
  command -v node >/dev/null 2>&1 || die "node is missing after installing nodejs"
}

# build_console: `npm ci` and `npm run build` in console/ (skiff-api embeds
# console/dist, so before cargo), each skipped when what it would make is
# there already from the same inputs (package-lock.json; the sources), so
# that an unchanged console neither reinstalls nor makes cargo rebuild the
# API. Stamps: .skiff/console-{deps,build}.sha256.
build_console() {
  local dir="$SKIFF_REPO_ROOT/console" stamps="$SKIFF_REPO_ROOT/.skiff" deps sources
  install_node
  mkdir -p "$stamps"
  deps=$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)
  if [[ ! -x $dir/node_modules/.bin/vite || $(cat "$stamps/console-deps.sha256" 2>/dev/null) != "$deps" ]]; then
    log "console: npm ci"
    (cd "$dir" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund >&2) || die "npm ci failed in $dir"
    printf '%s\n' "$deps" >"$stamps/console-deps.sha256"
  fi
  sources=$(cd "$dir" && find index.html vite.config.js package.json package-lock.json src public -type f -print0 \
    | sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1)
  if [[ ! -f $dir/dist/index.html || $(cat "$stamps/console-build.sha256" 2>/dev/null) != "$sources" ]]; then
    log "console: npm run build"
    (cd "$dir" && npm run build >&2) || die "npm run build failed in $dir"
    printf '%s\n' "$sources" >"$stamps/console-build.sha256"
  fi
}

# install_schemathesis: schemathesis $SKIFF_SCHEMATHESIS_VERSION in
# <checkout>/.skiff/venv (made, or mended, when it lacks that version). Sets
# and prints SKIFF_SCHEMATHESIS, the path of its `st` program.
install_schemathesis() {
  local venv="$SKIFF_REPO_ROOT/.skiff/venv"
  SKIFF_SCHEMATHESIS="$venv/bin/st"
  if [[ $("$SKIFF_SCHEMATHESIS" --version 2>/dev/null) != "st, version $SKIFF_SCHEMATHESIS_VERSION" ]]; then
    apt_install_missing python3 python3-venv
    # (Debian's python3 by its path: not whatever python3 a PATH finds first)
    if [[ ! -x $venv/bin/pip ]]; then
      log "creating the Python virtual environment $venv"
      /usr/bin/python3 -m venv --clear "$venv" || die "could not create the virtual environment $venv"
    fi
    log "installing schemathesis $SKIFF_SCHEMATHESIS_VERSION (PyPI) into $venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SKIFF_SCHEMATHESIS_VERSION" >&2 \
      || die "could not install schemathesis $SKIFF_SCHEMATHESIS_VERSION into $venv"
    [[ $("$SKIFF_SCHEMATHESIS" --version 2>/dev/null) == "st, version $SKIFF_SCHEMATHESIS_VERSION" ]] \
      || die "$SKIFF_SCHEMATHESIS is not schemathesis $SKIFF_SCHEMATHESIS_VERSION after installing it"
  fi
  printf '%s\n' "$SKIFF_SCHEMATHESIS"
}

# install_aci_sdk: the pins of SKIFF_ACI_SDK_PINS in <checkout>/.skiff/venv
# (made by install_schemathesis, which runs first). Sets and prints
# SKIFF_PYTHON, the venv's python.
install_aci_sdk() {
  local venv="$SKIFF_REPO_ROOT/.skiff/venv" want have
  SKIFF_PYTHON="$venv/bin/python"
  want=$(tr ' ' '\n' <<<"$SKIFF_ACI_SDK_PINS" | sort | tr '\n' ' ')
  have=$("$SKIFF_PYTHON" -c 'from importlib.metadata import version as v
names = ["azure-mgmt-containerinstance", "azure-mgmt-core", "azure-core"]
print(" ".join(sorted(f"{n}=={v(n)}" for n in names)) + " ")' 2>/dev/null) || true
  if [[ $have != "$want" ]]; then
    log "installing $SKIFF_ACI_SDK_PINS (PyPI) into $venv"
    # shellcheck disable=SC2086 # one pin a word
    "$venv/bin/pip" install --quiet --disable-pip-version-check $SKIFF_ACI_SDK_PINS >&2 \
      || die "could not install $SKIFF_ACI_SDK_PINS into $venv"
  fi
  printf '%s\n' "$SKIFF_PYTHON"
}

# ---------------------------------------------------------------------------
# processes, pid files, ports
# ---------------------------------------------------------------------------

# cmdline_of PID: the process's command line with spaces, empty if gone/zombie.
cmdline_of() { tr '\0' ' ' 2>/dev/null <"/proc/$1/cmdline" || true; }

# this boot's id: a process start time is only meaningful within one boot
read -r SKIFF_BOOT_ID </proc/sys/kernel/random/boot_id || SKIFF_BOOT_ID=unknown

# proc_start PID: prints PID's start time (field 22 of /proc/PID/stat, clock
# ticks since boot: set at fork, unchanged by exec). Fails if PID is gone or
# a zombie (a dead daemon reparented to an init that does not reap).
proc_start() {
  local stat f
  [[ $1 =~ ^[0-9]+$ ]] || return 1
  read -r stat 2>/dev/null <"/proc/$1/stat" || return 1
  # field 2 (comm) may contain spaces and parentheses: skip past the last ") "
  read -r -a f <<<"${stat##*") "}"
  [[ ${f[0]:-Z} != [ZX] && -n ${f[19]:-} ]] || return 1
  printf '%s\n' "${f[19]}"
}

# proc_alive PID START: PID is alive (not a zombie) and started at START.
proc_alive() {
  local s
  s=$(proc_start "$1") || return 1
  [[ $s == "$2" ]]
}

# pid_matches PID NEEDLE: PID is alive and its command line contains NEEDLE.
# (Only for processes that finished exec'ing long ago: see pidfile_alive.)
pid_matches() {
  local pid=$1 needle=$2
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  [[ $(cmdline_of "$pid") == *"$needle"* ]]
}

# record_pid PIDFILE PID [START]: write PIDFILE.start ("PID START BOOT_ID")
# then PIDFILE (the pid alone), each atomically. START defaults to PID's
# start time read now (right for a process that is certainly still the one
# meant, e.g. found by its full command line).
record_pid() {
  local pidfile=$1 pid=$2 start=${3:-}
  [[ -n $start ]] || start=$(proc_start "$pid") || start=gone
  printf '%s %s %s\n' "$pid" "$start" "$SKIFF_BOOT_ID" >"$pidfile.start.tmp" && mv -f "$pidfile.start.tmp" "$pidfile.start"
  printf '%s\n' "$pid" >"$pidfile.tmp" && mv -f "$pidfile.tmp" "$pidfile"
}

# pidfile_alive PIDFILE NEEDLE: prints the pid if PIDFILE names a live
# process that is still the one recorded: same start time and boot per
# PIDFILE.start; without PIDFILE.start (postmaster.pid, older runs), a live
# process whose command line contains NEEDLE.
pidfile_alive() {
  local pid id_pid="" id_start="" id_boot=""
  [[ -f $1 ]] || return 1
  pid=$(head -n1 "$1" 2>/dev/null || true)
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  if [[ -f $1.start ]] && read -r id_pid id_start id_boot 2>/dev/null <"$1.start" && [[ $id_pid == "$pid" ]]; then
    [[ $id_boot == "$SKIFF_BOOT_ID" ]] || return 1
    proc_alive "$pid" "$id_start" || return 1
  else
    pid_matches "$pid" "$2" || return 1
  fi
  printf '%s\n' "$pid"
}

# find_pid_by_cmdline NEEDLE: pids of processes whose command line contains
# NEEDLE (an absolute path of ours, never a bare program name).
find_pid_by_cmdline() {
  local d pid
  for d in /proc/[0-9]*; do
    pid=${d#/proc/}
    [[ $pid == "$$" || $pid == "$BASHPID" ]] && continue
    if [[ $(cmdline_of "$pid") == *"$1"* ]]; then printf '%s\n' "$pid"; fi
  done
}

# The first thing a spawned process does, in a bash that then execs the
# command (same pid, same start time): record its own pid, start time and
# boot id in "$0.start", then its pid in "$0" (the pid file).
# shellcheck disable=SC2016 # expanded by the inner bash
SKIFF_RECORD_SELF='read -r s </proc/$$/stat && read -r -a f <<<"${s##*") "}" && read -r b </proc/sys/kernel/random/boot_id && printf "%s %s %s\n" $$ "${f[19]}" "$b" >"$0.start.tmp" && mv -f "$0.start.tmp" "$0.start" && echo $$ >"$0.tmp" && mv -f "$0.tmp" "$0"'

# spawn_daemon PIDFILE LOGFILE CMD...: start CMD in its own session (so a
# Ctrl-C in the terminal reaches only the script, which then stops things in
# order), append its output to LOGFILE, and write its real pid to PIDFILE
# (and PIDFILE.start, see above) before it execs CMD. Not a child of the
# caller: it outlives it.
spawn_daemon() {
  local pidfile=$1 logfile=$2 i
  shift 2
  rm -f "$pidfile" "$pidfile.start"
  mkdir -p "$(dirname "$logfile")" "$(dirname "$pidfile")"
  # (fd 9, the lock of up.sh/test.sh, is not inherited: a daemon outliving
  # a killed script must not keep the next run from taking the lock)
  setsid -f bash -c "$SKIFF_RECORD_SELF"' && exec "$@"' "$pidfile" "$@" \
    </dev/null >>"$logfile" 2>&1 9>&-
  for ((i = 0; i < 100; i++)); do
    [[ -s $pidfile ]] && return 0
    sleep 0.05
  done
  die "could not start $1 (see $logfile)"
}

# spawn_child PIDFILE LOGFILE CMD...: like spawn_daemon (own session, output
# to LOGFILE, PIDFILE + PIDFILE.start), but CMD stays a child of this shell,
# so `wait $SKIFF_CHILD_PID` gives its exit status. Sets SKIFF_CHILD_PID and
# SKIFF_CHILD_START; call it directly, never in $(...).
# (An asynchronous command of a shell without job control is not a process
# group leader, so setsid(1) calls setsid() and execs without forking: the
# pid of the background job is CMD's pid.)
spawn_child() {
  local pidfile=$1 logfile=$2
  shift 2
  rm -f "$pidfile" "$pidfile.start"
  mkdir -p "$(dirname "$logfile")" "$(dirname "$pidfile")"
  setsid "$@" </dev/null >>"$logfile" 2>&1 9>&- &
  SKIFF_CHILD_PID=$!
  # read at once: the start time is the fork's, whatever exec is under way
  SKIFF_CHILD_START=$(proc_start "$SKIFF_CHILD_PID") || SKIFF_CHILD_START=gone
  record_pid "$pidfile" "$SKIFF_CHILD_PID" "$SKIFF_CHILD_START"
}

# stop_pidfiles NAME NEEDLE TIMEOUT_S PIDFILE...: SIGTERM every live process
# of the pid files at once, wait up to TIMEOUT_S for all, then SIGKILL those
# left. Removes the pid files.
stop_pidfiles() {
  local name=$1 needle=$2 timeout=$3 f pid i alive
  shift 3
  local files=()
  for f in "$@"; do
    if pid=$(pidfile_alive "$f" "$needle"); then
      log "stopping $name (pid $pid, ${f#"$SKIFF_REPO_ROOT"/})"
      kill -TERM "$pid" 2>/dev/null || true
      files+=("$f")
    else
      rm -f "$f" "$f.start"
    fi
  done
  ((${#files[@]})) || return 0
  for ((i = 0; i < timeout * 10; i++)); do
    alive=0
    for f in "${files[@]}"; do
      if pidfile_alive "$f" "$needle" >/dev/null; then alive=1 && break; fi
    done
    ((alive)) || break
    sleep 0.1
  done
  for f in "${files[@]}"; do
    if pid=$(pidfile_alive "$f" "$needle"); then
      log "$name (pid $pid) did not stop within ${timeout}s: SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$f" "$f.start"
  done
}

# stop_pidfile PIDFILE NEEDLE NAME [TIMEOUT_S]: SIGTERM, wait, then SIGKILL.
stop_pidfile() { stop_pidfiles "$3" "$2" "${4:-10}" "$1"; }

# port_pids PORT: pids listening on 127.0.0.1:PORT / *:PORT (TCP), one a line.
port_pids() {
  ss -ltnpH "( sport = :$1 )" 2>/dev/null | grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -u || true
}

# port_in_use PORT
port_in_use() { [[ -n $(ss -ltnH "( sport = :$1 )" 2>/dev/null) ]]; }

# ensure_port_free PORT WHAT [OUR_PID]: fail clearly if PORT is taken by
# anything but OUR_PID.
ensure_port_free() {
  local port=$1 what=$2 ours=${3:-} pid others=()
  port_in_use "$port" || return 0
  for pid in $(port_pids "$port"); do
    [[ -n $ours && $pid == "$ours" ]] || others+=("$pid")
  done
  if ((${#others[@]} == 0)) && [[ -n $ours ]]; then return 0; fi
  local desc=""
  for pid in "${others[@]}"; do desc+="${desc:+;} pid $pid: $(cmdline_of "$pid")"; done
  die "port $port (needed for $what) is already in use by something that is not ours:${desc:- an unknown process}. Stop it or free the port."
}

# wait_http URL TIMEOUT_S [PIDFILE [NEEDLE]]: wait for URL to answer 2xx;
# give up early if the process of PIDFILE died (pidfile_alive: by start time,
# never by a command line that changes while the process execs).
# (Legacy form: a numeric PID instead of PIDFILE is checked by NEEDLE.)
wait_http() {
  local url=$1 timeout=$2 pidfile=${3:-} needle=${4:-} i
  for ((i = 0; i < timeout * 5; i++)); do
    if curl -fsS -o /dev/null --max-time 2 "$url" 2>/dev/null; then return 0; fi
    if [[ $pidfile =~ ^[0-9]+$ ]]; then
      pid_matches "$pidfile" "$needle" || return 1
    elif [[ -n $pidfile ]]; then
      pidfile_alive "$pidfile" "$needle" >/dev/null || return 1
    fi
    sleep 0.2
  done
  return 1
}

# socket_dir DIR: where DIR's unix sockets go. sun_path is limited to 108
# bytes, so when DIR is long they go under /run/skiff-<hash of DIR>/ instead.
socket_dir() {
  local dir=$1
  if ((${#dir} <= 70)); then
    printf '%s\n' "$dir"
  else
    printf '/run/skiff-%s\n' "$(short_hash "$dir")"
  fi
}

# unmount_under DIR: unmount everything mounted at or below DIR, deepest first
# (overlay rootfs mounts left by containerd/runc after a killed run).
unmount_under() {
  local dir mp
  dir=$(realpath -m "$1")
  # field 5 of mountinfo is the mount point, with spaces etc. octal-escaped
  awk '{print $5}' /proc/self/mountinfo | while read -r mp; do
    mp=$(printf '%b' "$mp")
    if [[ $mp == "$dir" || $mp == "$dir"/* ]]; then printf '%s\n' "$mp"; fi
  done | sort -r | while read -r mp; do
    log "unmounting leftover mount $mp"
    umount "$mp" 2>/dev/null || umount -l "$mp" 2>/dev/null || log "could not unmount $mp"
  done
}

# ---------------------------------------------------------------------------
# PostgreSQL
# ---------------------------------------------------------------------------

# pg_data_dir DIR: the data directory to use for a cluster meant to live in
# DIR. PostgreSQL runs as the "postgres" user, which needs to traverse every
# folder above its data dir. Decision: we never chmod the user's tree; if the
# postgres user cannot reach DIR's parent (e.g. a checkout under /root, which
# is mode 700), the cluster lives in /var/tmp/skiff-<hash of DIR>/pgdata and
# DIR/DATA_DIR_MOVED says where.
pg_data_dir() {
  local dir=$1 parent
  parent=$(dirname "$dir")
  mkdir -p "$parent"
  if runuser -u postgres -- test -x "$parent" 2>/dev/null && runuser -u postgres -- test -r "$parent" 2>/dev/null; then
    printf '%s\n' "$dir"
  else
    printf '/var/tmp/skiff-%s/pgdata\n' "$(short_hash "$dir")"
  fi
}

# (run from / : the postgres user may not be allowed into the current dir)
pg_ctl_as_postgres() { (cd / && runuser -u postgres -- "$SKIFF_PG_BIN/pg_ctl" "$@"); }

# psql_url URL ARGS...: run psql (as root, over TCP with trust auth).
psql_url() { local url=$1; shift; "$SKIFF_PG_BIN/psql" "$url" -v ON_ERROR_STOP=1 -qtAX "$@"; }

# start_postgres DIR PORT: a private cluster in DIR on 127.0.0.1:PORT,
# database "skiff" created, max_connections SKIFF_PG_MAX_CONNECTIONS (400:
# the e2e run's pools share one cluster, each replica pooling up to
# SKIFF_DB_MAX_CONNECTIONS; 100, the default, ran out under load). Sets and prints SKIFF_PG_URL; also sets
# SKIFF_PG_SOCKET_DIR (its unix-socket directory: reachable from a network
# namespace too, postgres://postgres@/postgres?host=<dir>&port=PORT). If
# DATABASE_URL is set, nothing is started and that URL is used. Can be called
# for several clusters (other DIR and PORT), also from a fresh shell:
#   bash -c 'source deploy/local/lib.sh; start_postgres DIR PORT'
start_postgres() {
  local dir=$1 port=$2 data sockdir pid url
  # shellcheck disable=SC2034 # for the callers
  SKIFF_PG_SOCKET_DIR=""
  if [[ -n ${DATABASE_URL:-} ]]; then
    log "DATABASE_URL is set: using it, no private PostgreSQL cluster"
    SKIFF_PG_URL=$DATABASE_URL
    printf '%s\n' "$SKIFF_PG_URL"
    return 0
  fi
  data=$(pg_data_dir "$dir")
  if [[ $data != "$dir" ]]; then
    log "postgres cannot traverse $(dirname "$dir"); cluster data dir is $data"
    mkdir -p "$dir" && printf '%s\n' "$data" >"$dir/DATA_DIR_MOVED"
  fi
  sockdir=$(socket_dir "$data")
  # shellcheck disable=SC2034 # for the callers
  SKIFF_PG_SOCKET_DIR=$sockdir
  mkdir -p "$(dirname "$data")"
  if [[ $sockdir != "$data" ]]; then
    mkdir -p "$sockdir"
    chown postgres:postgres "$sockdir"
  fi

  # already running (ours, with this data dir)?
  if pid=$(pidfile_alive "$data/postmaster.pid" "$data"); then
    local running_port
    running_port=$(sed -n 4p "$data/postmaster.pid")
    if [[ $running_port == "$port" ]]; then
      log "postgres already running (pid $pid, $data): reusing it"
    else
      log "postgres running on port $running_port instead of $port: restarting it"
      pg_ctl_as_postgres -D "$data" -m fast -w stop >&2
      pid=""
    fi
  else
    pid=""
  fi

  if [[ -z $pid ]]; then
    ensure_port_free "$port" "PostgreSQL"
    # initdb into a temporary dir, then rename: a run killed mid-initdb
    # leaves only the temporary dir, which is wiped next time.
    if [[ ! -f $data/PG_VERSION || ! -f $data/global/pg_control ]]; then
      [[ -e $data ]] && log "removing incomplete data dir $data"
      rm -rf "$data" "$data.initdb"
      mkdir -p "$data.initdb"
      chown postgres:postgres "$data.initdb"
      chmod 700 "$data.initdb"
      log "initdb $data"
      (cd / && runuser -u postgres -- "$SKIFF_PG_BIN/initdb" -D "$data.initdb" -U postgres --auth=trust \
        -E UTF8 --locale=C.UTF-8) >"$(dirname "$data")/initdb.log" 2>&1 \
        || die "initdb failed: see $(dirname "$data")/initdb.log"
      mv "$data.initdb" "$data"
    fi
    chown -R postgres:postgres "$data"
    # a postmaster.pid whose process is gone (or is not our postgres) is stale
    if [[ -f $data/postmaster.pid ]]; then
      log "removing stale $data/postmaster.pid"
      rm -f "$data/postmaster.pid"
    fi
    rm -f "$sockdir/.s.PGSQL.$port" "$sockdir/.s.PGSQL.$port.lock"
    log "starting postgres on 127.0.0.1:$port ($data)"
    # setsid: the postmaster gets its own session, so Ctrl-C reaches only us.
    # Retried: right after a kill -9 of the postmaster its backends may still
    # hold the old shared memory for a moment.
    local attempt
    for attempt in 1 2 3; do
      if (cd / && setsid -w runuser -u postgres -- "$SKIFF_PG_BIN/pg_ctl" -D "$data" -l "$data/postgres.log" -w -t 60 \
        -o "-p $port -k $sockdir -c listen_addresses=127.0.0.1 -c max_connections=${SKIFF_PG_MAX_CONNECTIONS:-400}" \
        start >&2 9>&-); then
        break
      fi
      ((attempt < 3)) || die "postgres did not start: see $data/postgres.log"
      rm -f "$data/postmaster.pid"
      sleep 2
    done
  fi

  url="postgres://postgres@127.0.0.1:$port"
  if [[ $(psql_url "$url/postgres" -c "SELECT 1 FROM pg_database WHERE datname = 'skiff'") != 1 ]]; then
    psql_url "$url/postgres" -c "CREATE DATABASE skiff" >/dev/null
  fi
  SKIFF_PG_URL="$url/skiff"
  printf '%s\n' "$SKIFF_PG_URL"
}

# stop_postgres DIR: fast shutdown of the cluster of DIR if it runs.
stop_postgres() {
  local dir=$1
  [[ -n ${DATABASE_URL:-} ]] && return 0
  stop_postgres_data "$(pg_data_dir "$dir")"
}

# stop_postgres_data DATA [PID]: stop the postmaster of the data dir DATA
# (fast, then immediate, then SIGKILL of PID or of postmaster.pid's pid).
stop_postgres_data() {
  local data=$1 pid=${2:-} i
  [[ -n $pid ]] || pid=$(pidfile_alive "$data/postmaster.pid" "$data") || return 0
  log "stopping postgres ($data)"
  pg_ctl_as_postgres -D "$data" -m fast -w -t 30 stop >/dev/null 2>&1 \
    || pg_ctl_as_postgres -D "$data" -m immediate -w -t 10 stop >/dev/null 2>&1 || true
  for ((i = 0; i < 50; i++)); do
    pid_matches "$pid" "$data" || return 0
    sleep 0.1
  done
  log "postgres (pid $pid, $data) still runs: SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
}

# ---------------------------------------------------------------------------
# containerd
# ---------------------------------------------------------------------------

# containerd_socket DIR: the gRPC socket of the containerd of DIR.
containerd_socket() { printf '%s/containerd.sock\n' "$(socket_dir "$1")"; }

# ctr_sock ARGS...: ctr against the private containerd (SKIFF_CTR_SOCK).
ctr_sock() { timeout 30 ctr --address "$SKIFF_CTR_SOCK" "$@"; }

# start_containerd DIR: a private containerd with root/state/config/log in DIR
# and its sockets in DIR (or /run/skiff-<hash>/ when DIR is long). CRI is
# disabled, runc via io.containerd.runc.v2, overlayfs is the snapshotter the
# worker uses. Sets and prints SKIFF_CTR_SOCK. Reuses a live one of ours.
# Works from a fresh shell too (the containerd outlives it):
#   bash -c 'source deploy/local/lib.sh; start_containerd DIR'
# Several containerds side by side must use different containerd namespaces:
# runc keeps its state in /run/containerd/runc/<namespace> for all of them.
# (Shim sockets always go to /run/containerd/s/<hash of our socket+ns+id>:
# that is hard-coded in containerd 1.6; they do not collide with the system's.)
start_containerd() {
  local dir=$1 sockdir sock cfg pid i
  mkdir -p "$dir/root" "$dir/state" "$dir/opt"
  sockdir=$(socket_dir "$dir")
  mkdir -p "$sockdir"
  sock="$sockdir/containerd.sock"
  cfg="$dir/config.toml"
  SKIFF_CTR_SOCK=$sock

  if pid=$(pidfile_alive "$dir/containerd.pid" "$cfg") || pid=$(find_pid_by_cmdline "--config $cfg" | head -n1) && [[ -n $pid ]]; then
    if timeout 5 ctr --address "$sock" version >/dev/null 2>&1; then
      log "containerd already running (pid $pid, $sock): reusing it"
      [[ $(head -n1 "$dir/containerd.pid" 2>/dev/null) == "$pid" ]] || record_pid "$dir/containerd.pid" "$pid"
      printf '%s\n' "$sock"
      return 0
    fi
    log "containerd pid $pid does not answer on $sock: restarting it"
    kill -TERM "$pid" 2>/dev/null || true
    sleep 1
    kill -KILL "$pid" 2>/dev/null || true
  fi

  cat >"$cfg" <<EOF
# generated by deploy/local/lib.sh: a private containerd for skiff
version = 2
root = "$dir/root"
state = "$dir/state"
disabled_plugins = [
  "io.containerd.grpc.v1.cri",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
]

[grpc]
  address = "$sock"

[ttrpc]
  address = "$sock.ttrpc"

[debug]
  address = "$sockdir/containerd-debug.sock"
  level = "info"

[metrics]
  address = ""

[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = "$dir/opt"
  [plugins."io.containerd.runtime.v1.linux"]
    shim_debug = false
    runtime = "runc"
EOF
  # stale sockets of a killed containerd (containerd would also remove them)
  rm -f "$sock" "$sock.ttrpc" "$sockdir/containerd-debug.sock"
  log "starting containerd ($sock)"
  spawn_daemon "$dir/containerd.pid" "$dir/containerd.log" containerd --config "$cfg"
  for ((i = 0; i < 150; i++)); do
    if timeout 5 ctr --address "$sock" version >/dev/null 2>&1; then
      printf '%s\n' "$sock"
      return 0
    fi
    pidfile_alive "$dir/containerd.pid" "$cfg" >/dev/null || break
    sleep 0.1
  done
  tail -n 20 "$dir/containerd.log" >&2 || true
  die "containerd did not come up on $sock (log: $dir/containerd.log)"
}

# containerd_kill_tasks DIR [NAMESPACE...]: SIGKILL and delete every task in
# the given namespaces of DIR's containerd (all namespaces if none given); with
# SKIFF_DELETE_CONTAINERS=1 also delete the containers and their snapshots.
containerd_kill_tasks() {
  local dir=$1 ns t c
  shift
  local SKIFF_CTR_SOCK
  SKIFF_CTR_SOCK=$(containerd_socket "$dir")
  if ! pidfile_alive "$dir/containerd.pid" "$dir/config.toml" >/dev/null; then
    # containerd died but task bundles (shims, mounted rootfs) may remain:
    # start it again, it reconnects to the shims, so they can be killed.
    compgen -G "$dir/state/io.containerd.runtime.v2.task/*/*" >/dev/null || return 0
    log "containerd of $dir is down but tasks may remain: starting it to clean up"
    start_containerd "$dir" >/dev/null
  fi
  local namespaces=("$@")
  if ((${#namespaces[@]} == 0)); then
    mapfile -t namespaces < <(ctr_sock namespaces ls -q 2>/dev/null || true)
  fi
  for ns in "${namespaces[@]}"; do
    [[ -n $ns ]] || continue
    for t in $(ctr_sock -n "$ns" tasks ls -q 2>/dev/null || true); do
      log "killing task $ns/$t"
      ctr_sock -n "$ns" tasks kill -a -s SIGKILL "$t" >/dev/null 2>&1 || true
    done
    for t in $(ctr_sock -n "$ns" tasks ls -q 2>/dev/null || true); do
      ctr_sock -n "$ns" tasks delete -f "$t" >/dev/null 2>&1 || log "could not delete task $ns/$t"
    done
    if [[ ${SKIFF_DELETE_CONTAINERS:-0} == 1 ]]; then
      for c in $(ctr_sock -n "$ns" containers ls -q 2>/dev/null || true); do
        ctr_sock -n "$ns" containers delete "$c" >/dev/null 2>&1 || log "could not delete container $ns/$c"
      done
    fi
  done
}

# stop_containerd DIR: stop DIR's containerd (containers' shims keep running
# unless their tasks were killed first), then unmount leftovers under DIR.
# Without a valid pid file, the containerd running with DIR's config is found
# by its command line.
stop_containerd() {
  local dir=$1 pid
  if ! pidfile_alive "$dir/containerd.pid" "$dir/config.toml" >/dev/null; then
    pid=$(find_pid_by_cmdline "--config $dir/config.toml" | head -n1)
    if [[ -n $pid ]]; then record_pid "$dir/containerd.pid" "$pid"; fi
  fi
  stop_pidfile "$dir/containerd.pid" "$dir/config.toml" containerd 15
  unmount_under "$dir"
}

# containerd_dirs_of DIR: the containerd dirs of a stack in DIR, one a line:
# DIR/containerd (host 1) and DIR/hosts/<n>/containerd (more hosts), those
# that exist.
containerd_dirs_of() {
  local d
  for d in "$1/containerd" "$1"/hosts/*/containerd; do
    [[ -f $d/config.toml ]] && printf '%s\n' "$d"
  done
  return 0
}

# remove_empty_cgroups PATTERN...: rmdir (deepest first) the cgroups matching
# PATTERN (relative to each hierarchy, e.g. "skiff/skiff-e2e-*") that are
# empty; the ones still holding processes stay (rmdir refuses them). Both
# layouts: cgroup v1 has one hierarchy per controller (/sys/fs/cgroup/*/,
# a hybrid host's unified/ among them), cgroup v2 one at /sys/fs/cgroup.
# CGROUP_ROOT (default /sys/fs/cgroup) points it at a fixture tree.
remove_empty_cgroups() {
  local pattern d root=${CGROUP_ROOT:-/sys/fs/cgroup}
  for pattern in "$@"; do
    # shellcheck disable=SC2231 # $pattern is a glob on purpose
    for d in "$root"/*/$pattern "$root"/$pattern; do
      [[ -d $d ]] || continue
      find "$d" -depth -type d -exec rmdir {} + 2>/dev/null || true
    done
  done
}

# ---------------------------------------------------------------------------
# registry
# ---------------------------------------------------------------------------

# write_registry_config CFG DIR PORT WHAT: a docker-registry config in CFG:
# 127.0.0.1:PORT, plain HTTP, storage in DIR/storage, deletes enabled.
write_registry_config() {
  local cfg=$1 dir=$2 port=$3 what=$4
  cat >"$cfg" <<EOF
# generated by deploy/local/lib.sh: $what
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $dir/storage
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$port
EOF
}

# start_registry DIR PORT: Debian's docker-registry (distribution 2.8) on
# 127.0.0.1:PORT, plain HTTP, storage in DIR/storage, deletes enabled.
# Sets and prints SKIFF_REGISTRY (host:port).
start_registry() {
  local dir=$1 port=$2 cfg pid
  cfg="$dir/config.yml"
  mkdir -p "$dir/storage"
  SKIFF_REGISTRY="127.0.0.1:$port"
  if pid=$(pidfile_alive "$dir/registry.pid" "$cfg"); then
    if [[ $(port_pids "$port") == *"$pid"* ]] && curl -fsS -o /dev/null --max-time 2 "http://$SKIFF_REGISTRY/v2/"; then
      log "registry already running (pid $pid, $SKIFF_REGISTRY): reusing it"
      printf '%s\n' "$SKIFF_REGISTRY"
      return 0
    fi
    stop_pidfile "$dir/registry.pid" "$cfg" registry 5
  fi
  ensure_port_free "$port" "the OCI registry"
  write_registry_config "$cfg" "$dir" "$port" "a private registry for skiff"
  log "starting registry on $SKIFF_REGISTRY"
  spawn_daemon "$dir/registry.pid" "$dir/registry.log" docker-registry serve "$cfg"
  if ! wait_http "http://$SKIFF_REGISTRY/v2/" 30 "$dir/registry.pid" "$cfg"; then
    tail -n 20 "$dir/registry.log" >&2 || true
    die "registry did not answer on http://$SKIFF_REGISTRY/v2/ (log: $dir/registry.log)"
  fi
  printf '%s\n' "$SKIFF_REGISTRY"
}

stop_registry() { stop_pidfile "$1/registry.pid" "$1/config.yml" registry 5; }

# start_auth_registry DIR PORT: a second docker-registry on 127.0.0.1:PORT
# that answers only to basic auth (htpasswd, bcrypt), for private-registry
# pulls. The user is "skiff"; its password is made once (random) and kept in
# DIR/password; DIR/netrc holds both for curl (build-image.sh --netrc). Sets
# and prints SKIFF_AUTH_REGISTRY (host:port), and sets
# SKIFF_AUTH_REGISTRY_USER and SKIFF_AUTH_REGISTRY_PASSWORD.
start_auth_registry() {
  local dir=$1 port=$2 cfg pid code i
  cfg="$dir/config.yml"
  mkdir -p "$dir/storage"
  SKIFF_AUTH_REGISTRY="127.0.0.1:$port"
  SKIFF_AUTH_REGISTRY_USER=skiff
  if [[ ! -s $dir/password ]]; then
    (umask 077 && head -c 18 /dev/urandom | base64 | tr '+/' '-_' >"$dir/password")
  fi
  SKIFF_AUTH_REGISTRY_PASSWORD=$(cat "$dir/password")
  (umask 077 && printf 'machine 127.0.0.1 login %s password %s\n' \
    "$SKIFF_AUTH_REGISTRY_USER" "$SKIFF_AUTH_REGISTRY_PASSWORD" >"$dir/netrc")
  if pid=$(pidfile_alive "$dir/registry.pid" "$cfg"); then
    code=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 2 "http://$SKIFF_AUTH_REGISTRY/v2/" || true)
    if [[ $(port_pids "$port") == *"$pid"* && $code == 401 ]] \
      && curl -fsS -o /dev/null --max-time 2 --netrc-file "$dir/netrc" "http://$SKIFF_AUTH_REGISTRY/v2/"; then
      log "registry with auth already running (pid $pid, $SKIFF_AUTH_REGISTRY): reusing it"
      printf '%s\n' "$SKIFF_AUTH_REGISTRY"
      return 0
    fi
    stop_pidfile "$dir/registry.pid" "$cfg" registry 5
  fi
  ensure_port_free "$port" "the OCI registry with auth"
  # htpasswd reads the password on stdin (-i), off the command line.
  htpasswd -iBc "$dir/htpasswd" "$SKIFF_AUTH_REGISTRY_USER" <"$dir/password" 2>/dev/null \
    || die "htpasswd could not write $dir/htpasswd (apt-get install apache2-utils)"
  write_registry_config "$cfg" "$dir" "$port" "a private registry with basic auth for skiff"
  cat >>"$cfg" <<EOF
auth:
  htpasswd:
    realm: skiff-local
    path: $dir/htpasswd
EOF
  log "starting the registry with auth on $SKIFF_AUTH_REGISTRY"
  spawn_daemon "$dir/registry.pid" "$dir/registry.log" docker-registry serve "$cfg"
  for ((i = 0; i < 150; i++)); do
    code=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 2 "http://$SKIFF_AUTH_REGISTRY/v2/" 2>/dev/null || true)
    [[ $code == 401 ]] && break
    pidfile_alive "$dir/registry.pid" "$cfg" >/dev/null || break
    sleep 0.2
  done
  if [[ $code != 401 ]] || ! curl -fsS -o /dev/null --max-time 2 --netrc-file "$dir/netrc" "http://$SKIFF_AUTH_REGISTRY/v2/"; then
    tail -n 20 "$dir/registry.log" >&2 || true
    die "the registry with auth did not answer 401 without and 200 with credentials on http://$SKIFF_AUTH_REGISTRY/v2/ (log: $dir/registry.log)"
  fi
  printf '%s\n' "$SKIFF_AUTH_REGISTRY"
}

# start_token_registry DIR PORT TOKEN_PORT IMAGES_DIR USER PASSWORD_FILE: a
# third docker-registry on 127.0.0.1:PORT with `auth: token` (the
# distribution spec's bearer-token flow), serving the images in
# IMAGES_DIR/storage (the registry with basic auth's), and its token server
# (token-server.py) on 127.0.0.1:TOKEN_PORT, which grants tokens to USER with
# the password in PASSWORD_FILE. Its signing key and certificate are made
# once in DIR. Sets and prints SKIFF_TOKEN_REGISTRY (host:port); sets
# SKIFF_TOKEN_SERVER (host:port).
start_token_registry() {
  local dir=$1 port=$2 token_port=$3 images_dir=$4 user=$5 password_file=$6 cfg code i
  cfg="$dir/config.yml"
  mkdir -p "$dir"
  SKIFF_TOKEN_REGISTRY="127.0.0.1:$port"
  SKIFF_TOKEN_SERVER="127.0.0.1:$token_port"
  if [[ ! -s $dir/cert.pem ]]; then
    (umask 077 && openssl req -x509 -newkey rsa:2048 -nodes -keyout "$dir/key.pem" -out "$dir/cert.pem" \
      -days 3650 -subj "/CN=skiff-local-token" 2>/dev/null) || die "openssl could not make the token server's key"
  fi
  cat >"$dir/token.json" <<EOF
{"listen": "$SKIFF_TOKEN_SERVER", "key": "$dir/key.pem", "cert": "$dir/cert.pem",
 "password_file": "$password_file", "user": "$user",
 "issuer": "skiff-local-token", "service": "skiff-local"}
EOF
  stop_pidfile "$dir/token.pid" "$dir/token.json" token-server 5
  stop_registry "$dir"
  ensure_port_free "$token_port" "the registry's token server"
  ensure_port_free "$port" "the OCI registry with token auth"
  spawn_daemon "$dir/token.pid" "$dir/token.log" python3 "$SKIFF_DEPLOY_DIR/token-server.py" "$dir/token.json"
  write_registry_config "$cfg" "$images_dir" "$port" "a registry with token auth for skiff"
  cat >>"$cfg" <<EOF
auth:
  token:
    realm: http://$SKIFF_TOKEN_SERVER/token
    service: skiff-local
    issuer: skiff-local-token
    rootcertbundle: $dir/cert.pem
EOF
  log "starting the registry with token auth on $SKIFF_TOKEN_REGISTRY (tokens from $SKIFF_TOKEN_SERVER)"
  spawn_daemon "$dir/registry.pid" "$dir/registry.log" docker-registry serve "$cfg"
  local token_code=""
  for ((i = 0; i < 150; i++)); do
    code=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 2 "http://$SKIFF_TOKEN_REGISTRY/v2/" 2>/dev/null || true)
    token_code=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 2 "http://$SKIFF_TOKEN_SERVER/token" 2>/dev/null || true)
    [[ $code == 401 && $token_code == 401 ]] && break
    sleep 0.2
  done
  if [[ $code != 401 || $token_code != 401 ]]; then
    tail -n 20 "$dir/registry.log" "$dir/token.log" >&2 || true
    die "the registry with token auth ($code) or its token server ($token_code) did not answer 401 (logs: $dir/registry.log, $dir/token.log)"
  fi
  printf '%s\n' "$SKIFF_TOKEN_REGISTRY"
}

stop_token_registry() {
  stop_pidfile "$1/token.pid" "$1/token.json" token-server 5
  stop_registry "$1"
}

# ---------------------------------------------------------------------------
# images
# ---------------------------------------------------------------------------

# build_and_push_images REGISTRY [WORKDIR] [NETRC]: the busybox sample image,
# pushed as skiff/busybox:latest and skiff/busybox:1 (see build-image.sh;
# NETRC: the credentials of a registry with auth).
build_and_push_images() {
  local registry=$1 work=${2:-} netrc=${3:-}
  local args=("$registry" skiff/busybox:latest skiff/busybox:1)
  [[ -n $work ]] && args+=(--work "$work")
  [[ -n $netrc ]] && args+=(--netrc "$netrc")
  bash "$SKIFF_DEPLOY_DIR/build-image.sh" "${args[@]}" >/dev/null
}

# ---------------------------------------------------------------------------
# skiff processes and everything together
# ---------------------------------------------------------------------------

# stop_skiff DIR: stop the workers, then the API replicas, started by up.sh
# in DIR (pid files DIR/worker.pid, DIR/hosts/<n>/worker.pid, DIR/api.pid,
# DIR/api-<n>.pid), each group all at once. (Workers first: their open gRPC
# streams would otherwise hold up the APIs' graceful shutdown. Stopping a
# worker leaves its containers running.)
stop_skiff() {
  local dir=$1
  stop_pidfiles "skiff-worker" "skiff-worker" 15 "$dir/worker.pid" "$dir"/hosts/*/worker.pid
  stop_pidfiles "skiff-api" "skiff-api" 15 "$dir/api.pid" "$dir"/api-*.pid
}

# stop_all DIR [NAMESPACE...]: stop everything up.sh/test.sh started in DIR,
# in order: workers, APIs, the containers' tasks in NAMESPACE(s) of every
# private containerd of DIR (all namespaces if none given: those containerds
# are ours alone), the containerds, leftover mounts, registry, PostgreSQL.
stop_all() {
  local dir=$1 c
  shift
  local dirs=()
  stop_skiff "$dir"
  mapfile -t dirs < <(containerd_dirs_of "$dir")
  for c in "${dirs[@]}"; do containerd_kill_tasks "$c" "$@"; done
  for c in "${dirs[@]}"; do stop_containerd "$c"; done
  stop_registry "$dir/registry"
  stop_registry "$dir/auth-registry"
  stop_token_registry "$dir/token-registry"
  stop_postgres "$dir/postgres"
}
