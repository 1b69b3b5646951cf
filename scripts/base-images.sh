#!/usr/bin/env bash
# Makes the local base images Kiln's tests build on, with `docker import` (no registry is reachable,
# so nothing is ever pulled):
#
#   kiln-local/busybox:latest   Debian's static busybox and its applet symlinks; CMD ["sh"]
#   kiln-local/node:20          the host's own `node` binary, the shared libraries `ldd` lists (at
#                               their own paths, with the dynamic loader), busybox for `sh`, /tmp,
#                               /etc/passwd with root and node (uid 1000); CMD ["node"]
#   kiln-local/haproxy:2.6      the front proxy image, made by scripts/proxy-image.sh from Debian's
#                               haproxy binary (see that script and docs/traffic.md)
#
# Usage:
#   eval "$(bash scripts/docker-engine.sh start | tail -1)"
#   bash scripts/base-images.sh [--force]     # --force rebuilds images that already exist
#
# Uses DOCKER_HOST from the environment. Idempotent: an image that exists is skipped.
set -euo pipefail

FORCE=0
for arg in "$@"; do
  case "$arg" in
    --force) FORCE=1 ;;
    -h | --help)
      sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//' >&2
      exit 0
      ;;
    *)
      printf 'base-images: unknown argument %s (usage: %s [--force])\n' "$arg" "$0" >&2
      exit 2
      ;;
  esac
done

BUSYBOX_IMAGE="kiln-local/busybox:latest"
NODE_IMAGE="kiln-local/node:20"
PATH_IN_IMAGE="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

log() { printf 'base-images: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

command -v docker >/dev/null 2>&1 || die "the docker CLI is missing; run: bash scripts/docker-engine.sh start (it installs docker.io)"
if ! timeout 15 docker version --format '{{.Server.Version}}' >/dev/null 2>&1; then
  die "no Docker engine answers at ${DOCKER_HOST:-unix:///var/run/docker.sock}; run: eval \"\$(bash scripts/docker-engine.sh start | tail -1)\""
fi

# A static busybox: from Debian's busybox-static (installed here when missing and we are root).
find_static_busybox() {
  local candidate
  for candidate in /bin/busybox /usr/bin/busybox; do
    if [[ -x "$candidate" ]] && ! ldd "$candidate" >/dev/null 2>&1; then
      printf '%s\n' "$candidate"
      return 0
    fi
  done
  return 1
}
BUSYBOX="$(find_static_busybox || true)"
if [[ -z "$BUSYBOX" ]]; then
  [[ "$(id -u)" == 0 ]] || die "no static busybox found; install Debian's busybox-static (apt-get install busybox-static)"
  log "installing busybox-static with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends busybox-static >&2
  BUSYBOX="$(find_static_busybox)" || die "busybox-static is installed but no static busybox was found"
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/kiln-base-images.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

exists() { docker image inspect "$1" >/dev/null 2>&1; }

# Lays out a minimal root filesystem with busybox and its applets in folder $1.
make_busybox_root() {
  local root="$1" applet dir
  mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc,tmp,root,proc,sys,dev}
  chmod 1777 "$root/tmp"
  cp "$BUSYBOX" "$root/bin/busybox"
  chmod 755 "$root/bin/busybox"
  # --list-full gives each applet's usual place (bin/sh, usr/bin/wget, sbin/ifconfig...).
  while IFS= read -r applet; do
    [[ -n "$applet" && "$applet" != "bin/busybox" ]] || continue
    dir="$(dirname "$applet")"
    mkdir -p "$root/$dir"
    [[ -e "$root/$applet" || -L "$root/$applet" ]] || ln -s /bin/busybox "$root/$applet"
  done < <("$BUSYBOX" --list-full)
  printf 'root:x:0:0:root:/root:/bin/sh\n' >"$root/etc/passwd"
  printf 'root:x:0:\n' >"$root/etc/group"
}

