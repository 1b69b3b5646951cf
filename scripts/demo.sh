#!/usr/bin/env bash
# The quick start's main job: deploy hello-web v1 with 3 instances, change its version, deploy v2
# (all 3 replaced, health-checked, rolling), deploy again unchanged (nothing happens), and print
# the history. Starts a Docker engine and makes local base images first when the machine has none.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
# Turbo's one-time telemetry notice is not what a quick start should print (nothing is sent here).
export TURBO_TELEMETRY_DISABLED="${TURBO_TELEMETRY_DISABLED:-1}"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "Building Kiln"
npx turbo run build --output-logs=errors-only

step "Docker engine and local base images"
# What the setup scripts and installers (apt-get, dpkg) print goes to a log named here, shown in
# full only when a step fails; a warning among it (the proxy image could not be made) is repeated.
setup_log="${KILN_DEMO_SETUP_LOG:-$root/node_modules/.cache/kiln/demo-setup.log}"
mkdir -p "$(dirname "$setup_log")"
: >"$setup_log"
echo "setup output: $setup_log"
quietly() {
  "$@" 2>>"$setup_log" || {
    cat "$setup_log" >&2
    echo "demo: '$*' failed; its output is above (and in $setup_log)" >&2
    return 1
  }
}
engine_exports="$(quietly bash scripts/docker-engine.sh start)"
eval "$(printf '%s\n' "$engine_exports" | tail -n 1)"
echo "Docker engine: ${DOCKER_HOST:-the default socket}"
quietly bash scripts/base-images.sh >>"$setup_log"
echo "base images: $(docker images --format '{{.Repository}}:{{.Tag}}' | grep '^kiln-local/' | sort | paste -sd ' ' -)"
grep -i 'warning' "$setup_log" >&2 || true

kiln() { node "$root/packages/cli/dist/bin.js" "$@"; }

work="${KILN_DEMO_DIR:-${TMPDIR:-/tmp}/kiln-demo}"
step "Copying examples/hello-web to $work"
rm -rf "$work"
mkdir -p "$work"
cp -R examples/hello-web/. "$work/"
# The copy deploys as its own service, kiln-demo, so that it never touches a hello-web someone else
# deployed on the same engine (Kiln's containers are found by service and environment labels).
sed -i.orig 's/^service: hello-web$/service: kiln-demo/' "$work/kiln.yaml" && rm -f "$work/kiln.yaml.orig"
grep -q '^service: kiln-demo$' "$work/kiln.yaml" || { echo "demo: could not rename the service in $work/kiln.yaml" >&2; exit 1; }
# Containers from an earlier demo run belong to no release of this fresh copy: remove them.
old=$(docker ps -aq --filter label=dev.kiln.service=kiln-demo --filter label=dev.kiln.environment=default)
[ -z "$old" ] || docker rm -f $old >/dev/null

step "kiln validate"
kiln validate -C "$work"

step "kiln plan (v1)"
kiln plan -C "$work"

step "kiln deploy (v1, 3 instances)"
kiln deploy -C "$work"
kiln status -C "$work"

step "Changing the app's version to v2"
echo v2 > "$work/version.txt"
kiln plan -C "$work"

step "kiln deploy (v2 replaces all 3, one at a time, never below 3 healthy)"
kiln deploy -C "$work"

step "What the instances answer now"
kiln status -C "$work" --json | node -e '
  let text = ""; process.stdin.on("data", (d) => (text += d)).on("end", async () => {
    const status = JSON.parse(text);
    for (const instance of status.instances) {
      const e = instance.endpoints.http;
      const body = await fetch(`http://${e.host}:${e.port}/version`).then((r) => r.text());
      console.log(`${instance.name}  http://${e.host}:${e.port}/version -> ${body.trim()}`);
    }
  });'

step "kiln deploy again, nothing changed"
kiln deploy -C "$work"

step "kiln history"
kiln history -C "$work"

cat <<MSG

Done. The 3 hello-web v2 containers (service kiln-demo) keep running. To drive them yourself from this folder:

  export DOCKER_HOST=${DOCKER_HOST:-unix:///var/run/docker.sock}
  npx kiln status -C $work        # their addresses
  npx kiln rollback -C $work      # back to v1, no rebuild
  npm test                        # unit and integration tests (uses that engine)

Remove them: docker rm -f \$(docker ps -aq --filter label=dev.kiln.service=kiln-demo)
MSG
