#!/usr/bin/env bash
# `npm test`: builds, then runs every test. When DOCKER_HOST is not set, it picks up an engine
# that answers (one `npm run demo` or `npm run engine:start` started, or the default socket) so
# the integration tests run instead of skipping; it never starts one itself. Likewise, when
# AWS_ENDPOINT_URL_EC2 is not set, it picks up a moto (EC2 emulator) that answers (one
# `npm run moto:start` started) and exports its endpoints; it never starts one itself. And when
# KILN_PG_URL is not set, it picks up a PostgreSQL that answers (one `npm run postgres:start`
# started) and exports KILN_PG_URL; it never starts one itself. Chromium (for the status page's
# browser test) and schemathesis (the API fuzzing test) are found where their scripts put them.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [[ -z "${DOCKER_HOST:-}" ]] && found="$(bash scripts/docker-engine.sh env 2>/dev/null | tail -n 1)"; then
  eval "$found"
  export DOCKER_HOST
fi
if [[ -z "${AWS_ENDPOINT_URL_EC2:-}" ]] && found="$(bash scripts/moto.sh env 2>/dev/null | tail -n 1)"; then
  eval "$found"
fi
if [[ -z "${KILN_PG_URL:-}" ]] && found="$(bash scripts/postgres.sh env 2>/dev/null | tail -n 1)"; then
  eval "$found"
  export KILN_PG_URL
fi
if [[ -z "${KILN_CHROMIUM:-}" ]] && found="$(bash scripts/chromium.sh env 2>/dev/null | tail -n 1)"; then
  eval "$found"
  export KILN_CHROMIUM
fi
npx turbo run build --output-logs=errors-only
exec npx vitest run "$@"
