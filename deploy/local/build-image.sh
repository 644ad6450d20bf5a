#!/usr/bin/env bash
# Build an OCI image from Debian's busybox-static without docker and push it
# to a plain-HTTP registry with curl.
#
#   deploy/local/build-image.sh REGISTRY REPO:TAG [REPO:TAG...] [--extra-layers MB,MB,...] [--user USER] [--work DIR] [--netrc FILE]
#
#   REGISTRY        host:port of a plain-HTTP registry, e.g. 127.0.0.1:5050
#   REPO:TAG        where to push (several tags of the same repository or of
#                   different repositories may be given)
#   --extra-layers  add one layer per size (MiB) holding a file of
#                   incompressible pseudo-random bytes (/data/layer-N.bin), e.g.
#                   "10,20,20" for a ~50 MB multi-layer benchmark image. The
#                   bytes are deterministic (AES-CTR keystream), so rebuilding
#                   gives the same digests and re-pushing skips the blobs.
#   --user USER     the config's User (user[:group], names or numbers), e.g.
#                   "nobody": the image runs as that user (default: root)
#   --work DIR      build directory (kept; default: a temporary one, removed)
#   --netrc FILE    push with basic auth from this curl netrc file (a
#                   registry with htpasswd auth; the password stays out of
#                   the command lines)
#
# The base layer: /bin/busybox, one symlink per applet (busybox --list-full:
# bin/sh, bin/echo, bin/sleep, usr/bin/wget, usr/sbin/httpd, ...),
# /usr/local/bin/skiff-probe (deploy/local/probe.c, static), /etc/passwd
# and /etc/group with root and nobody, /tmp (1777), /root, /var, /proc, /sys,
# /dev mount points. Tars are deterministic (sorted names, mtime 0, uid/gid 0)
# and gzip -n, so the digests only change when busybox or the probe changes.
#
# Prints the manifest digest on stdout; progress on stderr.
set -euo pipefail

BUSYBOX=${BUSYBOX:-/bin/busybox}
MT_MANIFEST=application/vnd.oci.image.manifest.v1+json
MT_CONFIG=application/vnd.oci.image.config.v1+json
MT_LAYER=application/vnd.oci.image.layer.v1.tar+gzip

log() { printf '[build-image] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
usage() { sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

registry="" refs=() extra="" user="" work="" netrc=""
while (($#)); do
  case $1 in
    --extra-layers) extra=${2:?}; shift 2 ;;
    --extra-layers=*) extra=${1#*=}; shift ;;
    --user) user=${2:?}; shift 2 ;;
    --user=*) user=${1#*=}; shift ;;
    --work) work=${2:?}; shift 2 ;;
    --work=*) work=${1#*=}; shift ;;
    --netrc) netrc=${2:?}; shift 2 ;;
    --netrc=*) netrc=${1#*=}; shift ;;
    -h | --help) usage ;;
    -*) die "unknown option $1" ;;
    *) if [[ -z $registry ]]; then registry=$1; else refs+=("$1"); fi; shift ;;
  esac
done
[[ -n $registry && ${#refs[@]} -gt 0 ]] || usage
[[ -x $BUSYBOX ]] || die "$BUSYBOX not found (apt-get install busybox-static)"
for r in "${refs[@]}"; do
  [[ $r =~ ^[a-z0-9]+([._/-][a-z0-9]+)*:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]] || die "bad reference '$r' (want repo:tag)"
done
if [[ -n $extra && ! $extra =~ ^[0-9]+(,[0-9]+)*$ ]]; then die "--extra-layers wants sizes in MiB like 10,20,20"; fi
if [[ -n $user && ! $user =~ ^[A-Za-z0-9_.-]+(:[A-Za-z0-9_.-]+)?$ ]]; then die "--user wants user[:group], e.g. nobody or 65534:65534"; fi

if [[ -z $work ]]; then
  work=$(mktemp -d /tmp/skiff-image.XXXXXX)
  trap 'rm -rf "$work"' EXIT
fi
mkdir -p "$work/blobs"

case $(dpkg --print-architecture 2>/dev/null || uname -m) in
  amd64 | x86_64) arch=amd64 ;;
  arm64 | aarch64) arch=arm64 ;;
  *) arch=$(dpkg --print-architecture) ;;
