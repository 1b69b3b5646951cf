#!/usr/bin/env bash
# `npm test`: sets up what the test suites need, builds, then runs every test (`vitest run`: the
# unit and integ projects); extra arguments go to vitest.
#
#   bash scripts/test.sh [vitest arguments]   # set up, build, test (what `npm test` runs)
#   bash scripts/test.sh --setup              # set up only; print the export lines, so that
#                                             #   eval "$(bash scripts/test.sh --setup)"
#                                             # lets `npx vitest` find the same engines
#
# What the suites need, and the script that finds or provides each (they install with apt-get or
# pip only when something is missing, and only as root for apt-get):
#
#   Docker engine   scripts/docker-engine.sh   every integration suite
#   base images     scripts/base-images.sh     kiln-local/busybox, kiln-local/node:20, kiln-local/haproxy:2.6
#   moto            scripts/moto.sh            the aws provider's suites (the EC2 emulator)
#   PostgreSQL      scripts/postgres.sh        store-postgres and the server's replicas suite
#   schemathesis    scripts/schemathesis.sh    the server's OpenAPI suite
#   Chromium        scripts/chromium.sh        the server's status page suite
#
# KILN_TEST_SETUP says what to do about them:
#   start   (the default as root) reuse what answers; start, and install when missing, the rest
#   find    (the default otherwise) use only what already answers or is installed; a suite whose
#           part is missing skips with a loud notice that says how to get it (under CI=true it fails)
#   off     do nothing (`npm run test:unit`)
# A variable already set (DOCKER_HOST, AWS_ENDPOINT_URL_EC2, KILN_PG_URL, KILN_SCHEMATHESIS,
# KILN_CHROMIUM) is tried first. The scripts' own variables (KILN_ENGINE_DIR, KILN_MOTO_PORT,
# KILN_MOTO_DIR, KILN_PG_PORT, KILN_PG_DIR, ...) reach them.
#
# The terminal gets one line per part; what the scripts print, installers included (apt-get, dpkg,
# pip), goes to the log file named on the first line ($KILN_TEST_SETUP_LOG, default
# node_modules/.cache/kiln/test-setup.log), and a part that fails to start shows its output in
# full. A failure is fatal under CI=true; otherwise the suites that need that part skip loudly.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SCRIPTS="$ROOT/scripts"

# Progress goes to stderr: stdout carries the export lines of --setup.
say() { printf '%s\n' "$*" >&2; }

# Prints the setup mode: KILN_TEST_SETUP when set (start, find or off), else start as root and
# find otherwise. Fails on any other value.
setup_mode() {
  case "${KILN_TEST_SETUP:-}" in
    start | find | off) printf '%s\n' "$KILN_TEST_SETUP" ;;
    "") if [[ "$(id -u)" == 0 ]]; then printf 'start\n'; else printf 'find\n'; fi ;;
    *)
      say "npm test: KILN_TEST_SETUP must be start, find or off, not '$KILN_TEST_SETUP'"
      return 2
      ;;
  esac
}

# $1 with a URL's password masked.
redact() { printf '%s\n' "$1" | sed -E 's#^([a-z]+://[^:/@]*):[^@]*@#\1:***@#'; }

# Stdin with the passwords of URLs and AWS secret keys masked: what goes into the log.
redact_secrets() { sed -E 's#(://[^:/@[:space:]]*):[^@[:space:]]*@#\1:***@#g; s#(AWS_SECRET_ACCESS_KEY=)[^[:space:]]*#\1***#g'; }

EXPORTS=()   # the export lines of the parts found, in order
FAILED=0     # parts that failed to start (start mode)

# Prints label $1, then runs scripts/$2 with the arguments after it, its output (stdout and
# stderr) to the log. Sets STEP_LINE (its last stdout line), STEP_SECONDS and STEP_OUTPUT (a file
# with its whole output, for part_done / part_failed / part_missing to show or remove); returns
# the script's exit code.
run_part() {
  local label="$1" script="$2"
  shift 2
  local part started=$SECONDS rc=0 out
  part="$(mktemp "${TMPDIR:-/tmp}/kiln-test-setup.XXXXXX")"
  printf '\n===== %s: bash scripts/%s %s\n' "$(date -Is)" "$script" "$*" >>"$LOG"
  printf '  %-14s ' "$label" >&2
  out="$(bash "$SCRIPTS/$script" "$@" 2>"$part")" || rc=$?
  [[ -z "$out" ]] || printf '%s\n' "$out" >>"$part"
  redact_secrets <"$part" >>"$LOG"
  STEP_LINE="$(printf '%s\n' "$out" | tail -n 1)"
  STEP_SECONDS=$((SECONDS - started))
  STEP_OUTPUT="$part"
  return "$rc"
}

