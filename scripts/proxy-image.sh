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

FORCE=0
for arg in "$@"; do
  case "$arg" in
    --force) FORCE=1 ;;
    -h | --help)
      sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//' >&2
      exit 0
      ;;
    *)
      printf 'proxy-image: unknown argument %s (usage: %s [--force])\n' "$arg" "$0" >&2
      exit 2
      ;;
  esac
done

IMAGE="${KILN_LOCAL_PROXY_IMAGE:-kiln-local/haproxy:2.6}"
PATH_IN_IMAGE="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

log() { printf 'proxy-image: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

command -v docker >/dev/null 2>&1 || die "the docker CLI is missing; run: bash scripts/docker-engine.sh start (it installs docker.io)"
if ! timeout 15 docker version --format '{{.Server.Version}}' >/dev/null 2>&1; then
  die "no Docker engine answers at ${DOCKER_HOST:-unix:///var/run/docker.sock}; run: eval \"\$(bash scripts/docker-engine.sh start | tail -1)\""
fi

if ((FORCE == 0)) && docker image inspect "$IMAGE" >/dev/null 2>&1; then
  log "$IMAGE exists; skipped (use --force to rebuild)"
  exit 0
fi

# Installs Debian packages $@ when we are root; otherwise says what to install.
apt_install() {
  [[ "$(id -u)" == 0 ]] || die "missing $*; install them as root (apt-get install $*)"
  command -v apt-get >/dev/null 2>&1 || die "missing $* and apt-get is not available to install them"
  log "installing $* with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends "$@" >&2 || {
    apt-get update -qq >&2
    apt-get install -y -qq --no-install-recommends "$@" >&2
  }
}

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
  apt_install busybox-static
  BUSYBOX="$(find_static_busybox)" || die "busybox-static is installed but no static busybox was found"
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/kiln-proxy-image.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
ROOT="$WORK/root"

log "building $IMAGE from $HAPROXY_BIN (HAProxy $VERSION)"
mkdir -p "$ROOT"/{bin,sbin,usr/bin,usr/sbin,usr/local/sbin,etc,tmp,root,proc,sys,dev,run/haproxy,var/lib/haproxy,usr/local/etc/haproxy}
chmod 1777 "$ROOT/tmp"
cp "$BUSYBOX" "$ROOT/bin/busybox"
chmod 755 "$ROOT/bin/busybox"
while IFS= read -r applet; do
  [[ -n "$applet" && "$applet" != "bin/busybox" ]] || continue
  mkdir -p "$ROOT/$(dirname "$applet")"
  [[ -e "$ROOT/$applet" || -L "$ROOT/$applet" ]] || ln -s /bin/busybox "$ROOT/$applet"
done < <("$BUSYBOX" --list-full)

cp "$HAPROXY_BIN" "$ROOT/usr/sbin/haproxy"
chmod 755 "$ROOT/usr/sbin/haproxy"
# Where the official image has it, too.
ln -sf /usr/sbin/haproxy "$ROOT/usr/local/sbin/haproxy"

# Every library ldd names (`libx.so => /path (0x...)`) plus the loader (`/lib64/ld-linux... (0x...)`).
count=0
while IFS= read -r lib; do
  [[ -n "$lib" ]] || continue
  mkdir -p "$ROOT$(dirname "$lib")"
  cp -L "$lib" "$ROOT$lib"
  count=$((count + 1))
done < <(ldd "$HAPROXY_BIN" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' | sort -u)
((count > 0)) || die "ldd listed no libraries for $HAPROXY_BIN"
log "copied $count shared libraries"

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
