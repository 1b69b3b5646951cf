#!/usr/bin/env bash
# Makes kiln-local/haproxy:2.6, the front proxy image the Docker provider runs when no registry can
# be reached (on a normal machine the provider uses the official `haproxy:2.6` instead). Built with
# `docker import` from Debian's `haproxy` package binary (installed with apt-get when missing and
# we are root), every shared library `ldd` lists (liblua5.3, libssl, ...) at its own path, the
# dynamic loader, a static busybox (for `sh` in `docker exec`), /etc/passwd with a `haproxy` user
# (uid 99, as in the official image) and the folders HAProxy uses. Laid out like the official image:
# the binary is on PATH as `haproxy`, the configuration lives in /usr/local/etc/haproxy/haproxy.cfg,
# the image runs as user `haproxy` (`docker import` cannot set a stop signal: the provider sets
# SIGUSR1, a soft stop, on the proxy container).
#
# Usage:
#   eval "$(bash scripts/docker-engine.sh start | tail -1)"
#   bash scripts/proxy-image.sh [--force]     # --force rebuilds the image when it exists
#   export KILN_DOCKER_PROXY_IMAGE=kiln-local/haproxy:2.6   # optional: see docs/traffic.md
#
# Uses DOCKER_HOST from the environment. Idempotent: when the image exists it is skipped.
set -euo pipefail

SCRIPT_NAME=proxy-image
HELP_LINES=2,17
# shellcheck source=lib/images.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/images.sh"
parse_force_flag "$@"

IMAGE="${KILN_LOCAL_PROXY_IMAGE:-kiln-local/haproxy:2.6}"
PATH_IN_IMAGE="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

require_engine

if ((FORCE == 0)) && docker image inspect "$IMAGE" >/dev/null 2>&1; then
  log "$IMAGE exists; skipped (use --force to rebuild)"
  exit 0
fi

# Debian's postinst may start a system haproxy on port 80 where an init system runs; we only want
# the binary, so that service is stopped again when this script installed the package.
HAPROXY_BIN="$(command -v haproxy || true)"
[[ -n "$HAPROXY_BIN" ]] || HAPROXY_BIN="$([[ -x /usr/sbin/haproxy ]] && echo /usr/sbin/haproxy || true)"
if [[ -z "$HAPROXY_BIN" ]]; then
  apt_install haproxy
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet haproxy 2>/dev/null; then
    systemctl stop haproxy >/dev/null 2>&1 || true
  elif command -v service >/dev/null 2>&1; then
    service haproxy stop >/dev/null 2>&1 || true
  fi
  HAPROXY_BIN=/usr/sbin/haproxy
fi
HAPROXY_BIN="$(readlink -f "$HAPROXY_BIN")"
VERSION="$("$HAPROXY_BIN" -v 2>/dev/null | sed -n 's/^HAProxy version \([0-9][0-9.]*\).*/\1/p' | head -1)"
[[ -n "$VERSION" ]] || die "$HAPROXY_BIN -v printed no version"
[[ "$VERSION" == 2.6.* ]] || log "warning: the host's haproxy is $VERSION, not 2.6.x; $IMAGE will hold $VERSION"

ensure_static_busybox

WORK="$(mktemp -d "${TMPDIR:-/tmp}/kiln-proxy-image.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
ROOT="$WORK/root"

log "building $IMAGE from $HAPROXY_BIN (HAProxy $VERSION)"
make_busybox_root "$ROOT"
mkdir -p "$ROOT"/{usr/local/sbin,run/haproxy,var/lib/haproxy,usr/local/etc/haproxy}

cp "$HAPROXY_BIN" "$ROOT/usr/sbin/haproxy"
chmod 755 "$ROOT/usr/sbin/haproxy"
# Where the official image has it, too.
ln -sf /usr/sbin/haproxy "$ROOT/usr/local/sbin/haproxy"

copy_shared_libraries "$HAPROXY_BIN" "$ROOT"

cat >"$ROOT/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
haproxy:x:99:99:haproxy:/var/lib/haproxy:/bin/false
EOF
printf 'root:x:0:\nhaproxy:x:99:\n' >"$ROOT/etc/group"
printf 'hosts: files dns\n' >"$ROOT/etc/nsswitch.conf"
chown 99:99 "$ROOT/var/lib/haproxy" "$ROOT/run/haproxy"
# A configuration that only proves the image starts; the provider writes its own before start.
cat >"$ROOT/usr/local/etc/haproxy/haproxy.cfg" <<'EOF'
global
    log stdout format raw daemon notice
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend probe
    bind 127.0.0.1:8404
    http-request return status 200
EOF
chmod 644 "$ROOT/usr/local/etc/haproxy/haproxy.cfg"

previous="$(docker image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null || true)"
tar --numeric-owner -C "$ROOT" -cf - . | docker import \
  --change "ENV PATH=$PATH_IN_IMAGE" \
  --change "ENV HAPROXY_VERSION=$VERSION" \
  --change "LABEL dev.kiln.local-base=haproxy" \
  --change "USER haproxy" \
  --change "WORKDIR /var/lib/haproxy" \
  --change 'CMD ["haproxy", "-W", "-db", "-f", "/usr/local/etc/haproxy/haproxy.cfg"]' \
  - "$IMAGE" >/dev/null
if [[ -n "$previous" && "$previous" != "$(docker image inspect --format '{{.Id}}' "$IMAGE")" ]]; then
  docker image rm "$previous" >/dev/null 2>&1 || log "kept the previous $IMAGE ($previous): it is still in use"
fi

got="$(docker run --rm --entrypoint haproxy "$IMAGE" -v 2>&1 | head -1)" || die "$IMAGE does not run haproxy"
[[ "$got" == *"$VERSION"* ]] || die "$IMAGE printed '$got', expected HAProxy $VERSION"
docker run --rm --entrypoint haproxy "$IMAGE" -c -f /usr/local/etc/haproxy/haproxy.cfg >/dev/null 2>&1 || die "$IMAGE does not accept its own configuration"
log "built $IMAGE ($got)"
