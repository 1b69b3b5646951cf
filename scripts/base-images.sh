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

SCRIPT_NAME=base-images
HELP_LINES=2,16
# shellcheck source=lib/images.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/images.sh"
parse_force_flag "$@"

BUSYBOX_IMAGE="kiln-local/busybox:latest"
NODE_IMAGE="kiln-local/node:20"
PATH_IN_IMAGE="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

require_engine

# A static busybox: from Debian's busybox-static (installed here when missing and we are root).
ensure_static_busybox

WORK="$(mktemp -d "${TMPDIR:-/tmp}/kiln-base-images.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

exists() { docker image inspect "$1" >/dev/null 2>&1; }

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
  copy_shared_libraries "$node_bin" "$root"
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
