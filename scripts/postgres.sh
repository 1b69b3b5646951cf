#!/usr/bin/env bash
# Starts, finds or stops the local PostgreSQL Kiln's state-store tests use.
#
#   bash scripts/postgres.sh start   # reuse a PostgreSQL that answers, else start our own cluster
#   bash scripts/postgres.sh env     # print the export line for the PostgreSQL that answers
#   bash scripts/postgres.sh stop    # stop the cluster this script started (if any)
#
# `start` and `env` print, as their last stdout line,
#   export KILN_PG_URL=postgres://kiln:PASSWORD@127.0.0.1:PORT/kiln
# so callers can
#   eval "$(bash scripts/postgres.sh start | tail -1)"
# Progress goes to stderr, with the password masked.
#
# "Answers" means: psql logs in with the URL and `SELECT 1` returns 1. Tried in order: KILN_PG_URL,
# then our own URL (postgres://kiln:$KILN_PG_PASSWORD@127.0.0.1:$KILN_PG_PORT/kiln). A PostgreSQL
# that answers is reused whatever its version.
#
# Our own cluster: Debian's PostgreSQL server binaries, /usr/lib/postgresql/<version>/bin (the
# newest version there; KILN_PG_BIN overrides), installed with apt-get (`postgresql`) when missing,
# as root. It is a throwaway test cluster: `initdb` into KILN_PG_DIR/data as the `postgres` user
# (as the current user when not root; PostgreSQL refuses to run as root), listening on 127.0.0.1
# only, with its socket in KILN_PG_DIR (mode 0700: only its owner, and root, may use it, as the
# superuser without a password), TCP logins by password (scram-sha-256), and fsync off (fast, not
# crash-safe: never put data you want to keep in it). `start` makes a `kiln` role with the
# password and a `kiln` database it owns. Debian's own "main" cluster (port 5432), if the package
# made one, is left alone.
#
# Environment:
#   KILN_PG_PORT        port of our own cluster on 127.0.0.1 (default 5433: next to PostgreSQL's
#                       5432, so a system PostgreSQL keeps its port; if another server holds 5433,
#                       e.g. a second Debian cluster or a container mapped there, set another one)
#   KILN_PG_DIR         the cluster's folder: data/, socket, log (postgres.log), start lock
#                       (default /tmp/kiln-postgres)
#   KILN_PG_PASSWORD    the kiln role's password (default kiln; letters, digits and ._~- only)
#   KILN_PG_BIN         a folder holding initdb, pg_ctl and postgres (default: the newest
#                       /usr/lib/postgresql/<version>/bin, else pg_config --bindir)
#   KILN_PG_TIMEOUT_S   how long `start` waits for the server to answer (default 60)
#   KILN_PG_URL         a PostgreSQL to reuse when it answers (checked first)
set -euo pipefail

PORT="${KILN_PG_PORT:-5433}"
PG_DIR="${KILN_PG_DIR:-/tmp/kiln-postgres}"
DATA="$PG_DIR/data"
LOGFILE="$PG_DIR/postgres.log"
LOCKFILE="$PG_DIR/start.lock"
PASSWORD="${KILN_PG_PASSWORD:-kiln}"
TIMEOUT_S="${KILN_PG_TIMEOUT_S:-60}"
OUR_URL="postgres://kiln:$PASSWORD@127.0.0.1:$PORT/kiln"

SCRIPT_NAME=kiln-postgres
# shellcheck source-path=SCRIPTDIR source=lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

[[ "$PASSWORD" =~ ^[A-Za-z0-9._~-]+$ ]] || die "KILN_PG_PASSWORD may hold only letters, digits and ._~- (it goes into a URL and into SQL unquoted)"
[[ "$PORT" =~ ^[0-9]+$ ]] || die "KILN_PG_PORT must be a port number, not '$PORT'"

# $1 with its password masked, for logs.
redact() { printf '%s\n' "$1" | sed -E 's#^([a-z]+://[^:/@]*):[^@]*@#\1:***@#; s#(password=)[^&[:space:]]*#\1***#g'; }

# Prints a psql: the one on PATH (Debian's wrapper), else one under /usr/lib/postgresql.
psql_bin() {
  local bin
  if bin="$(command -v psql 2>/dev/null)"; then
    printf '%s\n' "$bin"
    return 0
  fi
  for bin in $(find /usr/lib/postgresql -maxdepth 3 -path '*/bin/psql' 2>/dev/null | sort -V -r); do
    [[ -x "$bin" ]] && printf '%s\n' "$bin" && return 0
  done
  return 1
}