# Imports folder $1 as image $2 with the given `--change` instructions.
import_root() {
  local root="$1" image="$2"
  shift 2
  local changes=()
  local change
  for change in "$@"; do changes+=(--change "$change"); done
  local previous
  previous="$(docker image inspect --format '{{.Id}}' "$image" 2>/dev/null || true)"
  tar --numeric-owner -C "$root" -cf - . | docker import "${changes[@]}" - "$image" >/dev/null
  # With --force the old image loses its tag: remove it unless a container still uses it.
  if [[ -n "$previous" && "$previous" != "$(docker image inspect --format '{{.Id}}' "$image")" ]]; then
    docker image rm "$previous" >/dev/null 2>&1 || log "kept the previous $image ($previous): it is still in use"
  fi
}

build_busybox() {
  if ((FORCE == 0)) && exists "$BUSYBOX_IMAGE"; then
    log "$BUSYBOX_IMAGE exists; skipped (use --force to rebuild)"
    return 0
  fi
  log "building $BUSYBOX_IMAGE from $BUSYBOX"
  local root="$WORK/busybox"
  make_busybox_root "$root"
  import_root "$root" "$BUSYBOX_IMAGE" \
    "ENV PATH=$PATH_IN_IMAGE" \
    "LABEL dev.kiln.local-base=busybox" \
    'CMD ["sh"]'
  docker run --rm "$BUSYBOX_IMAGE" sh -c 'echo ok' >/dev/null || die "$BUSYBOX_IMAGE does not run sh"
  log "built $BUSYBOX_IMAGE"
}

# Copies file $1 into folder $2 at the same absolute path, following symlinks.
copy_at_path() {
  local file="$1" root="$2"
  mkdir -p "$root$(dirname "$file")"
  cp -L "$file" "$root$file"
}

build_node() {
  if ((FORCE == 0)) && exists "$NODE_IMAGE"; then
    log "$NODE_IMAGE exists; skipped (use --force to rebuild)"
    return 0
  fi
  local node_bin
  node_bin="$(command -v node)" || die "no node on PATH"
  node_bin="$(readlink -f "$node_bin")"
  local version
  version="$("$node_bin" -p 'process.versions.node')"
  [[ "$version" == 20.* ]] || log "warning: the host's node is $version, not 20.x; $NODE_IMAGE will hold $version"
  log "building $NODE_IMAGE from $node_bin (v$version)"
  local root="$WORK/node"
  make_busybox_root "$root"
  mkdir -p "$root/usr/local/bin" "$root/home/node"
  cp "$node_bin" "$root/usr/local/bin/node"
  chmod 755 "$root/usr/local/bin/node"
  # Every library ldd names (`libx.so => /path (0x...)`) plus the loader (`/lib64/ld-linux... (0x...)`).
  local lib count=0
  while IFS= read -r lib; do
    [[ -n "$lib" ]] || continue
    copy_at_path "$lib" "$root"
    count=$((count + 1))
  done < <(ldd "$node_bin" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' | sort -u)
  ((count > 0)) || die "ldd listed no libraries for $node_bin"
  log "copied $count shared libraries"
  cat >"$root/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
node:x:1000:1000:node:/home/node:/bin/sh
EOF
  printf 'root:x:0:\nnode:x:1000:\n' >"$root/etc/group"
  chown 1000:1000 "$root/home/node"
  import_root "$root" "$NODE_IMAGE" \
    "ENV PATH=$PATH_IN_IMAGE" \
    "ENV NODE_VERSION=$version" \
    "LABEL dev.kiln.local-base=node" \
    'CMD ["node"]'
  local got
  got="$(docker run --rm "$NODE_IMAGE" node -e 'console.log(process.version)')" || die "$NODE_IMAGE does not run node"
  [[ "$got" == "v$version" ]] || die "$NODE_IMAGE printed '$got', expected v$version"
  log "built $NODE_IMAGE (node $got)"
}

build_busybox
build_node
# The front proxy's image (the Docker provider's traffic capability), from Debian's haproxy.
# Only specs with traffic.proxy need it: where it cannot be made (no apt-get, not root) say so and
# go on, except under CI, whose tests need it.
proxy_args=()
((FORCE == 1)) && proxy_args+=(--force)
if ! bash "$(dirname "${BASH_SOURCE[0]}")/proxy-image.sh" "${proxy_args[@]}"; then
  [[ "${CI:-}" == "true" ]] && die "the front proxy image could not be made (see above)"
  log "warning: the front proxy image was not made; specs with traffic.proxy need haproxy:2.6 (docker pull haproxy:2.6) or kiln-local/haproxy:2.6"
fi