esac

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

# make_layer SRC_DIR NAME: deterministic tar.gz of SRC_DIR's content into
# blobs; sets LAYER_DIGEST, LAYER_SIZE, LAYER_DIFF_ID.
make_layer() {
  local src=$1 name=$2 tarball="$work/$2.tar"
  tar --create --file "$tarball" --directory "$src" --sort=name --format=gnu \
    --mtime=@0 --owner=0 --group=0 --numeric-owner --no-acls --no-xattrs --no-selinux .
  LAYER_DIFF_ID="sha256:$(sha256_of "$tarball")"
  gzip -n -6 -c "$tarball" >"$work/$name.tar.gz"
  LAYER_DIGEST="sha256:$(sha256_of "$work/$name.tar.gz")"
  LAYER_SIZE=$(stat -c %s "$work/$name.tar.gz")
  mv "$work/$name.tar.gz" "$work/blobs/${LAYER_DIGEST#sha256:}"
  rm -f "$tarball"
}

# --- base layer: busybox rootfs -------------------------------------------
root="$work/rootfs"
rm -rf "$root"
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,usr/local/bin,etc,root,tmp,var/tmp,proc,sys,dev,home}
install -m 0755 "$BUSYBOX" "$root/bin/busybox"
# the isolation tests' probe (deploy/local/probe.c), static; a copy stays
# in the work dir for their host-side controls
gcc -static -O2 -s -o "$work/skiff-probe" "$(dirname "${BASH_SOURCE[0]}")/probe.c" \
  || die "compiling probe.c failed (apt-get install gcc libc6-dev)"