# Whether PostgreSQL answers at $1 (a postgres:// URL): psql logs in and SELECT 1 returns 1.
answers() {
  local url="$1" psql out
  [[ "$url" == postgres://* || "$url" == postgresql://* ]] || return 1
  psql="$(psql_bin)" || return 1
  out="$(PGCONNECT_TIMEOUT=3 timeout 10 "$psql" -X -A -t -q -c 'SELECT 1' "$url" 2>/dev/null)" || return 1
  [[ "$out" == 1 ]]
}

# Prints the URL of a PostgreSQL that already answers; fails when none does.
find_pg() {
  local candidate
  for candidate in "${KILN_PG_URL:-}" "$OUR_URL"; do
    if [[ -n "$candidate" ]] && answers "$candidate"; then
      printf '%s\n' "$candidate"
      return 0
    fi
  done
  return 1
}

export_line() { printf 'export KILN_PG_URL=%s\n' "$1"; }

# Prints the folder of the server binaries (initdb, pg_ctl, postgres): KILN_PG_BIN, else the
# newest /usr/lib/postgresql/<version>/bin, else pg_config --bindir. $1: a major version to insist on.
server_bin() {
  local want="${1:-}" dir
  local candidates=()
  [[ -n "${KILN_PG_BIN:-}" ]] && candidates+=("$KILN_PG_BIN")
  if [[ -n "$want" ]]; then
    candidates+=("/usr/lib/postgresql/$want/bin")
  else
    while IFS= read -r dir; do candidates+=("$dir"); done < <(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin -type d 2>/dev/null | sort -V -r)
  fi
  if command -v pg_config >/dev/null 2>&1; then candidates+=("$(pg_config --bindir 2>/dev/null || true)"); fi
  for dir in "${candidates[@]}"; do
    [[ -n "$dir" && -x "$dir/initdb" && -x "$dir/pg_ctl" && -x "$dir/postgres" ]] || continue
    if [[ -n "$want" ]] && [[ "$(server_major "$dir")" != "$want" ]]; then continue; fi
    printf '%s\n' "$dir"
    return 0
  done
  return 1
}

# The major version of the server binaries in folder $1 ("15").
server_major() { "$1/postgres" --version | sed -E 's/^[^0-9]*([0-9]+).*/\1/'; }

# Runs "$@" as the cluster's owner: the postgres user when we are root, else ourselves.
as_owner() {
  if [[ "$(id -u)" != 0 ]]; then
    "$@"
  elif command -v runuser >/dev/null 2>&1; then
    runuser -u postgres -- "$@"
  else
    su -s /bin/sh postgres -c "$(printf '%q ' "$@")"
  fi
}

# The postmaster's pid when our cluster runs; fails otherwise.
postmaster_pid() {
  local pid
  [[ -f "$DATA/postmaster.pid" ]] || return 1
  pid="$(head -n 1 "$DATA/postmaster.pid" 2>/dev/null || true)"
  [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null && printf '%s\n' "$pid"
}

# Makes the cluster in $DATA with the binaries in $1.
init_cluster() {
  local bin="$1"
  log "making a cluster in $DATA ($("$bin/postgres" --version))"
  as_owner "$bin/initdb" -D "$DATA" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
    --encoding=UTF8 --no-locale --no-sync >>"$LOGFILE" 2>&1 9>&- || {
    tail -n 20 "$LOGFILE" >&2 || true
    die "initdb failed; see $LOGFILE"
  }
  # Port, socket folder and listen address go on pg_ctl's command line at each start instead.
  cat >>"$DATA/postgresql.conf" <<'CONF'

# Added by Kiln's scripts/postgres.sh: a throwaway test cluster. Fast, not crash-safe.
unix_socket_permissions = 0700
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 200
CONF
}

# Creates (or updates) the kiln role and database over the cluster's socket, as the superuser.
setup_role() {
  local psql
  psql="$(psql_bin)" || die "psql is missing"
  as_owner "$psql" -X -q -v ON_ERROR_STOP=1 -h "$PG_DIR" -p "$PORT" -U postgres -d postgres >/dev/null 9>&- <<SQL
SELECT 'CREATE ROLE kiln LOGIN' WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'kiln') \gexec
ALTER ROLE kiln WITH LOGIN PASSWORD '$PASSWORD';
SELECT 'CREATE DATABASE kiln OWNER kiln' WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'kiln') \gexec
SQL
}

cmd_start() {
  local url
  if url="$(find_pg)"; then
    log "reusing the PostgreSQL that answers at $(redact "$url")"
    export_line "$url"
    return 0
  fi
  mkdir -p "$PG_DIR"
  # One `start` at a time: a second one waits, then reuses the cluster the first one started.
  exec 9>"$LOCKFILE"
  if command -v flock >/dev/null 2>&1; then
    flock -w "$TIMEOUT_S" 9 || die "another 'postgres.sh start' holds $LOCKFILE"
  fi
  if url="$(find_pg)"; then
    log "reusing the PostgreSQL that answers at $(redact "$url")"
    export_line "$url"
    return 0
  fi

  local bin version=""
  [[ -f "$DATA/PG_VERSION" ]] && version="$(cat "$DATA/PG_VERSION")"
  if ! bin="$(server_bin "$version")"; then
    if [[ -n "$version" ]] && server_bin >/dev/null; then
      die "$DATA was made by PostgreSQL $version, whose binaries are gone; remove $PG_DIR (a test cluster) and start again"
    fi
    apt_install postgresql
    bin="$(server_bin "$version")" || die "no PostgreSQL server binaries under /usr/lib/postgresql/*/bin even after installing postgresql (set KILN_PG_BIN)"
  fi
  psql_bin >/dev/null || apt_install postgresql-client
  if [[ "$(id -u)" == 0 ]]; then
    id postgres >/dev/null 2>&1 || die "there is no postgres user to run the cluster as (Debian's postgresql-common makes it); reinstall postgresql-common"
    touch "$LOGFILE"
    chown postgres: "$PG_DIR" "$LOCKFILE" "$LOGFILE"
  fi
  chmod 0700 "$PG_DIR"
  [[ -f "$DATA/PG_VERSION" ]] || init_cluster "$bin"

  local pid deadline
  if pid="$(postmaster_pid)"; then
    # Ours is up but does not answer our URL (yet): give it the deadline, then fail loudly.
    log "our PostgreSQL (pid $pid) is running but not answering yet; waiting"
  else
    log "starting PostgreSQL $(server_major "$bin") on 127.0.0.1:$PORT; log: $LOGFILE"
    # pg_ctl detaches the server (setsid) so it outlives this shell. 9>&-: the server must not hold the start lock.
    as_owner "$bin/pg_ctl" -D "$DATA" -l "$LOGFILE" -W \
      -o "-c listen_addresses=127.0.0.1 -p $PORT -k $PG_DIR" start >/dev/null 9>&- \
      || die "pg_ctl could not start the server; see $LOGFILE"
  fi
  local started=$SECONDS
  deadline=$((SECONDS + TIMEOUT_S))
  until postmaster_pid >/dev/null && "$bin/pg_isready" -q -h 127.0.0.1 -p "$PORT" -t 1; do
    # pg_ctl -W returns before the server writes its pidfile; one without a live pidfile after a
    # few seconds exited (it removes the file when it stops).
    if ((SECONDS - started >= 3)) && ! postmaster_pid >/dev/null; then
      tail -n 20 "$LOGFILE" >&2 || true
      die "PostgreSQL exited early (port $PORT taken? set KILN_PG_PORT); see $LOGFILE"
    fi
    ((SECONDS < deadline)) || die "PostgreSQL did not answer on 127.0.0.1:$PORT within ${TIMEOUT_S}s; see $LOGFILE or run '$0 stop'"
    sleep 0.2
  done
  setup_role || die "could not make the kiln role and database over the socket in $PG_DIR; see $LOGFILE"
  answers "$OUR_URL" || die "PostgreSQL runs on 127.0.0.1:$PORT but $(redact "$OUR_URL") does not log in (another server on that port? set KILN_PG_PORT); see $LOGFILE"
  log "PostgreSQL ready at $(redact "$OUR_URL") (pid $(postmaster_pid || echo '?'))"
  export_line "$OUR_URL"
}

cmd_env() {
  local url
  url="$(find_pg)" || die "no PostgreSQL answers (tried ${KILN_PG_URL:+$(redact "$KILN_PG_URL"), }$(redact "$OUR_URL")); run: bash scripts/postgres.sh start"
  export_line "$url"
}

cmd_stop() {
  local pid bin
  if ! pid="$(postmaster_pid)"; then
    log "no PostgreSQL started by this script is running (data folder $DATA)"
    return 0
  fi
  bin="$(server_bin "$(cat "$DATA/PG_VERSION")")" || die "the binaries of PostgreSQL $(cat "$DATA/PG_VERSION") are gone; kill pid $pid yourself"
  log "stopping PostgreSQL (pid $pid)"
  as_owner "$bin/pg_ctl" -D "$DATA" -m fast -w -t 60 stop >/dev/null || die "pg_ctl could not stop PostgreSQL (pid $pid); see $LOGFILE"
  log "stopped"
}

dispatch "$@"
