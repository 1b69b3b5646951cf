#!/usr/bin/env bash
# Starts, finds or stops the local EC2 emulator (moto server) Kiln's AWS tests use.
#
#   bash scripts/moto.sh start   # reuse a moto that answers, else install moto when missing and start one
#   bash scripts/moto.sh env     # print the export line for the moto that answers
#   bash scripts/moto.sh stop    # stop the moto server this script started (if any)
#
# `start` and `env` print, as their last stdout line,
#   export AWS_ENDPOINT_URL_EC2=http://127.0.0.1:PORT AWS_ENDPOINT_URL_ELASTIC_LOAD_BALANCING_V2=http://127.0.0.1:PORT
#          AWS_ENDPOINT_URL_SECRETS_MANAGER=http://127.0.0.1:PORT AWS_ENDPOINT_URL_SSM=http://127.0.0.1:PORT
# (one moto serves every service: it routes a request by the service named in its signature), plus
# AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing when AWS_ACCESS_KEY_ID is unset and
# AWS_REGION=us-east-1 when AWS_REGION and AWS_DEFAULT_REGION are unset (moto accepts any
# credentials; the SDK refuses to sign without some). So callers can
#   eval "$(bash scripts/moto.sh start | tail -1)"
# Progress goes to stderr.
#
# "Answers" means: an EC2 DescribeRegions (POST /, unsigned but with a SigV4-shaped Authorization
# header naming the ec2 service, which is how moto routes it) returns a DescribeRegionsResponse,
# and GET /moto-api/config answers (so it is moto, whose /moto-api/reset the tests use).
# A moto that already answers is reused whatever its version.
#
# Install (when no moto_server 5.2.1 is on PATH): a virtualenv at KILN_MOTO_VENV with
# `pip install 'moto[server]==5.2.1'`, made with Debian's /usr/bin/python3 (else python3 on PATH);
# as root, python3 and python3-venv are installed with apt-get when missing (Debian's python3 is
# "externally managed", PEP 668, so nothing is installed into it).
#
# Our own server runs with MOTO_ENABLE_AMI_VALIDATION=true (RunInstances with an AMI id that never
# existed fails with InvalidAMIID.NotFound, as on AWS); export MOTO_ENABLE_AMI_VALIDATION= (empty)
# before `start` to turn that off. Other MOTO_* variables of the environment reach the server too.
#
# Environment:
#   KILN_MOTO_PORT        port of our own server on 127.0.0.1 (default 5055: not moto's own 5000,
#                         which macOS AirPlay and Flask dev servers take, nor LocalStack's 4566)
#   KILN_MOTO_DIR         pidfile (moto.pid), log (moto.log) and lock (default /tmp/kiln-moto)
#   KILN_MOTO_VENV        the virtualenv moto is installed into (default /opt/kiln-moto as root,
#                         else ${XDG_CACHE_HOME:-~/.cache}/kiln-moto/venv)
#   KILN_MOTO_TIMEOUT_S   how long `start` waits for the server to answer (default 60)
#   AWS_ENDPOINT_URL_EC2  a moto to reuse when it answers (checked first; then our port, then
#                         http://127.0.0.1:5000, moto_server's own default)
set -euo pipefail

MOTO_VERSION=5.2.1
PORT="${KILN_MOTO_PORT:-5055}"
MOTO_DIR="${KILN_MOTO_DIR:-/tmp/kiln-moto}"
PIDFILE="$MOTO_DIR/moto.pid"
LOGFILE="$MOTO_DIR/moto.log"
LOCKFILE="$MOTO_DIR/start.lock"
if [[ -n "${KILN_MOTO_VENV:-}" ]]; then
  VENV="$KILN_MOTO_VENV"
elif [[ "$(id -u)" == 0 ]]; then
  VENV=/opt/kiln-moto
else
  VENV="${XDG_CACHE_HOME:-$HOME/.cache}/kiln-moto/venv"
fi
OUR_URL="http://127.0.0.1:$PORT"
MOTO_DEFAULT_URL="http://127.0.0.1:5000"
TIMEOUT_S="${KILN_MOTO_TIMEOUT_S:-60}"
# What a client would send, minus a real signature: moto routes on the service in the credential scope.
FAKE_AUTH='AWS4-HMAC-SHA256 Credential=testing/20240101/us-east-1/ec2/aws4_request, SignedHeaders=host, Signature=0'

SCRIPT_NAME=kiln-moto
# shellcheck source=lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