install -m 0755 "$work/skiff-probe" "$root/usr/local/bin/skiff-probe"
applets=0
while read -r path; do
  path=${path#/}
  [[ -n $path && $path != bin/busybox && $path == */* ]] || continue
  mkdir -p "$root/$(dirname "$path")"
  ln -sf /bin/busybox "$root/$path"
  applets=$((applets + 1))
done < <("$BUSYBOX" --list-full)
for a in sh echo sleep cat httpd head tr wget; do
  [[ -n $(find "$root" -name "$a" -print -quit) ]] || die "busybox has no applet '$a'"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
printf 'hosts: files dns\n' >"$root/etc/nsswitch.conf"
chmod 0755 "$root" "$root"/{bin,sbin,usr,usr/bin,usr/sbin,usr/local,usr/local/bin,etc,var,proc,sys,dev,home}
chmod 0700 "$root/root"
chmod 1777 "$root/tmp" "$root/var/tmp"
chmod 0644 "$root/etc/passwd" "$root/etc/group" "$root/etc/nsswitch.conf"
make_layer "$root" base
log "base layer: $applets applets, $LAYER_SIZE bytes, $LAYER_DIGEST"
layers_json="{\"mediaType\":\"$MT_LAYER\",\"digest\":\"$LAYER_DIGEST\",\"size\":$LAYER_SIZE}"
diff_ids_json="\"$LAYER_DIFF_ID\""
history_json='{"created":"1970-01-01T00:00:00Z","created_by":"deploy/local/build-image.sh: busybox-static rootfs"}'

# --- extra layers: incompressible data --------------------------------------
if [[ -n $extra ]]; then
  i=0
  IFS=, read -r -a sizes <<<"$extra"
  for mb in "${sizes[@]}"; do
    i=$((i + 1))
    d="$work/extra-$i"
    rm -rf "$d"
    mkdir -p "$d/data"
    # deterministic, incompressible: AES-128-CTR keystream keyed by layer number
    key=$(printf 'skiff-layer-%s-%s' "$i" "$mb" | sha256sum | cut -c1-32)
    if command -v openssl >/dev/null 2>&1; then
      head -c "$((mb * 1024 * 1024))" /dev/zero \
        | openssl enc -aes-128-ctr -K "$key" -iv 00000000000000000000000000000000 -nosalt >"$d/data/layer-$i.bin"
    else
      head -c "$((mb * 1024 * 1024))" /dev/urandom >"$d/data/layer-$i.bin"
    fi
    chmod 0755 "$d/data"
    chmod 0644 "$d/data/layer-$i.bin"
    make_layer "$d" "extra-$i"
    rm -rf "$d"
    log "extra layer $i: ${mb} MiB of data, $LAYER_SIZE bytes, $LAYER_DIGEST"
    layers_json+=",{\"mediaType\":\"$MT_LAYER\",\"digest\":\"$LAYER_DIGEST\",\"size\":$LAYER_SIZE}"
    diff_ids_json+=",\"$LAYER_DIFF_ID\""
    history_json+=",{\"created\":\"1970-01-01T00:00:00Z\",\"created_by\":\"extra layer $i (${mb} MiB)\"}"
  done
fi

# --- config and manifest -------------------------------------------------------
user_json=""
[[ -z $user ]] || user_json=",\"User\":\"$user\""
printf '%s' "{\"architecture\":\"$arch\",\"os\":\"linux\",\"created\":\"1970-01-01T00:00:00Z\",\"config\":{\"Env\":[\"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\"],\"Cmd\":[\"sh\"],\"WorkingDir\":\"/\"$user_json},\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[$diff_ids_json]},\"history\":[$history_json]}" >"$work/config.json"
config_digest="sha256:$(sha256_of "$work/config.json")"
config_size=$(stat -c %s "$work/config.json")
cp "$work/config.json" "$work/blobs/${config_digest#sha256:}"

printf '%s' "{\"schemaVersion\":2,\"mediaType\":\"$MT_MANIFEST\",\"config\":{\"mediaType\":\"$MT_CONFIG\",\"digest\":\"$config_digest\",\"size\":$config_size},\"layers\":[$layers_json]}" >"$work/manifest.json"
manifest_digest="sha256:$(sha256_of "$work/manifest.json")"

# --- push ---------------------------------------------------------------------
base_url="http://$registry"
# curl with the registry's credentials, when it wants them.
rcurl() {
  if [[ -n $netrc ]]; then curl --netrc-file "$netrc" "$@"; else curl "$@"; fi
}

# push_blob REPO DIGEST
push_blob() {
  local repo=$1 digest=$2 file="$work/blobs/${2#sha256:}" code location sep headers
  code=$(rcurl -sS -o /dev/null -w '%{http_code}' -I "$base_url/v2/$repo/blobs/$digest") || die "registry $registry unreachable"
  if [[ $code == 200 ]]; then
    log "  $repo: blob $digest already present"
    return 0
  fi
  headers=$(rcurl -fsS -X POST -o /dev/null -D - "$base_url/v2/$repo/blobs/uploads/") || die "could not start an upload to $repo"
  location=$(printf '%s\n' "$headers" | tr -d '\r' | awk 'tolower($1) == "location:" {print $2; exit}')
  [[ -n $location ]] || die "no Location in the upload response of $repo"
  [[ $location == http* ]] || location="$base_url$location"
  sep='?'
  [[ $location == *\?* ]] && sep='&'
  rcurl -fsS -X PUT -o /dev/null -H 'Content-Type: application/octet-stream' \
    --data-binary @"$file" "$location${sep}digest=${digest/:/%3A}" || die "upload of $digest to $repo failed"
  log "  $repo: pushed blob $digest ($(stat -c %s "$file") bytes)"
}

for ref in "${refs[@]}"; do
  repo=${ref%:*}
  tag=${ref##*:}
  log "pushing $registry/$repo:$tag"
  for f in "$work"/blobs/*; do
    push_blob "$repo" "sha256:$(basename "$f")"
  done
  got=$(rcurl -fsS -X PUT -o /dev/null -D - -H "Content-Type: $MT_MANIFEST" \
    --data-binary @"$work/manifest.json" "$base_url/v2/$repo/manifests/$tag" \
    | tr -d '\r' | awk 'tolower($1) == "docker-content-digest:" {print $2; exit}') \
    || die "manifest push of $repo:$tag failed"
  [[ $got == "$manifest_digest" ]] || die "registry stored $repo:$tag as '$got', expected $manifest_digest"
  log "pushed $registry/$repo:$tag -> $manifest_digest"
done
printf '%s\n' "$manifest_digest"
