#!/usr/bin/env bash
# Finds or installs Schemathesis (from PyPI), the property-based API tester the server's OpenAPI
# test (packages/server/src/openapi.integ.test.ts) runs against /v1/openapi.json.
#
#   bash scripts/schemathesis.sh path   # reuse or install schemathesis; print its binary's path
#   bash scripts/schemathesis.sh env    # print `export KILN_SCHEMATHESIS=PATH` for one already installed
#
# `path` prints the path of the `schemathesis` binary as its last stdout line, so callers can
#   export KILN_SCHEMATHESIS="$(bash scripts/schemathesis.sh path | tail -n 1)"
# `env` never installs; it fails when no schemathesis $SCHEMATHESIS_VERSION is found. Progress
# goes to stderr.
#
# Found, in order: KILN_SCHEMATHESIS (a binary), a `schemathesis` on PATH, then the virtualenv's;
# each is used only when `schemathesis --version` says $SCHEMATHESIS_VERSION (the CLI's options
# change between releases). Install (when none is found): a virtualenv at KILN_SCHEMATHESIS_VENV
# with `pip install schemathesis==$SCHEMATHESIS_VERSION`, made with Debian's /usr/bin/python3 (else
# python3 on PATH); as root, python3 and python3-venv are installed with apt-get when missing
# (Debian's python3 is "externally managed", PEP 668, so nothing is installed into it). The first
# install takes about 25 s (about 10 s with pip's cache warm).
#
# Environment:
#   KILN_SCHEMATHESIS        a schemathesis binary to use (checked first)
#   KILN_SCHEMATHESIS_VENV   the virtualenv it is installed into (default /opt/kiln-schemathesis
#                            as root, else ${XDG_CACHE_HOME:-~/.cache}/kiln-schemathesis/venv)
set -euo pipefail

# Schemathesis 4.x needs Python >= 3.9; Debian 12's python3 is 3.11.
SCHEMATHESIS_VERSION=4.32.5
if [[ -n "${KILN_SCHEMATHESIS_VENV:-}" ]]; then
  VENV="$KILN_SCHEMATHESIS_VENV"
elif [[ "$(id -u)" == 0 ]]; then
  VENV=/opt/kiln-schemathesis
else
  VENV="${XDG_CACHE_HOME:-$HOME/.cache}/kiln-schemathesis/venv"
fi

SCRIPT_NAME=kiln-schemathesis
# shellcheck source-path=SCRIPTDIR source=lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

# Prints the version the schemathesis binary $1 reports ("schemathesis, version 4.32.5" → 4.32.5).
st_version() {
  local out
  [[ -n "$1" && -x "$1" ]] || return 1
  out="$(NO_COLOR=1 timeout 60 "$1" --version 2>/dev/null)" || return 1
  [[ "$out" =~ ^schemathesis,\ version\ ([0-9][^[:space:]]*) ]] || return 1
  printf '%s\n' "${BASH_REMATCH[1]}"
}

# Prints the path of a schemathesis $SCHEMATHESIS_VERSION already installed; fails when none is.
find_schemathesis() {
  local candidate version
  for candidate in "${KILN_SCHEMATHESIS:-}" "$(command -v schemathesis 2>/dev/null || true)" "$VENV/bin/schemathesis"; do
    [[ -n "$candidate" ]] || continue
    if version="$(st_version "$candidate")"; then
      if [[ "$version" == "$SCHEMATHESIS_VERSION" ]]; then
        log "using schemathesis $version at $candidate"
        printf '%s\n' "$candidate"
        return 0
      fi
      log "skipping $candidate: schemathesis $version, not $SCHEMATHESIS_VERSION"
    fi
  done
  return 1
}

# Prints the path of a schemathesis $SCHEMATHESIS_VERSION, installing it into $VENV when needed.
ensure_schemathesis() {
  local bin="$VENV/bin/schemathesis" version started
  if find_schemathesis; then return 0; fi
  started=$SECONDS
  pip_install_into_venv "$VENV" "schemathesis==$SCHEMATHESIS_VERSION" KILN_SCHEMATHESIS_VENV
  version="$(st_version "$bin")" || die "schemathesis is missing from $VENV after pip install"
  [[ "$version" == "$SCHEMATHESIS_VERSION" ]] || die "$VENV has schemathesis $version, not $SCHEMATHESIS_VERSION"
  log "installed schemathesis $version in $((SECONDS - started)) s"
  printf '%s\n' "$bin"
}

case "${1:-}" in
  path) ensure_schemathesis ;;
  env)
    bin="$(find_schemathesis)" || die "no schemathesis $SCHEMATHESIS_VERSION is installed (tried ${KILN_SCHEMATHESIS:-<KILN_SCHEMATHESIS unset>}, PATH, $VENV); run: bash scripts/schemathesis.sh path"
    printf 'export KILN_SCHEMATHESIS=%q\n' "$bin"
    ;;
  *)
    printf 'usage: %s path|env\n' "$0" >&2
    exit 2
    ;;
esac