# Whether a moto server answers at $1 (an http URL).
answers() {
  local url="${1%/}" body
  [[ "$url" == http://* || "$url" == https://* ]] || return 1
  command -v curl >/dev/null 2>&1 || return 1
  body="$(curl -sS -m 5 -X POST -H "Authorization: $FAKE_AUTH" \
    --data 'Action=DescribeRegions&Version=2016-11-15' "$url/" 2>/dev/null)" || return 1
  [[ "$body" == *"<DescribeRegionsResponse"* ]] || return 1
  curl -fsS -m 5 -o /dev/null "$url/moto-api/config" 2>/dev/null
}

# Prints the URL of a moto that already answers; fails when none does.
find_moto() {
  local candidate
  for candidate in "${AWS_ENDPOINT_URL_EC2:-}" "$OUR_URL" "$MOTO_DEFAULT_URL"; do
    if [[ -n "$candidate" ]] && answers "$candidate"; then
      printf '%s\n' "${candidate%/}"
      return 0
    fi
  done
  return 1
}

# The export line for the moto at $1.
export_line() {
  local url="$1" line
  line="export AWS_ENDPOINT_URL_EC2=$url AWS_ENDPOINT_URL_ELASTIC_LOAD_BALANCING_V2=$url AWS_ENDPOINT_URL_SECRETS_MANAGER=$url AWS_ENDPOINT_URL_SSM=$url"
  [[ -n "${AWS_ACCESS_KEY_ID:-}" ]] || line+=" AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing"
  [[ -n "${AWS_REGION:-}${AWS_DEFAULT_REGION:-}" ]] || line+=" AWS_REGION=us-east-1"
  printf '%s\n' "$line"
}

# Prints the real script behind a moto_server on PATH ($1), looking through a pyenv shim.
real_moto_server() {
  local bin="$1"
  if grep -qs 'pyenv' "$bin" && ! head -n 1 "$bin" | grep -q python && command -v pyenv >/dev/null 2>&1; then
    bin="$(pyenv which moto_server 2>/dev/null)" || return 1
  fi
  printf '%s\n' "$bin"
}

# Prints the moto version the moto_server script $1 runs with (read from its python's shebang).
moto_version() {
  local shebang interp
  shebang="$(head -n 1 "$1" 2>/dev/null)" || return 1
  [[ "$shebang" == '#!'*python* ]] || return 1
  interp="${shebang#\#!}"
  # shellcheck disable=SC2086 # "/usr/bin/env python3" must split into words
  timeout 60 $interp -c 'import moto; print(moto.__version__)' 2>/dev/null
}

# Prints the path of a moto_server $MOTO_VERSION, installing it into $VENV when needed.
ensure_moto() {
  local bin version
  if bin="$(command -v moto_server 2>/dev/null)" && bin="$(real_moto_server "$bin")" \
    && version="$(moto_version "$bin")" && [[ "$version" == "$MOTO_VERSION" ]]; then
    log "using moto $version at $bin"
    printf '%s\n' "$bin"
    return 0
  fi
  bin="$VENV/bin/moto_server"
  if [[ -x "$bin" ]] && version="$(moto_version "$bin")" && [[ "$version" == "$MOTO_VERSION" ]]; then
    log "using moto $version at $bin"
    printf '%s\n' "$bin"
    return 0
  fi
  pip_install_into_venv "$VENV" "moto[server]==$MOTO_VERSION" KILN_MOTO_VENV
  version="$(moto_version "$bin")" || die "moto_server is missing from $VENV after pip install"
  [[ "$version" == "$MOTO_VERSION" ]] || die "$VENV has moto $version, not $MOTO_VERSION"
  printf '%s\n' "$bin"
}

cmd_start() {
  local url
  command -v curl >/dev/null 2>&1 || apt_install curl
  if url="$(find_moto)"; then
    log "reusing the moto that answers at $url"
    export_line "$url"
    return 0
  fi
  mkdir -p "$MOTO_DIR"
  # One `start` at a time: a second one waits, then reuses the server the first one started.
  exec 9>"$LOCKFILE"
  if command -v flock >/dev/null 2>&1; then
    flock -w "$TIMEOUT_S" 9 || die "another 'moto.sh start' holds $LOCKFILE"
  fi
  if url="$(find_moto)"; then
    log "reusing the moto that answers at $url"
    export_line "$url"
    return 0
  fi
  local pid deadline
  if pid="$(our_pid)"; then
    # Our server is alive but does not answer (yet): give it the deadline, then fail loudly.
    log "moto_server (pid $pid) is running but not answering yet; waiting"
  else
    local bin
    bin="$(ensure_moto)"
    log "starting moto_server on 127.0.0.1:$PORT; log: $LOGFILE"
    printf '\n===== %s: %s -H 127.0.0.1 -p %s =====\n' "$(date -Is)" "$bin" "$PORT" >>"$LOGFILE"
    # setsid: the server must outlive the shell (and the process group) that started it. The
    # setsid'ed child keeps the pid of $! (setsid execs when not a group leader). 9>&-: the server
    # must not hold the start lock.
    MOTO_ENABLE_AMI_VALIDATION="${MOTO_ENABLE_AMI_VALIDATION=true}" \
      setsid nohup "$bin" -H 127.0.0.1 -p "$PORT" </dev/null >>"$LOGFILE" 2>&1 9>&- &
    pid=$!
    printf '%s\n' "$pid" >"$PIDFILE"
  fi
  deadline=$((SECONDS + TIMEOUT_S))
  until answers "$OUR_URL"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      rm -f "$PIDFILE"
      tail -n 20 "$LOGFILE" >&2 || true
      die "moto_server exited early (port $PORT taken? set KILN_MOTO_PORT); see $LOGFILE"
    fi
    ((SECONDS < deadline)) || die "moto_server (pid $pid) did not answer at $OUR_URL within ${TIMEOUT_S}s; see $LOGFILE or run '$0 stop'"
    sleep 0.2
  done
  log "moto ready at $OUR_URL (pid $pid)"
  export_line "$OUR_URL"
}

cmd_env() {
  local url
  url="$(find_moto)" || die "no moto server answers (tried ${AWS_ENDPOINT_URL_EC2:-<AWS_ENDPOINT_URL_EC2 unset>}, $OUR_URL, $MOTO_DEFAULT_URL); run: bash scripts/moto.sh start"
  export_line "$url"
}

cmd_stop() { stop_our_process moto_server 20; }

dispatch "$@"