# Prints the end of a part's line: what was found, and the time when it took a while.
part_done() {
  local shown="$1"
  if ((STEP_SECONDS >= 2)); then shown+=" (${STEP_SECONDS} s)"; fi
  say "$shown"
  rm -f "$STEP_OUTPUT"
}

# A part that failed to start: its output in full, then fatal under CI=true.
part_failed() {
  local label="$1" rc="$2" what="$3"
  say "FAILED (exit $rc after ${STEP_SECONDS} s); $what. Its output (also in $LOG):"
  redact_secrets <"$STEP_OUTPUT" | sed 's/^/    | /' >&2
  rm -f "$STEP_OUTPUT"
  FAILED=$((FAILED + 1))
  if [[ "${CI:-}" == "true" ]]; then
    say "npm test: $label is required under CI=true; stopping."
    exit 1
  fi
}

# A part that find mode did not find: one line saying what to do.
part_missing() {
  say "not found: $1"
  rm -f "$STEP_OUTPUT"
}

# One part: $1 label, $2 variable that names it, $3 script, $4 how to show the value (url, path,
# secret-url), $5 what its absence skips, $6 how to get it. Start mode runs `start` (`path` for the
# finders), find mode runs `env` unless the variable is already set.
setup_part() {
  local label="$1" variable="$2" script="$3" show="$4" skips="$5" how="$6" verb rc=0 value
  if [[ "$MODE" == find && -n "${!variable:-}" ]]; then
    value="${!variable}"
    [[ "$show" == secret-url ]] && value="$(redact "$value")"
    printf '  %-14s %s (from %s)\n' "$label" "$value" "$variable" >&2
    EXPORTS+=("export $variable=$(printf '%q' "${!variable}")")
    return 0
  fi
  case "$MODE:$script" in
    start:schemathesis.sh | start:chromium.sh) verb="path" ;;
    start:*) verb="start" ;;
    find:*) verb="env" ;;
  esac
  run_part "$label" "$script" "$verb" || rc=$?
  if ((rc != 0)); then
    if [[ "$MODE" == start ]]; then part_failed "$label" "$rc" "$skips"; else part_missing "$skips; $how"; fi
    return 1
  fi
  # schemathesis.sh path prints a bare path; every other command prints an export line.
  [[ "$STEP_LINE" == export\ * ]] || STEP_LINE="export $variable=$(printf '%q' "$STEP_LINE")"
  eval "$STEP_LINE"
  EXPORTS+=("$STEP_LINE")
  value="${!variable:-?}"
  [[ "$show" == secret-url ]] && value="$(redact "$value")"
  part_done "$value"
}

