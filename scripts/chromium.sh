#!/usr/bin/env bash
# Finds (installing when missing) the headless Chromium the status page's browser test drives
# (packages/server/src/status-page.integ.test.ts, through playwright-core's executablePath).
#
#   bash scripts/chromium.sh path   # print the path of a Chromium that runs; install Debian's when missing
#   bash scripts/chromium.sh env    # the same, but never installs: fails when there is none
#
# Both print, as their last stdout line,
#   export KILN_CHROMIUM=/usr/bin/chromium
# so callers can
#   eval "$(bash scripts/chromium.sh path | tail -1)"
# Progress goes to stderr.
#
# Tried in order: KILN_CHROMIUM (when it names an executable), Debian's /usr/bin/chromium, then
# `chromium` on PATH. "Runs" means `--version` answers (as root too: it needs no sandbox for that).
# Install (`path` only, as root): Debian's `chromium` package with apt-get, and `fonts-liberation`
# so screenshots have readable text; never a browser download of Playwright's own (no host but
# the package registries is reachable on the build machines). The install takes about a minute.
#
# Environment:
#   KILN_CHROMIUM   a Chromium (or Chrome) binary to use when it runs (checked first)
set -euo pipefail

DEBIAN_CHROMIUM=/usr/bin/chromium

SCRIPT_NAME=kiln-chromium
# shellcheck source=lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

# Whether $1 is a Chromium that runs; prints its version line.
runs() {
  [[ -n "$1" && -x "$1" ]] || return 1
  timeout 30 "$1" --version 2>/dev/null | head -n 1 | grep -Ei 'chrom' || return 1
}

# Prints the path of a Chromium that runs; fails when there is none.
find_chromium() {
  local candidate version
  for candidate in "${KILN_CHROMIUM:-}" "$DEBIAN_CHROMIUM" "$(command -v chromium 2>/dev/null || true)"; do
    if version="$(runs "$candidate")"; then
      log "using $candidate ($version)"
      printf '%s\n' "$candidate"
      return 0
    fi
  done
  return 1
}

print_export() { printf 'export KILN_CHROMIUM=%s\n' "$1"; }

cmd_path() {
  local found started
  if found="$(find_chromium)"; then
    print_export "$found"
    return 0
  fi
  [[ -z "${KILN_CHROMIUM:-}" ]] || log "KILN_CHROMIUM=$KILN_CHROMIUM does not run; installing Debian's chromium"
  started=$SECONDS
  apt_install chromium fonts-liberation
  log "installed in $((SECONDS - started))s"
  KILN_CHROMIUM='' found="$(find_chromium)" || die "Debian's chromium was installed but $DEBIAN_CHROMIUM --version does not answer"
  print_export "$found"
}

cmd_env() {
  local found
  found="$(find_chromium)" || die "no Chromium found (KILN_CHROMIUM, $DEBIAN_CHROMIUM, chromium on PATH); run: bash scripts/chromium.sh path"
  print_export "$found"
}

case "${1:-}" in
  path) cmd_path ;;
  env) cmd_env ;;
  *)
    printf 'usage: %s path|env\n' "$0" >&2
    exit 2
    ;;
esac
