# Shared by the scripts that install and start what the tests need (docker-engine.sh, moto.sh,
# and through lib/images.sh, base-images.sh and proxy-image.sh). Source it after setting
# SCRIPT_NAME (the log prefix); the process helpers use PIDFILE.

# Logs to stderr with the script's name; die logs and exits 1.
log() { printf '%s: %s\n' "$SCRIPT_NAME" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Installs Debian packages $@ when we are root; otherwise says what to install.
apt_install() {
  [[ "$(id -u)" == 0 ]] || die "missing $*; install them as root (apt-get install $*) or run this script as root"
  command -v apt-get >/dev/null 2>&1 || die "missing $* and apt-get is not available to install them"
  log "installing $* with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends "$@" >&2 || {
    apt-get update -qq >&2
    apt-get install -y -qq --no-install-recommends "$@" >&2
  }
}

# Prints the pid in $PIDFILE when that process is alive; fails otherwise.
our_pid() {
  [[ -f "$PIDFILE" ]] || return 1
  local pid
  pid="$(cat "$PIDFILE" 2>/dev/null || true)"
  [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null && printf '%s\n' "$pid"
}

# Waits up to $2 seconds for process $1 to exit.
wait_gone() {
  local pid="$1" deadline=$((SECONDS + $2))
  while kill -0 "$pid" 2>/dev/null; do
    ((SECONDS < deadline)) || return 1
    sleep 0.2
  done
}

# Stops the process in $PIDFILE (named $1 in logs): SIGTERM, then SIGKILL after $2 seconds.
stop_our_process() {
  local name="$1" grace="$2" pid
  if ! pid="$(our_pid)"; then
    log "no $name started by this script is running (pidfile $PIDFILE)"
    rm -f "$PIDFILE"
    return 0
  fi
  log "stopping $name (pid $pid)"
  kill -TERM "$pid"
  if ! wait_gone "$pid" "$grace"; then
    log "$name did not stop within ${grace}s; killing it"
    kill -KILL "$pid" 2>/dev/null || true
    wait_gone "$pid" 10 || die "$name (pid $pid) would not die"
  fi
  rm -f "$PIDFILE"
  log "stopped"
}

# Runs cmd_start, cmd_stop or cmd_env by the first argument.
dispatch() {
  case "${1:-}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    env) cmd_env ;;
    *)
      printf 'usage: %s start|stop|env\n' "$0" >&2
      exit 2
      ;;
  esac
}

# Prints a python3 (3.9 or later) that can make a virtualenv (has ensurepip and venv): Debian's
# first, then the one on PATH. Debian's own Python is "externally managed": tools go into a venv.
venv_python() {
  local py
  for py in /usr/bin/python3 "$(command -v python3 2>/dev/null || true)"; do
    if [[ -n "$py" && -x "$py" ]] && "$py" -c 'import sys, ensurepip, venv; sys.exit(sys.version_info < (3, 9))' >/dev/null 2>&1; then
      printf '%s\n' "$py"
      return 0
    fi
  done
  return 1
}

# Installs the pip requirement $2 (e.g. "moto[server]==5.2.1") into the virtualenv $1, making the
# virtualenv first (with Debian's python3-venv installed when missing). $3 names the variable that
# moves the virtualenv, for the error message. Dies on failure.
pip_install_into_venv() {
  local venv="$1" requirement="$2" variable="$3" py
  if [[ ! -x "$venv/bin/python3" ]]; then
    if ! py="$(venv_python)"; then
      apt_install python3 python3-venv
      py="$(venv_python)" || die "no python3 >= 3.9 can make a virtualenv, even after installing python3-venv"
    fi
    log "making a virtualenv at $venv with $py"
    mkdir -p "$(dirname "$venv")"
    "$py" -m venv "$venv" >&2 || die "could not make a virtualenv at $venv (set $variable to a writable path)"
  fi
  log "installing $requirement into $venv"
  "$venv/bin/python3" -m pip install --disable-pip-version-check --no-input -q "$requirement" >&2 \
    || die "pip could not install $requirement into $venv"
}