# The base images need the engine: start mode makes the missing ones, find mode only checks.
setup_base_images() {
  local rc=0 image missing=()
  if [[ "$MODE" == start ]]; then
    run_part "base images" base-images.sh || rc=$?
    if ((rc != 0)); then
      part_failed "the base images" "$rc" "integration suites that build on them will fail"
      return 1
    fi
    part_done "kiln-local/busybox, kiln-local/node:20, kiln-local/haproxy:2.6"
    return 0
  fi
  if ! command -v docker >/dev/null 2>&1; then
    printf '  %-14s not checked: no docker CLI\n' "base images" >&2
    return 0
  fi
  for image in kiln-local/busybox:latest kiln-local/node:20 kiln-local/haproxy:2.6; do
    timeout 15 docker image inspect "$image" >/dev/null 2>&1 || missing+=("$image")
  done
  if ((${#missing[@]} == 0)); then
    printf '  %-14s %s\n' "base images" "kiln-local/busybox, kiln-local/node:20, kiln-local/haproxy:2.6" >&2
  else
    printf '  %-14s not found: %s; make them: bash scripts/base-images.sh\n' "base images" "${missing[*]}" >&2
  fi
}

# Whether the docker CLI $1 can build with BuildKit secrets (`--secret`): it has the buildx plugin,
# or BuildKit is built in (Docker 18.09 to 22.x CLIs, such as Debian 12's docker.io 20.10, with
# DOCKER_BUILDKIT=1). A CLI of Docker 23 or later without buildx fails `build --help` then.
buildkit_capable() {
  local help
  timeout 15 "$1" buildx version >/dev/null 2>&1 && return 0
  help="$(DOCKER_BUILDKIT=1 timeout 15 "$1" build --help 2>/dev/null)" || return 1
  [[ "$help" == *--secret* ]]
}

# The docker CLI for builds with build secrets (the docker provider runs it for them): nothing to
# do when KILN_DOCKER_CLI is set or the `docker` on PATH can; otherwise the first other docker CLI
# on PATH, or /usr/bin/docker, that can is exported as KILN_DOCKER_CLI. Prints a line only then,
# or when none is found (the build-secret suites then fail, saying so).
setup_buildkit_cli() {
  local candidate
  if [[ -n "${KILN_DOCKER_CLI:-}" ]]; then
    printf '  %-14s %s (from KILN_DOCKER_CLI)\n' "BuildKit CLI" "$KILN_DOCKER_CLI" >&2
    EXPORTS+=("export KILN_DOCKER_CLI=$(printf '%q' "$KILN_DOCKER_CLI")")
    return 0
  fi
  if command -v docker >/dev/null 2>&1 && buildkit_capable docker; then return 0; fi
  while IFS= read -r candidate; do
    [[ -n "$candidate" && -x "$candidate" ]] || continue
    if buildkit_capable "$candidate"; then
      printf '  %-14s %s (the docker on PATH has no BuildKit)\n' "BuildKit CLI" "$candidate" >&2
      # Exported here too: `npm test` runs the suites from this shell.
      export KILN_DOCKER_CLI="$candidate"
      EXPORTS+=("export KILN_DOCKER_CLI=$(printf '%q' "$candidate")")
      return 0
    fi
  done < <({ type -ap docker || true; printf '/usr/bin/docker\n'; } | awk '!seen[$0]++')
  printf '  %-14s not found: builds with build secrets will fail; install the docker buildx plugin, or export KILN_DOCKER_CLI=<a docker CLI with BuildKit>\n' "BuildKit CLI" >&2
}

setup_all() {
  # What to do about a part find mode did not find; the suites' skip notices say the same.
  local as_root="when run as root or with KILN_TEST_SETUP=start"
  LOG="${KILN_TEST_SETUP_LOG:-$ROOT/node_modules/.cache/kiln/test-setup.log}"
  mkdir -p "$(dirname "$LOG")"
  printf 'npm test setup (%s), %s\n' "$MODE" "$(date -Is)" >"$LOG"
  if [[ "$MODE" == start ]]; then
    say "npm test: starting or reusing what the tests need (installers' output: $LOG)"
  else
    say "npm test: looking for what the tests need; starting nothing (KILN_TEST_SETUP=find; log: $LOG)"
  fi
  if setup_part "Docker engine" DOCKER_HOST docker-engine.sh url "the integration suites will skip" \
    "npm test starts one when run as root; or: export DOCKER_HOST=<an engine you can use>"; then
    export DOCKER_HOST
    setup_base_images || true
    setup_buildkit_cli
  fi
  setup_part "moto" AWS_ENDPOINT_URL_EC2 moto.sh url "the aws provider's suites will skip" \
    "npm test starts one $as_root; or: npm run moto:start" || true
  setup_part "PostgreSQL" KILN_PG_URL postgres.sh secret-url "the PostgreSQL suites will skip" \
    "npm test starts one $as_root; or: npm run postgres:start" || true
  setup_part "schemathesis" KILN_SCHEMATHESIS schemathesis.sh path "the OpenAPI suite will skip" \
    "npm test installs it $as_root; or: bash scripts/schemathesis.sh path" || true
  setup_part "Chromium" KILN_CHROMIUM chromium.sh path "the status page suite will skip" \
    "npm test installs Debian's when run as root; or: export KILN_CHROMIUM=<a Chromium>" || true
  if ((FAILED > 0)); then
    say "npm test: $FAILED part(s) failed to start; see above for what that means for the tests."
  fi
}

main() {
  cd "$ROOT"
  MODE="$(setup_mode)"
  if [[ "${1:-}" == --setup ]]; then
    [[ "$MODE" != off ]] || { say "npm test: KILN_TEST_SETUP=off: nothing to set up"; return 0; }
    setup_all
    ((${#EXPORTS[@]} == 0)) || printf '%s\n' "${EXPORTS[@]}"
    return 0
  fi
  [[ "$MODE" == off ]] || setup_all
  # Turbo's one-time telemetry notice is noise in a test run (and nothing is sent from here).
  TURBO_TELEMETRY_DISABLED="${TURBO_TELEMETRY_DISABLED:-1}" npx turbo run build --output-logs=errors-only
  exec npx vitest run "$@"
}

# Sourced (by its test) it only defines the functions.
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then main "$@"; fi
