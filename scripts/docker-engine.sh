#!/usr/bin/env bash
# Starts, finds or stops the Docker engine Kiln's integration tests use.
#
#   bash scripts/docker-engine.sh start   # reuse an engine that answers, else start our own dockerd
#   bash scripts/docker-engine.sh env     # print the export line for the engine that answers
#   bash scripts/docker-engine.sh stop    # stop the dockerd this script started (if any)
#
# `start` and `env` print, as their last stdout line, `export DOCKER_HOST=...`, so callers can
#   eval "$(bash scripts/docker-engine.sh start | tail -1)"
# Progress goes to stderr. Nothing here pulls from an image registry.
#
# Environment:
#   KILN_ENGINE_DIR          where our own dockerd keeps data, exec state, pidfile, socket, log
#                            (default /tmp/kiln-engine)
#   KILN_ENGINE_TIMEOUT_S    how long `start` waits for the engine to answer (default 60)
#   DOCKER_HOST              an engine to reuse when it answers
set -euo pipefail

ENGINE_DIR="${KILN_ENGINE_DIR:-/tmp/kiln-engine}"
SOCKET="$ENGINE_DIR/docker.sock"
PIDFILE="$ENGINE_DIR/docker.pid"
LOGFILE="$ENGINE_DIR/dockerd.log"
OUR_HOST="unix://$SOCKET"
DEFAULT_HOST="unix:///var/run/docker.sock"
TIMEOUT_S="${KILN_ENGINE_TIMEOUT_S:-60}"

SCRIPT_NAME=kiln-engine
# shellcheck source=lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

# Whether the engine at $1 (a DOCKER_HOST URL) answers.
answers() {
  local host="$1"
  [[ -n "$host" ]] || return 1
  if [[ "$host" == unix://* && ! -S "${host#unix://}" ]]; then return 1; fi
  if command -v docker >/dev/null 2>&1; then
    DOCKER_HOST="$host" timeout 10 docker version --format '{{.Server.Version}}' >/dev/null 2>&1
  elif command -v curl >/dev/null 2>&1 && [[ "$host" == unix://* ]]; then
    timeout 10 curl -fsS --unix-socket "${host#unix://}" http://localhost/_ping >/dev/null 2>&1
  else
    return 1
  fi
}

# Prints the DOCKER_HOST of an engine that already answers; fails when none does.
find_engine() {
  local candidate
  for candidate in "${DOCKER_HOST:-}" "$OUR_HOST" "$DEFAULT_HOST"; do
    if answers "$candidate"; then
      printf '%s\n' "$candidate"
      return 0
    fi
  done
  return 1
}

ensure_packages() {
  local missing=()
  command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
  # busybox-static gives /bin/busybox, a static binary base-images.sh copies into an image.
  dpkg -s busybox-static >/dev/null 2>&1 || missing+=(busybox-static)
  ((${#missing[@]} == 0)) && return 0
  [[ "$(id -u)" == 0 ]] || die "missing ${missing[*]}; install them as root (apt-get install ${missing[*]}) or run this script as root"
  command -v apt-get >/dev/null 2>&1 || die "missing ${missing[*]} and apt-get is not available to install them"
  log "installing ${missing[*]} with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}

# Starts dockerd with the given storage driver; returns 0 once it answers, 1 if it died or timed out.
launch_dockerd() {
  local driver="$1"
  shift
  log "starting dockerd (storage driver $driver) under $ENGINE_DIR; log: $LOGFILE"
  printf '\n===== %s: dockerd --storage-driver %s %s =====\n' "$(date -Is)" "$driver" "$*" >>"$LOGFILE"
  # setsid: the engine must outlive the shell (and the process group) that started it.
  setsid nohup dockerd \
    --data-root "$ENGINE_DIR/data" \
    --exec-root "$ENGINE_DIR/exec" \
    --pidfile "$PIDFILE" \
    --host "$OUR_HOST" \
    --storage-driver "$driver" \
    "$@" \
    </dev/null >>"$LOGFILE" 2>&1 &
  local launcher=$! deadline=$((SECONDS + TIMEOUT_S))
  while ((SECONDS < deadline)); do
    if answers "$OUR_HOST"; then return 0; fi
    # The setsid'ed child keeps $launcher's pid (setsid execs when not a group leader).
    if ! kill -0 "$launcher" 2>/dev/null; then
      log "dockerd exited early with storage driver $driver (see $LOGFILE)"
      return 1
    fi
    sleep 0.5
  done
  log "dockerd did not answer within ${TIMEOUT_S}s with storage driver $driver"
  kill "$launcher" 2>/dev/null || true
  wait_gone "$launcher" 20 || kill -9 "$launcher" 2>/dev/null || true
  return 1
}

cmd_start() {
  local host
  if host="$(find_engine)"; then
    log "reusing the engine that answers at $host"
    printf 'export DOCKER_HOST=%s\n' "$host"
    return 0
  fi
  ensure_packages
  [[ "$(id -u)" == 0 ]] || die "no Docker engine answers (tried ${DOCKER_HOST:-<DOCKER_HOST unset>}, $OUR_HOST, $DEFAULT_HOST) and starting one needs root"
  mkdir -p "$ENGINE_DIR/data" "$ENGINE_DIR/exec"
  chmod 700 "$ENGINE_DIR"
  local pid
  if pid="$(our_pid)"; then
    # Our dockerd is alive but does not answer (yet): give it the deadline, then fail loudly.
    log "dockerd (pid $pid) is running but not answering yet; waiting"
    local deadline=$((SECONDS + TIMEOUT_S))
    until answers "$OUR_HOST"; do
      ((SECONDS < deadline)) || die "dockerd (pid $pid) does not answer at $OUR_HOST; see $LOGFILE or run '$0 stop'"
      sleep 0.5
    done
  elif launch_dockerd overlay2 || launch_dockerd vfs; then
    :
  elif launch_dockerd vfs --iptables=false --ip-masq=false; then
    log "started without iptables rules: published ports work through docker-proxy only"
  else
    tail -n 30 "$LOGFILE" >&2 || true
    die "could not start dockerd; see $LOGFILE"
  fi
  log "engine ready at $OUR_HOST (pid $(our_pid || echo '?'))"
  printf 'export DOCKER_HOST=%s\n' "$OUR_HOST"
}

cmd_env() {
  local host
  host="$(find_engine)" || die "no Docker engine answers (tried ${DOCKER_HOST:-<DOCKER_HOST unset>}, $OUR_HOST, $DEFAULT_HOST); run: bash scripts/docker-engine.sh start"
  printf 'export DOCKER_HOST=%s\n' "$host"
}

cmd_stop() { stop_our_process dockerd 60; }

dispatch "$@"
